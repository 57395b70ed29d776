//! Timeouts that more than one program must agree on, defined once.

use std::time::Duration;

/// How long peerd's dial of a peer may take, all steps together: the
/// directory lookup, TCP, TLS, Hello and Welcome. chatctl waits
/// [`CONNECT_ANSWER_MARGIN`] longer for `connect`'s answer, so that what it
/// prints is always the daemon's own outcome, never a guess.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a dialer whose dial crossed the peer's own dial, and lost,
/// waits for the peer's: that dial's longest. With the dialer's own dial
/// before it, within [`CONNECT_ANSWER_TIMEOUT`].
pub const CROSSED_WAIT: Duration = DIAL_TIMEOUT;

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

#[cfg(test)]
mod tests {
    use super::*;

    /// chatctl's wait for `connect` covers a dial that crossed the peer's
    /// and then waited for it, as well as one whose callee asked its user.
    #[test]
    fn the_connect_answer_outlasts_every_way_a_dial_may_go() {
        let crossed = DIAL_TIMEOUT + CROSSED_WAIT + CONNECT_ANSWER_MARGIN;
        let asked = DIAL_TIMEOUT + ASK_TIMEOUT + CONNECT_ANSWER_MARGIN;
        assert!(crossed < CONNECT_ANSWER_TIMEOUT);
        assert!(asked < CONNECT_ANSWER_TIMEOUT);
    }
}
