//! Waiting for an optional deadline, the way `select!` arms need it.

/// Sleeps until `at`; never wakes for `None` (a `select!` arm with no
/// deadline).
pub(crate) async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
