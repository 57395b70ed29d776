//! `Control.SendStream`: many sends in flight on one stream, answered in
//! the order they were asked.
//!
//! Two tasks per stream and one channel of [`StreamNote`]s between them and
//! the driver, so that a send costs no allocation of its own on the way:
//! - the reader takes every request that is already there (up to
//!   [`BATCH`]), notes them as queued (one note for the batch), and hands
//!   them to the driver as one [`Request::SendBatch`];
//! - the driver notes the batch as accepted (each with its id) or refused,
//!   and later notes each receipt waited for;
//! - the answerer keeps the unanswered sends in order and answers the
//!   oldest as soon as it is settled, the first error ending the stream.
//!
//! At most [`IN_FLIGHT`] sends are unanswered at once: past that the reader
//! stops reading and the client's stream waits (HTTP/2 flow control).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use peerchat::v1 as pb;
use peerchat_core::session::Id;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use super::error::ControlError;
use super::{micros, validate};
use crate::deadline::sleep_until;
use crate::driver::api::{
    DriverTx, Outcome, Request, StreamNote, StreamSend, StreamStop, StreamTx, Wait, wire_state,
};

/// Sends one stream may have unanswered at once.
pub(super) const IN_FLIGHT: usize = 1024;
/// Requests handed to the driver as one input, at most.
const BATCH: usize = 256;

/// Starts the reader and the answerer of one `SendStream`; answers come
/// out of the returned channel.
pub(super) fn start(
    inbound: Streaming<pb::SendRequest>,
    driver: DriverTx,
    shutdown: CancellationToken,
) -> mpsc::Receiver<Result<pb::SendResponse, Status>> {
    // Unbounded, but never long: the window bounds the sends it is about.
    let (notes, notes_rx) = mpsc::unbounded_channel();
    let (out_tx, out_rx) = mpsc::channel(IN_FLIGHT);
    let window = Arc::new(Semaphore::new(IN_FLIGHT));
    tokio::spawn(read(inbound, driver, notes, window.clone(), shutdown));
    tokio::spawn(answer(notes_rx, out_tx, window));
    out_rx
}

/// The reader: hands requests to the driver in batches, without waiting
/// for their answers.
async fn read(
    mut inbound: Streaming<pb::SendRequest>,
    driver: DriverTx,
    notes: StreamTx,
    window: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    let mut seq = 0u64;
    let mut done = false;
    let stop = StreamStop::default();
    // Reused from batch to batch.
    let mut requests = Vec::new();
    while !done {
        // The answerer gone (the client stopped listening, or an answer
        // ended the stream) means nothing more is read.
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = notes.closed() => break,
            r = inbound.message() => r,
        };
        let mut next = Some(first);
        while let Some(r) = next.take() {
            match r {
                Ok(Some(request)) => requests.push(request),
                Ok(None) | Err(_) => {
                    done = true;
                    break;
                }
            }
            if requests.len() < BATCH {
                next = now_or_never(inbound.message());
            }
        }
        if requests.is_empty() {
            break;
        }
        let n = u32::try_from(requests.len()).unwrap_or(u32::MAX);
        let permits = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = notes.closed() => break,
            p = window.acquire_many(n) => p,
        };
        let Ok(permits) = permits else { break };
        // Given back by the answerer as it answers.
        permits.forget();
        // One clock reading for the batch: its waits start together.
        let at = Instant::now();
        let mut sends = Vec::with_capacity(requests.len());
        let mut waits = Vec::with_capacity(requests.len());
        let first = seq + 1;
        let mut refused = None;
        for request in requests.drain(..) {
            seq += 1;
            match validate::send(request) {
                Ok(checked) => {
                    waits.push(checked.wait.map(|w| (w, checked.timeout)));
                    sends.push(StreamSend { seq, text: checked.text, wait: checked.wait });
                }
                Err(error) => {
                    refused = Some(StreamNote::Refused { seq, status: error.into() });
                    done = true;
                    break;
                }
            }
        }
        // In order: the good sends before the one refused.
        if !waits.is_empty() {
            let _ = notes.send(StreamNote::Queued { first, waits, at });
        }
        if let Some(note) = refused {
            let _ = notes.send(note);
        }
        // A driver gone (shutting down) drops the batch, and with it the
        // last senders of `notes`: the answerer then fails what is left.
        if !sends.is_empty()
            && driver
                .send(Request::SendBatch { sends, notes: notes.clone(), stop: stop.clone() })
                .await
                .is_err()
        {
            break;
        }
    }
}

