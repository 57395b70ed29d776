//! Writing to stdout: one call per line (or block), flushed at once so that
//! `watch` output reaches a pipe as it happens. A write error (a closed
//! pipe included) becomes an [`Error`] that ends the command; nothing here
//! panics the way `println!` does.

use std::io::Write;

use serde_json::Value;

use crate::error::Error;

/// Prints `text` and a newline, then flushes.
pub(crate) fn line(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").and_then(|()| out.flush()).map_err(Error::Stdout)
}

/// Prints a JSON value as one compact line.
pub(crate) fn json(value: &Value) -> Result<(), Error> {
    line(&value.to_string())
}

/// Prints `json` in `--json` mode, else `text`.
pub(crate) fn either(
    json_mode: bool,
    json: impl FnOnce() -> Value,
    text: impl FnOnce() -> String,
) -> Result<(), Error> {
    if json_mode { self::json(&json()) } else { line(&text()) }
}

/// A note for the user that is not the command's output (stderr).
pub(crate) fn note(text: &str) {
    // If stderr is gone there is nobody to tell.
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Resolves when nobody reads stdout any more (the reading end of a pipe
/// closed, as in `chatctl watch | head -1`), so that a command waiting for
/// events ends now rather than at its next write. Never resolves where that
/// cannot be watched (a regular file, `/dev/null`).
pub(crate) async fn closed() {
    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;
    // Error readiness only: nothing is ever read or written through this.
    // SAFETY: `Stdout` always yields fd 1, which chatctl never closes or
    // replaces while running.
    let registered = unsafe { AsyncFd::register_with_interest(std::io::stdout(), Interest::ERROR) };
    if let Ok(stdout) = registered
        && stdout.ready(Interest::ERROR).await.is_ok()
    {
        return;
    }
    std::future::pending().await
}
