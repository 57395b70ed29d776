//! The end of the long-running commands (`watch`, `chat`): Ctrl-C or SIGTERM.

/// Resolves when the user interrupts us (SIGINT) or we are asked to stop
/// (SIGTERM). If the handlers cannot be installed, it never resolves and
/// the default actions apply.
pub(crate) async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) =
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}
