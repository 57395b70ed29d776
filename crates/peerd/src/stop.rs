//! `peerd stop`: ask the daemon over its control socket to shut down, then
//! wait until it has removed its socket (the last thing it does).

use std::path::Path;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use peerchat::v1 as pb;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::Error;

/// How long the daemon may take to shut down.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Stops the daemon at `socket`; returns what to print.
pub async fn stop(socket: &Path) -> Result<String, Error> {
    let not_running = || Error::NotRunning {
        path: socket.to_path_buf(),
        usual: socket == crate::config::socket_path(None),
    };
    let channel = connect(socket).await.map_err(|_| not_running())?;
    let mut client = pb::control_client::ControlClient::new(channel);
    let resp = tokio::time::timeout(Duration::from_secs(5), client.stop(pb::StopRequest {}))
        .await
        .map_err(|_| Error::Other("peerd did not answer the stop request in time".into()))?
        .map_err(|s| Error::Other(format!("stop refused: {}", s.message())))?
        .into_inner();
    // A readiness check, not a sleep: the daemon removes its socket file as
    // the very last step of a clean shutdown.
    let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
    while socket.exists() {
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Other(format!(
                "peerd {} (pid {}) did not stop within {}s",
                resp.name,
                resp.pid,
                STOP_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(format!("stopped peerd {} (pid {})", resp.name, resp.pid))
}

/// A gRPC channel over the Unix socket at `path`.
async fn connect(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    // The URI is required by the API but unused: the connector dials the socket.
    Endpoint::from_static("http://peerd.local")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}
