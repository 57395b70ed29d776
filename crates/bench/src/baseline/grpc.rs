//! `grpc_bidi_rtt` and `grpc_bidi_throughput`: a bare tonic bidi stream
//! between two processes over plaintext HTTP/2, the same `Chat.Converse`
//! shape peerd's link uses, with none of its logic. The server answers each
//! `ChatMessage` frame with a one-id `Receipt` frame and does nothing else:
//! no session, no storage, no TLS.
//!
//! Both ends run a current-thread runtime: on a small machine that is the
//! fastest a tonic stream goes, which is what a baseline should show.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use pb::frame::Kind;
use peerchat::v1 as pb;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

use super::MESSAGE;

/// Frames buffered per direction; also bounds the client's window.
const BUFFER: usize = 1024;

/// The `serve-grpc` child: prints its address, then serves `Chat` until
/// killed.
pub fn serve() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
        let incoming = TcpIncoming::bind(addr)
            .with_context(|| format!("binding {addr}"))?
            .with_nodelay(Some(true));
        println!("{}", incoming.local_addr()?);
        tonic::transport::Server::builder()
            .add_service(pb::chat_server::ChatServer::new(EchoChat))
            .serve_with_incoming(incoming)
            .await
            .context("serving Chat")
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
    pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<Bidi> {
        let mut client = pb::chat_client::ChatClient::connect(format!("http://{addr}"))
            .await
            .with_context(|| format!("connecting to serve-grpc at {addr}"))?;
        let (tx, rx) = mpsc::channel(BUFFER);
        let acks = client.converse(ReceiverStream::new(rx)).await?.into_inner();
        Ok(Bidi { tx, acks, seq: 0 })
    }

    /// `n` lock-step round trips (message out, receipt back), each pushed
    /// onto `out` in microseconds.
    pub(crate) async fn rtt_round(&mut self, n: usize, out: &mut Vec<f64>) -> anyhow::Result<()> {
        for _ in 0..n {
            self.seq += 1;
            let frame = message(self.seq);
            let start = Instant::now();
            self.tx.send(frame).await.context("the gRPC stream closed")?;
            next_receipt(&mut self.acks).await?;
            out.push(start.elapsed().as_secs_f64() * 1e6);
        }
        Ok(())
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
