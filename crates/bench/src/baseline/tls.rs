//! The TLS of `grpc_bidi_rtt over TLS`, a diagnostic and not a goal's
//! baseline: the bare tonic stream of [`super::grpc`] inside the TLS
//! peerd's link uses (TLS 1.3, rustls with ring, ALPN h2), so that the
//! report shows how much of `link_rtt` the mandated stack with encryption
//! costs before peerd does anything. The bench makes a self-signed
//! certificate for the run, writes it to its temp dir, and the server and
//! the client read it from there. (peerd also authenticates the dialer;
//! that costs in the handshake, not per message, so it is left out.)

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::Context as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

/// The name in the certificate, and the one the client asks for.
pub(crate) const SERVER_NAME: &str = "localhost";

const CERT: &str = "grpc-tls-cert.der";
const KEY: &str = "grpc-tls-key.der";

/// Makes a certificate and its key for this run, in `dir`.
pub(crate) fn write_identity(dir: &Path) -> anyhow::Result<()> {
    let made = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
        .context("making the TLS baseline's certificate")?;
    std::fs::write(dir.join(CERT), made.cert.der())
        .with_context(|| format!("writing {}", dir.join(CERT).display()))?;
    std::fs::write(dir.join(KEY), made.signing_key.serialize_der())
        .with_context(|| format!("writing {}", dir.join(KEY).display()))?;
    Ok(())
}

fn read(dir: &Path, name: &str) -> anyhow::Result<Vec<u8>> {
    let path = dir.join(name);
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's side, with the certificate in `dir`.
pub(crate) fn server_config(dir: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let cert = CertificateDer::from(read(dir, CERT)?);
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(read(dir, KEY)?));
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .context("the TLS baseline's server configuration")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The client's side, trusting only the certificate in `dir`.
pub(crate) fn client_config(dir: &Path) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(read(dir, CERT)?))
        .context("trusting the TLS baseline's certificate")?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// An accepted TLS connection as tonic's server takes it (tonic implements
/// `Connected` for rustls streams only with its own TLS features, which
/// would change peerd's build).
#[derive(Debug)]
pub(crate) struct TlsConn(pub(crate) TlsStream<TcpStream>);

impl Connected for TlsConn {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
