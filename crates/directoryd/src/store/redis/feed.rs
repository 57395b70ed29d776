//! The presence feed over Redis: this replica's subscription to every
//! bucket's shard channel, turned into [`Change`]s for its watchers.
//!
//! The scripts publish each change (`SPUBLISH`) inside the same atomic
//! step that makes it, numbered per bucket; so every replica hears every
//! replica's changes, and a gap in a bucket's numbers means something was
//! missed: the watchers then get [`Change::Resync`] and a fresh snapshot.
//! Pub/sub is at-most-once, and redis-rs was measured not to move sharded
//! subscriptions to a promoted replica after a failover (5 of 5 runs). So
//! every [`PROBE_PERIOD`] this replica publishes a probe on every bucket's
//! channel; one that has not come back within [`PROBE_TIMEOUT`] means the
//! subscription is deaf to that bucket, and the subscriber is rebuilt
//! (a fresh client subscribes correctly), followed by a resync.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{PushInfo, PushKind, Value};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::client::{self, Client};
use super::codec::{self, Event};
use super::keys::Bucket;
use super::scripts::Scripts;
use crate::model::Change;

/// How often each bucket's channel is probed.
pub(crate) const PROBE_PERIOD: Duration = Duration::from_secs(2);
/// How long a probe may take to come back.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Subscribing at most.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the feed task needs.
#[derive(Debug)]
pub(crate) struct Feed {
    pub(crate) seeds: Vec<String>,
    pub(crate) buckets: Arc<Vec<Bucket>>,
    pub(crate) client: Arc<Client>,
    pub(crate) scripts: Arc<Scripts>,
    pub(crate) changes: broadcast::Sender<Change>,
    /// Tells this replica's probes from the others'.
    pub(crate) replica: String,
}

/// A probe sent and not yet heard back.
#[derive(Debug, Clone, Copy)]
struct Outstanding {
    counter: u64,
    sent: Instant,
}

