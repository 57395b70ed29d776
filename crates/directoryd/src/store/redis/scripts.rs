//! The Lua scripts, one per operation (see `lua/`). Each is given all of
//! one bucket's keys (`lua/prelude.lua` names them), all in one slot, so
//! each operation is atomic. They are
//! sent by hash (EVALSHA) and loaded on NOSCRIPT, which matters after a
//! failover: Redis 7 replicates scripts by their effects, so a promoted
//! replica may not have them cached.

use redis::Script;

/// A script's text: the prelude (the bucket's keys by name, the clock),
/// then its own body.
macro_rules! with_prelude {
    ($name:literal) => {
        concat!(include_str!("lua/prelude.lua"), include_str!(concat!("lua/", $name, ".lua")))
    };
}

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
    /// On a source's set, not a bucket: no prelude.
    pub(crate) uncount_stale: Script,
    /// On one nonce's key: no prelude.
    pub(crate) drop_waiting_nonce: Script,
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        Scripts {
            register: Script::new(with_prelude!("register")),
            confirm: Script::new(with_prelude!("confirm")),
            renew: Script::new(with_prelude!("renew")),
            unregister: Script::new(with_prelude!("unregister")),
            lookup: Script::new(with_prelude!("lookup")),
            list: Script::new(with_prelude!("list")),
            reap: Script::new(with_prelude!("reap")),
            forget: Script::new(with_prelude!("forget")),
            probe: Script::new(with_prelude!("probe")),
            uncount_stale: Script::new(include_str!("lua/uncount_stale.lua")),
            drop_waiting_nonce: Script::new(include_str!("lua/drop_waiting_nonce.lua")),
        }
    }
}
