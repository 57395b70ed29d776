//! The connection to the directory, and looking names up in it.
//!
//! `http://` URLs are plain gRPC (the default, as SPEC has it). `https://`
//! URLs are TLS 1.3 with the directory's key pinned: the fingerprint given
//! with `--directory-key`, else the key recorded in
//! `<data-dir>/known_directories` the first time (trust on first use). A
//! directory that shows another key is not talked to at all, so it cannot
//! hand out wrong peer keys.

use std::time::Duration;

use hyper_util::rt::TokioIo;
use peerchat::v1 as pb;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::Code;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::config::Config;
use crate::error::Error;
use crate::presence::DIRECTORY_CALL_TIMEOUT;
use crate::tls::{self, DirectoryPin};

/// How long connecting to the directory may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A lazily connected channel to the directory of `config`; it reconnects
/// by itself when the directory comes back.
pub(crate) fn channel(config: &Config) -> Result<Channel, Error> {
    let bad =
        |e: &dyn std::fmt::Display| Error::Usage(format!("--directory {}: {e}", config.directory));
    let uri: Uri = config.directory.parse().map_err(|e| bad(&e))?;
    let Some(rest) = config.directory.strip_prefix("https://") else {
        return Ok(Endpoint::from(uri)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(DIRECTORY_CALL_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy());
    };
    let host = uri.host().ok_or_else(|| bad(&"no host"))?.trim_matches(['[', ']']).to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let authority = format!("{}:{port}", uri.host().unwrap_or_default());
    let pin = DirectoryPin {
        authority: authority.clone(),
        given: config.directory_key.clone(),
        known_file: config.data_dir.join("known_directories"),
    };
    let tls = TlsConnector::from(tls::directory_client_config(pin)?);
    let server_name = ServerName::try_from(host.clone()).map_err(|e| bad(&e))?;
    // The scheme only matters to tonic's own TLS, which we do not use: the
    // connector below does the handshake.
    let endpoint = Endpoint::from_shared(format!("http://{}", rest.trim_end_matches('/')))
        .map_err(|e| bad(&e))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(DIRECTORY_CALL_TIMEOUT);
    let connector = tower::service_fn(move |_: Uri| {
        let (tls, host, name) = (tls.clone(), host.clone(), server_name.clone());
        async move {
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let stream = tls.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}

/// What the directory says about one name.
#[derive(Debug)]
pub(crate) enum Listing {
    Online(pb::Peer),
    NotOnline,
    /// No answer, or an error: the reason.
    Unknown(String),
}

/// Looks `name` up in the directory, within the call timeout.
pub(crate) async fn lookup(
    directory: &pb::directory_client::DirectoryClient<Channel>,
    name: &str,
) -> Listing {
    let mut directory = directory.clone();
    let request = pb::LookupRequest { name: name.to_owned() };
    match tokio::time::timeout(DIRECTORY_CALL_TIMEOUT, directory.lookup(request)).await {
        Err(_) => Listing::Unknown("the directory did not answer in time".into()),
        Ok(Err(s)) if s.code() == Code::NotFound => Listing::NotOnline,
        Ok(Err(s)) => Listing::Unknown(s.message().to_owned()),
        Ok(Ok(resp)) => match resp.into_inner().peer {
            Some(peer) => Listing::Online(peer),
            None => Listing::NotOnline,
        },
    }
}
