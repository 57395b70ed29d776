//! A gRPC client of a peerd's control socket, for tests that call the
//! control API directly (what chatctl does not expose, or too slowly).

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use peerchat::v1::control_client::ControlClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// A client of the control service on the Unix socket at `path`.
pub(crate) async fn control_client(path: PathBuf) -> ControlClient<Channel> {
    let connect = tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
    });
    let channel = Endpoint::from_static("http://control.invalid")
        .connect_with_connector(connect)
        .await
        .expect("connecting to the control socket");
    ControlClient::new(channel).max_decoding_message_size(usize::MAX)
}
