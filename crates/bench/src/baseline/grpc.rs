//! `grpc_bidi_rtt` and `grpc_bidi_throughput`: a bare tonic bidi stream
//! between two processes over plaintext HTTP/2, the same `Chat.Converse`
//! shape peerd's link uses, with none of its logic. The server answers each
//! `ChatMessage` frame with a one-id `Receipt` frame and does nothing else:
//! no session, no storage, no TLS. Served with `--tls DIR`, the same
//! stream goes through TLS instead (see [`super::tls`]): the
//! `grpc_bidi_rtt over TLS` of the report's notes.
//!
//! Both ends run a current-thread runtime: on a small machine that is the
//! fastest a tonic stream goes, which is what a baseline should show.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hyper_util::rt::TokioIo;
use pb::frame::Kind;
use peerchat::v1 as pb;
use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server, Uri};
use tonic::{Request, Response, Status, Streaming};

use super::MESSAGE;
use super::tls::{self, TlsConn};

/// Frames buffered per direction; also bounds the client's window.
const BUFFER: usize = 1024;

/// The longest pause [`Bidi::paced_round`] keeps before a message.
const MAX_GAP: Duration = Duration::from_millis(5);

/// The `serve-grpc` child: prints its address, then serves `Chat` until
/// killed; over TLS with the certificate in `tls`, if given.
pub fn serve(tls: Option<&Path>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let service = pb::chat_server::ChatServer::new(EchoChat);
    let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
    runtime.block_on(async {
        let Some(dir) = tls else {
            let incoming = TcpIncoming::bind(addr)
                .with_context(|| format!("binding {addr}"))?
                .with_nodelay(Some(true));
            println!("{}", incoming.local_addr()?);
            return Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
                .context("serving Chat");
        };
        let acceptor = TlsAcceptor::from(tls::server_config(dir)?);
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        println!("{}", listener.local_addr()?);
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        let _ = tx.send(Ok::<_, std::io::Error>(TlsConn(stream))).await;
                    }
                });
            }
        });
        Server::builder()
            .add_service(service)
            .serve_with_incoming(ReceiverStream::new(rx))
            .await
            .context("serving Chat over TLS")
    })
}

/// `Chat` answering every message with its receipt.
#[derive(Debug)]
struct EchoChat;

#[tonic::async_trait]
impl pb::chat_server::Chat for EchoChat {
    type ConverseStream = ReceiverStream<Result<pb::Frame, Status>>;

