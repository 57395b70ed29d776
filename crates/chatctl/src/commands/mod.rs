//! One module per chatctl command. Each `run` checks its arguments first
//! (so bad input fails fast, even with no daemon), then connects to peerd,
//! makes its requests and prints the outcome.

pub(crate) mod chat;
pub(crate) mod connect;
pub(crate) mod consent;
pub(crate) mod disconnect;
pub(crate) mod history;
pub(crate) mod list;
pub(crate) mod ping;
pub(crate) mod send;
pub(crate) mod status;
pub(crate) mod trust;
pub(crate) mod watch;
