//! peerchat-core: the sans-IO heart of peerchat. No sockets, no clocks, no
//! files: inputs go in (`handle_*`, with `now` passed in), actions come out
//! (`poll_action`), so every rule here is unit-tested deterministically.
//!
//! # Layout
//! - [`name`]: who may call themselves what (1–32 chars, case-insensitive).
//! - [`text`]: message size limits (1..=65,536 bytes of UTF-8).
//! - [`lease`]: registration lifetimes, renew intervals, backoff.
//! - [`paths`]: default socket and data-dir locations.
//! - [`identity`]: key fingerprints and the bytes a registration signs.
//! - [`ids`]: message ids (a per-run random prefix and a counter).
//! - [`session`]: the conversation state machine (connect, duplex messages,
//!   receipts, goodbye, link loss) with its outbox and inbox.
//! - [`timeouts`]: the timeouts peerd and chatctl must agree on.
//! - [`source`]: who counts as one source in every per-host limit, and a
//!   count of what each source holds.
//! - [`rate`]: token buckets per source, for rate limits.
//! - [`usage`]: a usage error from clap as the one `error:` line every
//!   binary prints.

pub mod config_file;
pub mod identity;
pub mod ids;
pub mod lease;
pub mod name;
pub mod paths;
pub mod rate;
pub mod session;
pub mod source;
pub mod text;
pub mod timeouts;
pub mod usage;

pub use name::{Name, NameError};
pub use text::{MAX_TEXT_BYTES, TextError, check_text};
