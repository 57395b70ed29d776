//! Timeouts that more than one program must agree on, defined once.

use std::time::Duration;

/// How long peerd's dial of a peer may take, all steps together: the
/// directory lookup, TCP, TLS, Hello and Welcome. chatctl waits
/// [`CONNECT_ANSWER_MARGIN`] longer for `connect`'s answer, so that what it
/// prints is always the daemon's own outcome, never a guess.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(15);

/// What chatctl adds to [`DIAL_TIMEOUT`] for the control socket's round
/// trip and the daemon's own work.
pub const CONNECT_ANSWER_MARGIN: Duration = Duration::from_secs(5);

/// The longest wait for a receipt that `send` may ask for (chatctl's
/// `--timeout`, the control API's `timeout_ms`); peerd refuses more.
pub const MAX_SEND_WAIT: Duration = Duration::from_secs(3600);
