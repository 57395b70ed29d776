//! A gRPC client of a peerd's control socket, for tests that call the
//! control API directly (what chatctl does not expose, or too slowly):
//! chatctl's own connect.

use std::path::PathBuf;

use peerchat_chatctl::Control;

/// A client of the control service on the Unix socket at `path`.
pub(crate) async fn control_client(path: PathBuf) -> Control {
    peerchat_chatctl::connect(&path).await.expect("connecting to the control socket")
}
