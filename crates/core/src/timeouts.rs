//! Timeouts that more than one program must agree on, defined once.

use std::time::Duration;

/// How long peerd's dial of a peer may take, all steps together: the
/// directory lookup, TCP, TLS, Hello and Welcome. chatctl waits
/// [`CONNECT_ANSWER_MARGIN`] longer for `connect`'s answer, so that what it
/// prints is always the daemon's own outcome, never a guess.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a callee that asks its user (`peerd --accept known|ask`)
/// keeps a request open: unanswered by then, the dialer is told the peer
/// did not accept. The dialer's wait for the answer is this plus
/// [`CONNECT_ANSWER_MARGIN`], after the dial's own steps.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(60);

/// How long chatctl waits for `connect`'s answer: the daemon's longest
/// dial, the longest the callee's user may take to answer, and a margin.
pub const CONNECT_ANSWER_TIMEOUT: Duration = DIAL_TIMEOUT
    .saturating_add(ASK_TIMEOUT)
    .saturating_add(CONNECT_ANSWER_MARGIN)
    .saturating_add(CONNECT_ANSWER_MARGIN);

/// What chatctl adds to [`DIAL_TIMEOUT`] for the control socket's round
/// trip and the daemon's own work.
pub const CONNECT_ANSWER_MARGIN: Duration = Duration::from_secs(5);

/// The longest wait for a receipt that `send` may ask for (chatctl's
/// `--timeout`, the control API's `timeout_ms`); peerd refuses more.
pub const MAX_SEND_WAIT: Duration = Duration::from_secs(3600);
