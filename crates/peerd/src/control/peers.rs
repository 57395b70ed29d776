//! Presence for control clients: `WatchPeers` (`chatctl list --watch`)
//! and the presence part of `Watch` (`chatctl watch`), both fed by one
//! [`Subscription`] to the roster each.
//!
//! A known peer's new listing is a `PeerStatusEvent` (status, address or
//! key changed); only a peer not known before is a `PeerOnlineEvent`. So a
//! client can tell "bob came online" from "bob is busy now" without keeping
//! a list of its own.

use peerchat::v1 as pb;
use peerchat_core::Name;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::presence::DirectoryState;
use crate::roster::{Change, Lagged, Subscription};

/// Events queued towards one client before its forwarder waits for it.
const QUEUE: usize = 256;

type EventTx = mpsc::Sender<Result<pb::Event, Status>>;
type EventRx = mpsc::Receiver<Result<pb::Event, Status>>;

/// What a client that fell behind the roster is told, as the driver tells
/// one that fell behind its events.
fn fell_behind() -> Status {
    Status::resource_exhausted("watch fell behind; attach again to see what was missed")
}

/// Which peer listed is "you": the one under our name, unless the
/// directory has that name bound to another key (our registration is
/// `taken`): then whoever is listed under it is someone else.
#[derive(Debug, Clone)]
pub(super) struct You {
    name: Name,
    state: watch::Receiver<DirectoryState>,
}

impl You {
    pub(super) fn new(name: Name, state: watch::Receiver<DirectoryState>) -> You {
        You { name, state }
    }

    /// Our name, as `ListPeersResponse.you` gives it; empty while it is
    /// taken.
    pub(super) fn name(&self) -> String {
        if self.taken() { String::new() } else { self.name.to_string() }
    }

    fn is(&self, name: &str) -> bool {
        self.name.matches(name) && !self.taken()
    }

    fn taken(&self) -> bool {
        matches!(*self.state.borrow(), DirectoryState::Taken)
    }
}

/// `WatchPeers`: everyone online in `now` (as PeerOnline events), one
/// PeersSynced, then every change from `sub`, until the client goes away,
/// the roster stops, or shutdown.
pub(super) fn follow(
    now: &[pb::Peer],
    mut sub: Subscription,
    me: You,
    shutdown: CancellationToken,
) -> EventRx {
    let listing: Vec<pb::Event> = now
        .iter()
        .map(|peer| event(online(peer.clone(), &me)))
        .chain(std::iter::once(event(pb::event::Kind::PeersSynced(pb::PeersSyncedEvent {}))))
        .collect();
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        for ev in listing {
            if !send(&tx, Ok(ev), &shutdown).await {
                return;
            }
        }
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return,
                () = tx.closed() => return,
                next = sub.next() => next,
            };
            let item = match next {
                Ok(Some(change)) => match wire(change, &me) {
                    Some(kind) => Ok(event(kind)),
                    None => continue,
                },
                Ok(None) => return,
                Err(Lagged) => Err(fell_behind()),
            };
            let last = item.is_err();
            if !send(&tx, item, &shutdown).await || last {
                return;
            }
        }
    });
    rx
}

/// `Watch` with presence: the driver's `events` with the roster's changes
/// mixed in, as they come.
///
/// The stream ends when the driver ends `events` (on shutdown, after its
/// goodbye events, which this must not cut short), when the client goes
/// away, or when it fell behind either source. Shutdown only stops the
/// presence part at once.
pub(super) fn merge(
    mut events: EventRx,
    mut sub: Subscription,
    me: You,
    shutdown: CancellationToken,
) -> EventRx {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        let mut presence = true;
        loop {
            let item = tokio::select! {
                () = tx.closed() => return,
                ev = events.recv() => match ev {
                    Some(item) => item,
                    None => return,
                },
                () = shutdown.cancelled(), if presence => {
                    presence = false;
                    continue;
                }
                next = sub.next(), if presence => match next {
                    Ok(Some(change)) => match wire(change, &me) {
                        Some(kind) => Ok(event(kind)),
                        None => continue,
                    },
                    Ok(None) => {
                        presence = false;
                        continue;
                    }
                    Err(Lagged) => Err(fell_behind()),
                },
            };
            let last = item.is_err();
            // Not raced against shutdown: the driver's last events are
            // worth waiting for, and the driver ends `events` in bounded
            // time.
            if tx.send(item).await.is_err() || last {
                return;
            }
        }
    });
    rx
}

/// Sends `item` unless the client went away or shutdown came first.
async fn send(tx: &EventTx, item: Result<pb::Event, Status>, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        sent = tx.send(item) => sent.is_ok(),
    }
}

/// A change as control clients see it; the first list (`Synced`) is not a
/// change for them.
pub(super) fn wire(change: Change, me: &You) -> Option<pb::event::Kind> {
    Some(match change {
        Change::Online(peer) => online(peer, me),
        Change::Changed(peer) => {
            let you = me.is(&peer.name);
            pb::event::Kind::PeerStatus(pb::PeerStatusEvent { peer: Some(peer), you })
        }
        Change::Offline(name) => {
            let you = me.is(&name);
            pb::event::Kind::PeerOffline(pb::PeerOfflineEvent { name, you })
        }
        Change::Synced(_) => return None,
    })
}

fn online(peer: pb::Peer, me: &You) -> pb::event::Kind {
    let you = me.is(&peer.name);
    pb::event::Kind::PeerOnline(pb::PeerOnlineEvent { peer: Some(peer), you })
}

fn event(kind: pb::event::Kind) -> pb::Event {
    pb::Event { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> You {
        let registered = DirectoryState::Registered { address: "127.0.0.1:1".into() };
        You::new(Name::parse("Alice").expect("name"), watch::channel(registered).1)
    }

    fn peer(name: &str) -> pb::Peer {
        pb::Peer { name: name.into(), address: "127.0.0.1:1".into(), ..pb::Peer::default() }
    }

    #[test]
    fn changes_become_events_and_mark_you() {
        assert_eq!(
            wire(Change::Online(peer("bob")), &me()),
            Some(pb::event::Kind::PeerOnline(pb::PeerOnlineEvent {
                peer: Some(peer("bob")),
                you: false
            }))
        );
        assert_eq!(
            wire(Change::Changed(peer("alice")), &me()),
            Some(pb::event::Kind::PeerStatus(pb::PeerStatusEvent {
                peer: Some(peer("alice")),
                you: true
            }))
        );
        assert_eq!(
            wire(Change::Offline("ALICE".into()), &me()),
            Some(pb::event::Kind::PeerOffline(pb::PeerOfflineEvent {
                name: "ALICE".into(),
                you: true
            }))
        );
        assert_eq!(wire(Change::Synced(vec![peer("bob")].into()), &me()), None);
    }

    #[test]
    fn while_our_name_is_taken_its_listing_is_not_you() {
        let (state, rx) = watch::channel(DirectoryState::Taken);
        let me = You::new(Name::parse("Alice").expect("name"), rx);
        assert_eq!(me.name(), "");
        assert_eq!(
            wire(Change::Online(peer("alice")), &me),
            Some(pb::event::Kind::PeerOnline(pb::PeerOnlineEvent {
                peer: Some(peer("alice")),
                you: false
            }))
        );
        state.send_replace(DirectoryState::Registered { address: "127.0.0.1:1".into() });
        assert_eq!(me.name(), "Alice");
        assert!(matches!(
            wire(Change::Offline("alice".into()), &me),
            Some(pb::event::Kind::PeerOffline(pb::PeerOfflineEvent { you: true, .. }))
        ));
    }
}