impl Feed {
    /// Subscribes, forwards, probes and resubscribes until `stop`.
    pub(crate) async fn run(self, stop: CancellationToken) {
        let by_channel: HashMap<String, usize> =
            self.buckets.iter().enumerate().map(|(i, b)| (b.channel.clone(), i)).collect();
        let mut counter = 0u64;
        for attempt in 0u64.. {
            if attempt > 0 {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            let (tx, mut rx) = mpsc::unbounded_channel::<PushInfo>();
            let subscriber = match self.subscribe(tx).await {
                Ok(subscriber) => subscriber,
                Err(why) => {
                    tracing::warn!(%why, "cannot subscribe to the presence channels");
                    let _ = self.changes.send(Change::resync());
                    continue;
                }
            };
            tracing::info!(channels = self.buckets.len(), "subscribed to the presence channels");
            // Whatever happened while (re)subscribing is unknown.
            let _ = self.changes.send(Change::resync());
            let mut seqs: Vec<Option<u64>> = vec![None; self.buckets.len()];
            let mut outstanding: Vec<Option<Outstanding>> = vec![None; self.buckets.len()];
            let mut probe = tokio::time::interval(PROBE_PERIOD);
            probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    push = rx.recv() => {
                        let Some(push) = push else { break };
                        self.take(push, &by_channel, &mut seqs, &mut outstanding);
                    }
                    _ = probe.tick() => {
                        if let Some(deaf) = deaf(&outstanding, Instant::now()) {
                            tracing::warn!(
                                channel = %self.buckets[deaf].channel,
                                "a presence channel stopped answering probes; resubscribing"
                            );
                            break;
                        }
                        counter += 1;
                        self.send_probes(counter, &mut outstanding).await;
                    }
                }
            }
            drop(subscriber);
        }
    }

    async fn subscribe(
        &self,
        tx: mpsc::UnboundedSender<PushInfo>,
    ) -> Result<redis::cluster_async::ClusterConnection, String> {
        let client = client::builder(&self.seeds)
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(tx)
            .build()
            .map_err(|err| err.to_string())?;
        let subscribe = async {
            let conn = client.get_async_connection().await?;
            // One channel a call: a sharded subscription names one slot.
            let each = self.buckets.iter().map(|bucket| {
                let mut conn = conn.clone();
                async move { conn.ssubscribe(&bucket.channel).await }
            });
            for subscribed in futures_util::future::join_all(each).await {
                subscribed?;
            }
            Ok::<_, redis::RedisError>(conn)
        };
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscribe).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!("no answer within {SUBSCRIBE_TIMEOUT:?}")),
        }
    }

    /// Handles one push from the subscription.
    fn take(
        &self,
        push: PushInfo,
        by_channel: &HashMap<String, usize>,
        seqs: &mut [Option<u64>],
        outstanding: &mut [Option<Outstanding>],
    ) {
        match push.kind {
            PushKind::SMessage | PushKind::Message => {}
            PushKind::Disconnection => {
                // The client resubscribes by itself; what was said meanwhile is lost.
                let _ = self.changes.send(Change::resync());
                return;
            }
            _ => return,
        }
        let (Some(channel), Some(payload)) = (push.data.first(), push.data.get(1)) else {
            return;
        };
        let (Some(channel), Some(payload)) = (text(channel), text(payload)) else { return };
        let Some(&bucket) = by_channel.get(&channel) else { return };
        let Some(event) = codec::decode_event(&payload) else {
            tracing::warn!(%channel, "an unreadable presence event; resyncing");
            let _ = self.changes.send(Change::resync());
            return;
        };
        let (seq, change) = match event {
            Event::Probe { payload } => {
                if let Some(o) = outstanding[bucket]
                    && payload == probe_payload(&self.replica, o.counter)
                {
                    outstanding[bucket] = None;
                }
                return;
            }
            Event::Up { seq, listing } => (seq, Change::Up(listing)),
            Event::Down { seq, name } => (seq, Change::Down { name }),
        };
        if let Some(last) = seqs[bucket]
            && last.checked_add(1) != Some(seq)
        {
            tracing::info!(bucket, last, seq, "a gap in a bucket's presence events; resyncing");
            let _ = self.changes.send(Change::resync());
        }
        seqs[bucket] = Some(seq);
        let _ = self.changes.send(change);
    }

    async fn send_probes(&self, counter: u64, outstanding: &mut [Option<Outstanding>]) {
        let payload = codec::probe(&probe_payload(&self.replica, counter));
        let sends = self.buckets.iter().map(|bucket| {
            let payload = payload.clone();
            async move {
                self.client
                    .call("probe", |mut conn| async move {
                        let mut call = self.scripts.probe.prepare_invoke();
                        for key in bucket.keys() {
                            call.key(key);
                        }
                        call.arg(&bucket.channel).arg(payload).invoke_async::<i64>(&mut conn).await
                    })
                    .await
            }
        });
        let results = futures_util::future::join_all(sends).await;
        let now = Instant::now();
        for (slot, result) in outstanding.iter_mut().zip(results) {
            // A probe that could not be sent says nothing about the
            // subscription (the store is down: the client's watchdog
            // deals with that); an older unanswered one still counts.
            if result.is_ok() && slot.is_none() {
                *slot = Some(Outstanding { counter, sent: now });
            }
        }
    }
}

fn probe_payload(replica: &str, counter: u64) -> String {
    format!("{replica} {counter}")
}

/// The first bucket whose probe is overdue.
fn deaf(outstanding: &[Option<Outstanding>], now: Instant) -> Option<usize> {
    outstanding.iter().position(|o| o.is_some_and(|o| now.duration_since(o.sent) >= PROBE_TIMEOUT))
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_is_deaf_once_its_probe_is_overdue() {
        let t0 = Instant::now();
        let sent = |counter| Some(Outstanding { counter, sent: t0 });
        let outstanding = [None, sent(1), sent(2)];
        assert_eq!(deaf(&outstanding, t0 + PROBE_TIMEOUT - Duration::from_millis(1)), None);
        assert_eq!(deaf(&outstanding, t0 + PROBE_TIMEOUT), Some(1));
        assert_eq!(deaf(&[None, None], t0 + PROBE_TIMEOUT * 10), None, "answered probes");
        assert_eq!(probe_payload("r1", 7), "r1 7");
    }
}
