//! `Control.SendStream`, the pipelined bulk send (what `scripts/bench`
//! drives for throughput), over the real binaries: every request answered
//! once, in order, `delivered` only once stored; the receiver's history
//! holds each message once and in order; errors end the stream with the
//! status `Send` would give.
#![allow(clippy::expect_used)]

mod support;

use peerchat::v1 as pb;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use support::control::control_client;
use support::{Directory, Peer};

const TTL: u32 = 15;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime")
}

fn request(text: String, wait: pb::WaitFor) -> pb::SendRequest {
    pb::SendRequest { text, wait: wait as i32, timeout_ms: 30_000 }
}

/// Sends `texts` on one SendStream and collects the answers: the responses
/// before the stream ended, and the status it ended with, if any.
async fn send_all(
    peer: &Peer,
    requests: Vec<pb::SendRequest>,
) -> (Vec<pb::SendResponse>, Option<tonic::Status>) {
    let mut client = control_client(peer.socket()).await;
    let (tx, rx) = mpsc::channel(64);
    let feeder = tokio::spawn(async move {
        for r in requests {
            if tx.send(r).await.is_err() {
                break;
            }
        }
    });
    let mut answers = Vec::new();
    let mut ended = None;
    match client.send_stream(ReceiverStream::new(rx)).await {
        Err(status) => ended = Some(status),
        Ok(response) => {
            let mut inbound = response.into_inner();
            loop {
                match inbound.message().await {
                    Ok(Some(answer)) => answers.push(answer),
                    Ok(None) => break,
                    Err(status) => {
                        ended = Some(status);
                        break;
                    }
                }
            }
        }
    }
    feeder.abort();
    (answers, ended)
}

#[test]
fn send_stream_answers_every_message_in_order_once_stored() {
    const N: usize = 3000;
    let rt = runtime();
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start(&dir, "bob");

    // Not in a conversation: the stream ends with Send's status.
    let first = vec![request("hi".into(), pb::WaitFor::Delivered)];
    let (answers, ended) = rt.block_on(send_all(&alice, first));
    assert!(answers.is_empty(), "{answers:?}");
    let status = ended.expect("a status");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");

    alice.ctl_ok(&["connect", "bob"]);
    let texts: Vec<String> = (0..N).map(|i| format!("bulk {i:05}")).collect();
    let requests = texts.iter().map(|t| request(t.clone(), pb::WaitFor::Delivered)).collect();
    let (answers, ended) = rt.block_on(send_all(&alice, requests));
    assert!(ended.is_none(), "the stream ended with {ended:?}");
    assert_eq!(answers.len(), N);
    let delivered = pb::MessageState::Delivered as i32;
    assert!(answers.iter().all(|a| a.state == delivered), "not all delivered");
    assert!(answers.iter().all(|a| a.link_rtt_us > 0), "a delivered answer without its time");
    let ids: std::collections::HashSet<&str> = answers.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids.len(), N, "ids repeat");

    // Bob has each once, in order, with the ids alice was given.
    let history = bob.ctl_json(&["history", "alice", "--limit", "10000"]);
    let Value::Array(entries) = history else { panic!("history printed {history}") };
    let got: Vec<(&str, &str)> = entries
        .iter()
        .filter(|e| e["direction"] == "in")
        .map(|e| (e["id"].as_str().unwrap_or(""), e["text"].as_str().unwrap_or("")))
        .collect();
    let want: Vec<(&str, &str)> =
        answers.iter().map(|a| a.id.as_str()).zip(texts.iter().map(String::as_str)).collect();
    assert_eq!(got, want, "bob's history differs from what alice was told");

    // A bad request ends the stream after the good ones before it.
    let requests = vec![
        request("before".into(), pb::WaitFor::Delivered),
        request(String::new(), pb::WaitFor::Delivered),
        request("after".into(), pb::WaitFor::Delivered),
    ];
    let (answers, ended) = rt.block_on(send_all(&alice, requests));
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].state, delivered);
    let status = ended.expect("a status for the empty text");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // `none` answers at once with `sent`.
    let requests = vec![request("quick".into(), pb::WaitFor::None)];
    let (answers, ended) = rt.block_on(send_all(&alice, requests));
    assert!(ended.is_none(), "{ended:?}");
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].state, pb::MessageState::Sent as i32);
}
