//! The end of the long-running commands (`watch`, `chat`): Ctrl-C or SIGTERM.

/// Resolves when the user interrupts us (SIGINT) or we are asked to stop
/// (SIGTERM). The handlers are installed at once, not when the future is
/// first polled: a `select!` whose other branch is ready first does not
/// poll it, and a signal before then would kill us with its default
/// action, skipping what we say on the way out. If they cannot be
/// installed, it never resolves and the default actions apply. Needs the
/// runtime.
pub(crate) fn interrupted() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()));
    async move {
        let (Ok(mut int), Ok(mut term)) = handlers else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}
