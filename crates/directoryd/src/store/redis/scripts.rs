//! The Lua scripts, one per operation (see `lua/`). Each touches one
//! bucket's keys, all in one slot, so each operation is atomic. They are
//! sent by hash (EVALSHA) and loaded on NOSCRIPT, which matters after a
//! failover: Redis 7 replicates scripts by their effects, so a promoted
//! replica may not have them cached.

use redis::Script;

/// Every script, loaded once per process.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) register: Script,
    pub(crate) confirm: Script,
    pub(crate) renew: Script,
    pub(crate) unregister: Script,
    pub(crate) lookup: Script,
    pub(crate) list: Script,
    pub(crate) reap: Script,
    pub(crate) forget: Script,
    pub(crate) probe: Script,
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        Scripts {
            register: Script::new(include_str!("lua/register.lua")),
            confirm: Script::new(include_str!("lua/confirm.lua")),
            renew: Script::new(include_str!("lua/renew.lua")),
            unregister: Script::new(include_str!("lua/unregister.lua")),
            lookup: Script::new(include_str!("lua/lookup.lua")),
            list: Script::new(include_str!("lua/list.lua")),
            reap: Script::new(include_str!("lua/reap.lua")),
            forget: Script::new(include_str!("lua/forget.lua")),
            probe: Script::new(include_str!("lua/probe.lua")),
        }
    }
}
