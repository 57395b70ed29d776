//! alice's control API as the bench drives it: gRPC over her Unix socket,
//! the way chatctl connects. `link_rtt` is one `Send` at a time, waiting
//! for the delivered receipt; `throughput` is `SendStream`, pipelined.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use peerchat::v1 as pb;
use tokio::task::JoinSet;

use crate::baseline::MESSAGE;

/// A Control client on one connection (cheap to clone).
pub(crate) type Control = peerchat_chatctl::Control;

/// How long peerd may wait for a receipt before it reports `timed out`.
const RECEIPT_TIMEOUT_MS: u32 = 30_000;

/// Opens one connection to the control socket at `socket`, as chatctl does.
pub(crate) async fn connect(socket: &Path) -> anyhow::Result<Control> {
    peerchat_chatctl::connect(socket)
        .await
        .with_context(|| format!("connecting to peerd at {}", socket.display()))
}

/// `chatctl connect NAME`.
pub(crate) async fn open_conversation(control: &mut Control, name: &str) -> anyhow::Result<()> {
    control
        .open_conversation(pb::OpenConversationRequest { name: name.to_owned() })
        .await
        .with_context(|| format!("opening a conversation with {name}"))?;
    Ok(())
}

/// One 64-byte message, waiting until the peer's daemon stored it. Returns
/// the daemon's own `link_rtt_us`.
async fn send_delivered(control: &mut Control) -> anyhow::Result<u64> {
    let request = pb::SendRequest {
        text: MESSAGE.to_owned(),
        wait: pb::WaitFor::Delivered as i32,
        timeout_ms: RECEIPT_TIMEOUT_MS,
    };
    let response = control.send(request).await.context("Control.Send")?.into_inner();
    if response.state != pb::MessageState::Delivered as i32 {
        bail!("Control.Send answered state {} for {}, not delivered", response.state, response.id);
    }
    Ok(response.link_rtt_us)
}

/// Samples of one lock-step round: the daemon's `link_rtt_us`, and the
/// whole `Send` call as the client saw it (control socket included).
#[derive(Debug, Default)]
pub(crate) struct LinkSamples {
    pub(crate) link_rtt: Vec<f64>,
    pub(crate) send_call: Vec<f64>,
}

/// `n` messages one at a time, each waited for, appended to `out` in
/// microseconds.
pub(crate) async fn link_round(
    control: &mut Control,
    n: usize,
    out: &mut LinkSamples,
) -> anyhow::Result<()> {
    for _ in 0..n {
        let start = Instant::now();
        let link_rtt_us = send_delivered(control).await?;
        out.send_call.push(start.elapsed().as_secs_f64() * 1e6);
        if link_rtt_us == 0 {
            bail!("peerd answered link_rtt_us = 0: it does not time the link (too old a build?)");
        }
        out.link_rtt.push(link_rtt_us as f64);
    }
    Ok(())
}

/// Sends `n` messages over `Control.SendStream`, one stream per control
/// connection in `controls`, every message waiting for its delivered
/// receipt; peerd keeps up to 1,024 in flight per stream (`in_flight` only
/// sizes each stream's send buffer). Returns how long until the last was
/// delivered.
pub(crate) async fn throughput(
    controls: &[Control],
    n: usize,
    in_flight: usize,
) -> anyhow::Result<Duration> {
    if controls.is_empty() {
        bail!("no control connection to send on");
    }
    let mut workers = JoinSet::new();
    let start = Instant::now();
    let per = n.div_ceil(controls.len());
    for (i, control) in controls.iter().enumerate() {
        let mut control = control.clone();
        let count = per.min(n.saturating_sub(i * per));
        workers.spawn(async move {
            let (tx, rx) = tokio::sync::mpsc::channel(in_flight.max(1));
            let feeder = tokio::spawn(async move {
                for _ in 0..count {
                    let request = pb::SendRequest {
                        text: MESSAGE.to_owned(),
                        wait: pb::WaitFor::Delivered as i32,
                        timeout_ms: RECEIPT_TIMEOUT_MS,
                    };
                    if tx.send(request).await.is_err() {
                        break;
                    }
                }
            });
            let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
            let mut answers =
                control.send_stream(stream).await.context("Control.SendStream")?.into_inner();
            let delivered = pb::MessageState::Delivered as i32;
            let mut got = 0;
            while let Some(answer) = answers.message().await.context("Control.SendStream")? {
                if answer.state != delivered {
                    bail!("SendStream answered state {} for {}", answer.state, answer.id);
                }
                got += 1;
            }
            feeder.abort();
            if got != count {
                bail!("SendStream answered {got} of {count} messages");
            }
            anyhow::Ok(())
        });
    }
    // The first error stops the round; dropping the set aborts the rest.
    while let Some(done) = workers.join_next().await {
        done.context("a sender task failed")??;
    }
    Ok(start.elapsed())
}