    async fn converse(
        &self,
        request: Request<Streaming<pb::Frame>>,
    ) -> Result<Response<Self::ConverseStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(BUFFER);
        // The process is killed, not shut down, so the task ends with the
        // stream: when the client closes it or stops reading.
        tokio::spawn(async move {
            while let Ok(Some(frame)) = inbound.message().await {
                let Some(Kind::Message(message)) = frame.kind else { continue };
                if tx.send(Ok(receipt(message.id))).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn receipt(id: String) -> pb::Frame {
    pb::Frame {
        kind: Some(Kind::Receipt(pb::Receipt {
            ids: vec![id],
            state: pb::ReceiptState::Delivered as i32,
        })),
    }
}

fn message(seq: u64) -> pb::Frame {
    pb::Frame {
        kind: Some(Kind::Message(pb::ChatMessage {
            id: seq.to_string(),
            text: MESSAGE.to_owned(),
            sent_at_ms: 0,
            seq,
        })),
    }
}

/// The client end: one open `Converse` stream.
#[derive(Debug)]
pub(crate) struct Bidi {
    tx: mpsc::Sender<pb::Frame>,
    acks: Streaming<pb::Frame>,
    seq: u64,
}

impl Bidi {
    /// Opens the stream; through TLS with `tls`.
    pub(crate) async fn connect(
        addr: SocketAddr,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> anyhow::Result<Bidi> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))?;
        let channel = match tls {
            None => endpoint.connect().await,
            Some(config) => {
                let tls = TlsConnector::from(config);
                // The URI is unused: the connector dials `addr`.
                endpoint
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let tls = tls.clone();
                        async move {
                            let tcp = TcpStream::connect(addr).await?;
                            tcp.set_nodelay(true)?;
                            let name = ServerName::try_from(tls::SERVER_NAME)
                                .map_err(std::io::Error::other)?;
                            let stream = tls.connect(name, tcp).await?;
                            Ok::<_, std::io::Error>(TokioIo::new(stream))
                        }
                    }))
                    .await
            }
        }
        .with_context(|| format!("connecting to serve-grpc at {addr}"))?;
        let mut client = pb::chat_client::ChatClient::new(channel);
        let (tx, rx) = mpsc::channel(BUFFER);
        let acks = client.converse(ReceiverStream::new(rx)).await?.into_inner();
        Ok(Bidi { tx, acks, seq: 0 })
    }

    /// `n` lock-step round trips (message out, receipt back), each pushed
    /// onto `out` in microseconds.
    pub(crate) async fn rtt_round(&mut self, n: usize, out: &mut Vec<f64>) -> anyhow::Result<()> {
        for _ in 0..n {
            out.push(self.round_trip().await?);
        }
        Ok(())
    }

    /// Like [`Bidi::rtt_round`], but in the rhythm `link_rtt` has: before
    /// each message the client waits `gap` while the server sits idle, as
    /// bob does while alice and the bench go through a whole
    /// `Control.Send` call between two round trips of the link. On a
    /// machine whose idle CPUs are slow to wake, that idle time alone
    /// makes a round trip longer; this shows how much, with none of
    /// peerd's work. The client blocks its thread (tokio's timers count
    /// whole milliseconds; nothing else of the bench runs meanwhile) rather
    /// than spins: a spinning client holds one of the two CPUs, so the
    /// server could never share the client's, which the link's daemons do.
    pub(crate) async fn paced_round(
        &mut self,
        n: usize,
        gap: Duration,
        out: &mut Vec<f64>,
    ) -> anyhow::Result<()> {
        let gap = gap.min(MAX_GAP);
        for _ in 0..n {
            std::thread::sleep(gap);
            out.push(self.round_trip().await?);
        }
        Ok(())
    }

    /// One message out and its receipt back, in microseconds.
    async fn round_trip(&mut self) -> anyhow::Result<f64> {
        self.seq += 1;
        let frame = message(self.seq);
        let start = Instant::now();
        self.tx.send(frame).await.context("the gRPC stream closed")?;
        next_receipt(&mut self.acks).await?;
        Ok(start.elapsed().as_secs_f64() * 1e6)
    }

    /// Sends `n` messages keeping up to `window` unacknowledged, and returns
    /// how long until the last receipt arrived.
    pub(crate) async fn throughput(&mut self, n: usize, window: usize) -> anyhow::Result<Duration> {
        let Bidi { tx, acks, seq } = self;
        let window = Semaphore::new(window.clamp(1, BUFFER));
        let start = Instant::now();
        let send = async {
            for _ in 0..n {
                window.acquire().await?.forget();
                *seq += 1;
                tx.send(message(*seq)).await.context("the gRPC stream closed")?;
            }
            anyhow::Ok(())
        };
        let receive = async {
            for _ in 0..n {
                next_receipt(acks).await?;
                window.add_permits(1);
            }
            anyhow::Ok(())
        };
        tokio::try_join!(send, receive)?;
        Ok(start.elapsed())
    }
}

async fn next_receipt(acks: &mut Streaming<pb::Frame>) -> anyhow::Result<()> {
    match acks.message().await.context("reading a receipt")? {
        Some(pb::Frame { kind: Some(Kind::Receipt(_)) }) => Ok(()),
        Some(other) => bail!("serve-grpc answered {other:?}, not a receipt"),
        None => bail!("serve-grpc closed the stream"),
    }
}