/// One unanswered send.
struct Slot {
    seq: u64,
    wait: Option<(Wait, Duration)>,
    id: Option<Id>,
    /// When waiting for the receipt gives up.
    deadline: Option<Instant>,
    answer: Option<Result<pb::SendResponse, Status>>,
}

/// The answerer: answers in order, as each oldest send is settled.
async fn answer(
    mut notes: mpsc::UnboundedReceiver<StreamNote>,
    out: mpsc::Sender<Result<pb::SendResponse, Status>>,
    window: Arc<Semaphore>,
) {
    let mut slots: VecDeque<Slot> = VecDeque::new();
    loop {
        // Every note already there first, then the answers they settle:
        // at full speed notes come hundreds at a time, and the window is
        // then given back in one go rather than one permit per answer.
        let disconnected = loop {
            match notes.try_recv() {
                Ok(n) => apply(&mut slots, n),
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        let mut answered = 0;
        while let Some(answer) = slots.front_mut().and_then(|s| s.answer.take()) {
            slots.pop_front();
            answered += 1;
            let failed = answer.is_err();
            let sent = match out.try_send(answer) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Closed(_)) => false,
                Err(mpsc::error::TrySendError::Full(answer)) => {
                    // The client is slow to read: let the reader go on
                    // meanwhile with what was answered so far.
                    window.add_permits(std::mem::take(&mut answered));
                    out.send(answer).await.is_ok()
                }
            };
            if !sent || failed {
                return;
            }
        }
        if answered > 0 {
            window.add_permits(answered);
        }
        // Nothing there: wait for a note, or the oldest send's deadline.
        let note = if disconnected {
            None
        } else {
            let deadline = slots.front().and_then(|s| s.deadline);
            tokio::select! {
                note = notes.recv() => note,
                _ = sleep_until(deadline) => {
                    if let Some(head) = slots.front_mut() {
                        head.answer = Some(Err(timed_out(head).into()));
                    }
                    continue;
                }
            }
        };
        let Some(note) = note else {
            // Nobody is left to settle anything: the reader is done and the
            // driver holds none of our sends (or stopped).
            match slots.front_mut() {
                Some(head) => head.answer = Some(Err(ControlError::ShuttingDown.into())),
                None => return,
            }
            continue;
        };
        apply(&mut slots, note);
    }
}

fn apply(slots: &mut VecDeque<Slot>, note: StreamNote) {
    match note {
        StreamNote::Queued { first, waits, at } => {
            for (seq, wait) in (first..).zip(waits) {
                let deadline = wait.map(|(_, timeout)| at + timeout);
                slots.push_back(Slot { seq, wait, id: None, deadline, answer: None });
            }
        }
        StreamNote::Refused { seq, status } => slots.push_back(Slot {
            seq,
            wait: None,
            id: None,
            deadline: None,
            answer: Some(Err(status)),
        }),
        StreamNote::Accepted { results } => {
            for (seq, result) in results {
                let Some(slot) = find(slots, seq) else { continue };
                match (result, slot.wait) {
                    (Err(e), _) => slot.answer = Some(Err(ControlError::from(e).into())),
                    (Ok(id), None) => {
                        slot.answer = Some(Ok(pb::SendResponse {
                            id: String::from(&*id),
                            state: pb::MessageState::Sent as i32,
                            link_rtt_us: 0,
                        }));
                    }
                    (Ok(id), Some(_)) => slot.id = Some(id),
                }
            }
        }
        StreamNote::Settled { seq, outcome } => {
            let Some(slot) = find(slots, seq) else { return };
            slot.answer = Some(settled(slot, outcome));
        }
    }
}

fn settled(slot: &Slot, outcome: Outcome) -> Result<pb::SendResponse, Status> {
    match outcome {
        Ok((state, took)) => Ok(pb::SendResponse {
            id: slot.id.as_deref().unwrap_or_default().to_owned(),
            state: wire_state(state) as i32,
            link_rtt_us: micros(took),
        }),
        Err(e) => Err(ControlError::from(e).into()),
    }
}

/// The slot of send `seq`, if it is still unanswered. Slots are numbered
/// without gaps, oldest first.
fn find(slots: &mut VecDeque<Slot>, seq: u64) -> Option<&mut Slot> {
    let first = slots.front()?.seq;
    let index = usize::try_from(seq.checked_sub(first)?).ok()?;
    slots.get_mut(index).filter(|s| s.answer.is_none())
}

