//! What the TUI's unit tests share.

/// A clock for tests: `HH:MM` of the time in UTC, whatever the machine's
/// time zone.
pub(super) fn clock(at_ms: i64) -> String {
    let minutes = at_ms / 60_000;
    format!("{:02}:{:02}", (minutes / 60) % 24, minutes % 60)
}
