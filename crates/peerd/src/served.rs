//! One connection type for both of peerd's gRPC servers: the peer port
//! (TCP + TLS) and the control socket (Unix).
//!
//! tonic's server is generic over its connections, so two servers over two
//! stream types compile hyper's and h2's whole server stack twice. That
//! second copy cost ~0.2 MB of code, and idle peerd's memory is mostly code
//! pages. Boxing the stream costs one indirect call per read or write,
//! which is not measurable beside a TLS record or a syscall.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tokio_stream::Stream;
use tonic::transport::server::Connected;

use crate::tls::PublicKey;

/// What a handler learns about the other end of its connection, from the
/// request's extensions.
#[derive(Debug, Clone)]
pub(crate) enum ConnInfo {
    /// A peer on the peer port.
    Peer {
        remote: Option<SocketAddr>,
        /// The key the dialer proved in the TLS handshake.
        key: Option<PublicKey>,
    },
    /// A local process on the control socket.
    Local {
        /// Its uid (SO_PEERCRED), when the kernel told.
        uid: Option<u32>,
    },
}

/// A byte stream either server can serve.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// An accepted connection, ready for a server: the stream, who is on the
/// other end (read once, at accept), and whatever must live as long as the
/// connection (the peer port's connection slots).
pub(crate) struct Served {
    io: Box<dyn Io>,
    info: ConnInfo,
    _held: Box<dyn Send>,
}

/// What both servers take connections from.
pub(crate) type Incoming = Pin<Box<dyn Stream<Item = io::Result<Served>> + Send>>;

impl Served {
    /// `io`, holding `held` until the connection is dropped.
    pub(crate) fn new(io: impl Io, info: ConnInfo, held: impl Send + 'static) -> Served {
        Served { io: Box::new(io), info, _held: Box::new(held) }
    }

    /// A control-socket connection, with its client's uid.
    pub(crate) fn local(stream: UnixStream) -> Served {
        let uid = stream.peer_cred().ok().map(|cred| cred.uid());
        Served::new(stream, ConnInfo::Local { uid }, ())
    }
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served").field("info", &self.info).finish_non_exhaustive()
    }
}

impl Connected for Served {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Served {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Served {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_local_connection_carries_its_uid_and_its_bytes() {
        let (a, b) = UnixStream::pair().expect("socket pair");
        let mut served = Served::local(a);
        let ConnInfo::Local { uid } = served.connect_info() else {
            panic!("a Unix connection is local");
        };
        assert_eq!(uid, Some(crate::config::uid()));
        let mut b = b;
        b.write_all(b"ping").await.expect("write");
        let mut got = [0u8; 4];
        served.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"ping");
        served.write_all(b"pong").await.expect("write back");
        b.read_exact(&mut got).await.expect("read back");
        assert_eq!(&got, b"pong");
    }
}