fn timed_out(slot: &Slot) -> ControlError {
    let (what, after) = match slot.wait {
        Some((Wait::Displayed, after)) => ("displayed", after),
        Some((Wait::Delivered, after)) => ("delivered", after),
        None => ("delivered", Duration::ZERO),
    };
    match &slot.id {
        Some(id) => ControlError::TimedOut { id: String::from(&**id), what, after },
        // The wait starts when the reader takes the send: a driver that
        // has not even taken it by then has no id to name.
        None => ControlError::NoAnswer(format!("the message was not taken within {after:?}")),
    }
}

/// Polls `f` once: its output if it is ready now, else `None` (and `f` is
/// dropped, which is fine for a cancel-safe future such as
/// `Streaming::message`).
fn now_or_never<F: Future>(f: F) -> Option<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::api::Undelivered;
    use peerchat_core::session::MessageState;

    fn queued(slots: &mut VecDeque<Slot>, seq: u64, wait: Option<Wait>) {
        let wait = wait.map(|w| (w, Duration::from_secs(1)));
        apply(slots, StreamNote::Queued { first: seq, waits: vec![wait], at: Instant::now() });
    }

    fn answers(slots: &mut VecDeque<Slot>) -> Vec<Result<String, String>> {
        let mut out = Vec::new();
        while let Some(a) = slots.front_mut().and_then(|s| s.answer.take()) {
            slots.pop_front();
            out.push(a.map(|r| r.id).map_err(|e| e.message().to_owned()));
        }
        out
    }

    #[test]
    fn answers_come_in_order_whatever_order_they_settle_in() {
        let mut slots = VecDeque::new();
        for seq in 1..=3 {
            queued(&mut slots, seq, Some(Wait::Delivered));
        }
        for (seq, id) in [(1, "a"), (2, "b"), (3, "c")] {
            apply(&mut slots, StreamNote::Accepted { results: vec![(seq, Ok(id.into()))] });
        }
        let delivered = Ok((MessageState::Delivered, Duration::from_micros(5)));
        apply(&mut slots, StreamNote::Settled { seq: 3, outcome: delivered.clone() });
        apply(&mut slots, StreamNote::Settled { seq: 2, outcome: delivered.clone() });
        assert!(answers(&mut slots).is_empty(), "the first is not settled yet");
        apply(&mut slots, StreamNote::Settled { seq: 1, outcome: delivered });
        assert_eq!(answers(&mut slots), [Ok("a".into()), Ok("b".into()), Ok("c".into())]);
    }

    #[test]
    fn a_send_that_waits_for_nothing_is_answered_when_accepted() {
        let mut slots = VecDeque::new();
        queued(&mut slots, 1, None);
        apply(&mut slots, StreamNote::Accepted { results: vec![(1, Ok("x".into()))] });
        assert_eq!(answers(&mut slots), [Ok("x".into())]);
        // A late note about an answered send is ignored.
        apply(&mut slots, StreamNote::Settled { seq: 1, outcome: Err(Undelivered::ShuttingDown) });
        assert!(slots.is_empty());
    }

    #[test]
    fn a_timeout_names_the_message_once_it_has_an_id() {
        let mut slots = VecDeque::new();
        queued(&mut slots, 1, Some(Wait::Delivered));
        let head = slots.front().expect("queued");
        assert!(matches!(timed_out(head), ControlError::NoAnswer(_)));
        apply(&mut slots, StreamNote::Accepted { results: vec![(1, Ok("a".into()))] });
        let head = slots.front().expect("still waiting");
        assert!(timed_out(head).to_string().contains("message a to be delivered"));
    }

    #[test]
    fn refusals_and_failures_take_their_place_in_line() {
        let mut slots = VecDeque::new();
        queued(&mut slots, 1, Some(Wait::Delivered));
        let refused = ControlError::ShuttingDown.into();
        apply(&mut slots, StreamNote::Refused { seq: 2, status: refused });
        apply(&mut slots, StreamNote::Accepted { results: vec![(1, Ok("a".into()))] });
        let failed = Undelivered::Failed { id: "a".into(), reason: "gone".into() };
        apply(&mut slots, StreamNote::Settled { seq: 1, outcome: Err(failed) });
        let got = answers(&mut slots);
        assert_eq!(got.len(), 2);
        assert!(got[0].as_ref().is_err_and(|e| e.contains("gone")), "{got:?}");
        assert!(got[1].is_err(), "{got:?}");
    }
}
