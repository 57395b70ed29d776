//! Keeping this peer registered in the directory.
//!
//! One task owns the registration: it registers, renews the lease every
//! ttl/3, pushes a status change (busy/available) at once, re-registers
//! with backoff when the directory goes away and comes back, and
//! unregisters on shutdown. Nobody else talks to the directory about us, so
//! there is one place where our presence can be wrong.
//!
//! With several directory replicas, a call that gets no answer moves on to
//! the next replica and is retried at once, once around the list; only when
//! every replica failed in a row does the backoff apply (a replica that is
//! down is not a directory that is down). The lease is kept across a switch:
//! a replica on the same store accepts the same token, so the next
//! heartbeat normally just succeeds; one that does not know the lease
//! answers NOT_FOUND, and we register again there.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use peerchat::v1 as pb;
use peerchat::v1::directory_client::DirectoryClient;
use peerchat_core::identity::registration_payload;
use peerchat_core::lease::{Backoff, renew_interval};
use peerchat_core::session::Presence;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

use crate::directory::{self, DIRECTORY_CALL_TIMEOUT, Directories, Failed, Verdict};
use crate::identity::Identity;

/// How soon a status change the directory kept back (its rate limit on
/// changes) is asked for again: soon enough that others see us busy within
/// a second or two, slow enough to stay far under that limit.
const STATUS_RETRY: Duration = Duration::from_secs(1);

/// How the directory sees us, for `chatctl status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DirectoryState {
    Registering,
    Registered {
        address: String,
    },
    /// `last_address`: the address the directory last confirmed, which it
    /// may well still publish (its lease has not run out, or it is only
    /// out of our reach).
    Unreachable {
        why: String,
        last_address: Option<String>,
    },
    /// The directory answered and said no to what we sent (a rejected
    /// registration, a used-up quota of new names), or showed a key other
    /// than the pinned one: trying again is not likely to help by itself.
    Refused {
        why: String,
    },
    Taken,
}

impl DirectoryState {
    pub(crate) fn word(&self) -> &'static str {
        match self {
            DirectoryState::Registering => "registering",
            DirectoryState::Registered { .. } => "registered",
            DirectoryState::Unreachable { .. } => "unreachable",
            DirectoryState::Refused { .. } => "refused",
            DirectoryState::Taken => "taken",
        }
    }

    /// Why this daemon is not registered, for `status`: the last attempt's
    /// failure, which otherwise only the log would tell.
    pub(crate) fn why(&self) -> &str {
        match self {
            DirectoryState::Registering | DirectoryState::Registered { .. } => "",
            DirectoryState::Unreachable { why, .. } | DirectoryState::Refused { why } => why,
            DirectoryState::Taken => "the name is registered by another live peer",
        }
    }
}

/// The result of the first registration attempt, for readiness.
#[derive(Debug)]
pub(crate) enum FirstAttempt {
    Registered,
    Unreachable(String),
    Taken,
    /// The directory refused what we sent (a bad `--advertise`, say).
    Rejected(String),
}

/// What the presence task needs.
#[derive(Debug)]
pub(crate) struct PresenceTask {
    pub(crate) directories: Directories,
    pub(crate) name: String,
    pub(crate) identity: Arc<Identity>,
    pub(crate) advertise: Option<SocketAddr>,
    pub(crate) port: u16,
    /// What we want the directory to say (from the driver).
    pub(crate) wanted: watch::Receiver<Presence>,
    /// What the directory last accepted, for callers that wait for it.
    pub(crate) published: watch::Sender<Option<Presence>>,
    pub(crate) state: watch::Sender<DirectoryState>,
    pub(crate) first: Option<oneshot::Sender<FirstAttempt>>,
}

struct Lease {
    token: String,
    ttl: Duration,
    address: String,
}

impl PresenceTask {
    /// Runs until `shutdown`, then unregisters.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
        let mut lease: Option<Lease> = None;
        loop {
            let status = *self.wanted.borrow_and_update();
            // A renewal gives way to shutdown: the unregister that follows
            // ends the lease anyway, so stopping does not first wait out a
            // directory that stopped answering. A registration is let
            // finish (on one replica): cut short, the directory could list
            // us under a lease we never learn, until its ttl.
            let outcome = if lease.is_some() {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    outcome = self.once_around(&mut lease, status, &shutdown) => outcome,
                }
            } else {
                self.once_around(&mut lease, status, &shutdown).await
            };
            let wait = match outcome {
                Ok(listed) => {
                    backoff.reset();
                    self.published.send_replace(Some(listed));
                    let renew =
                        lease.as_ref().map_or(Duration::from_secs(1), |l| renew_interval(l.ttl));
                    if listed == status {
                        renew
                    } else {
                        tracing::info!(
                            ?listed,
                            wanted = ?status,
                            "the directory kept our old status (rate limit); trying again soon"
                        );
                        renew.min(STATUS_RETRY)
                    }
                }
                Err(Failure::LeaseGone) => {
                    tracing::info!("the directory forgot our lease; registering again");
                    lease = None;
                    continue;
                }
                Err(Failure::Taken) => {
                    tracing::warn!(name = %self.name, "name taken by another live peer");
                    self.state.send_replace(DirectoryState::Taken);
                    self.report_first(FirstAttempt::Taken);
                    backoff.next_delay()
                }
                Err(Failure::Rejected(why) | Failure::WrongKey(why)) => {
                    tracing::error!(%why, "the directory refused our registration");
                    self.state.send_replace(DirectoryState::Refused { why: why.clone() });
                    self.report_first(FirstAttempt::Rejected(why));
                    backoff.next_delay()
                }
                // A stale nonce is a failure by now (`register` asked again).
                Err(
                    Failure::Unreachable(why) | Failure::Failed(why) | Failure::StaleNonce(why),
                ) => {
                    tracing::warn!(%why, "directory unreachable");
                    let last_address = lease.as_ref().map(|l| l.address.clone());
                    let state = DirectoryState::Unreachable { why: why.clone(), last_address };
                    self.state.send_replace(state);
                    self.report_first(FirstAttempt::Unreachable(why));
                    backoff.next_delay()
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
                changed = self.wanted.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
        }
        if let Some(l) = lease {
            let req = pb::UnregisterRequest { name: self.name.clone(), lease: l.token };
            let asked = self
                .directories
                .call(DIRECTORY_CALL_TIMEOUT, |mut client| {
                    let req = req.clone();
                    async move { client.unregister(req).await }
                })
                .await;
            match asked {
                Ok(_) => tracing::info!("unregistered from the directory"),
                Err(Failed::Answer(e)) => tracing::warn!(error = %e.message(), "unregister failed"),
                Err(Failed::Unreachable(why)) => tracing::warn!(%why, "unregister failed"),
            }
        }
    }

    /// Registers (without a lease) or renews `lease` on the current
    /// replica, moving on to the next one at once while replicas do not
    /// answer, each at most once. The error is the last replica's, except
    /// that when every replica showed a wrong key it is that refusal.
    /// Returns the status the directory lists now.
    async fn once_around(
        &mut self,
        lease: &mut Option<Lease>,
        status: Presence,
        shutdown: &CancellationToken,
    ) -> Result<Presence, Failure> {
        let count = self.directories.len();
        let mut all_wrong_key = true;
        let mut tried = 0;
        loop {
            let (index, client) = self.directories.current();
            let outcome = match lease.as_ref() {
                None => self.register(client, status).await.map(|l| {
                    *lease = Some(l);
                    status
                }),
                Some(l) => self.heartbeat(client, l, status).await,
            };
            let (why, wrong_key) = match outcome {
                Err(Failure::Unreachable(why)) => (why, false),
                Err(Failure::WrongKey(why)) => (why, true),
                other => return other,
            };
            all_wrong_key &= wrong_key;
            tried += 1;
            let next = self.directories.failed(index);
            // Stopping: no next replica (the unregister has its own round).
            if tried >= count || shutdown.is_cancelled() {
                let why = self.directories.labelled(index, why);
                return Err(if all_wrong_key {
                    Failure::WrongKey(why)
                } else {
                    Failure::Unreachable(why)
                });
            }
            let (url, next_url) = (self.directories.url(index), self.directories.url(next));
            if wrong_key {
                tracing::warn!(%why, "directory {url} refused: wrong key; trying {next_url}");
            } else {
                tracing::info!(%why, "directory {url} unreachable; trying {next_url}");
            }
        }
    }

    fn report_first(&mut self, outcome: FirstAttempt) {
        if let Some(tx) = self.first.take() {
            let _ = tx.send(outcome);
        }
    }

    /// Registers through `client`. The challenge and the registration go to
    /// the same replica: a nonce is only sure to be known where it was
    /// handed out. A nonce the directory let go before we used it (it is
    /// flooded) is asked for again at once, [`STALE_NONCE_TRIES`] times in
    /// all; then the replica counts as not answering: the next one is
    /// tried, or this one again with backoff.
    async fn register(
        &mut self,
        client: DirectoryClient<Channel>,
        status: Presence,
    ) -> Result<Lease, Failure> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.register_once(client.clone(), status).await {
                Err(Failure::StaleNonce(why)) if tries < STALE_NONCE_TRIES => {
                    tracing::info!(%why, "the directory let our challenge go; asking again");
                }
                // As if it did not answer: each replica has a challenge
                // table of its own, and the next one may not be flooded.
                Err(Failure::StaleNonce(why)) => {
                    return Err(Failure::Unreachable(format!(
                        "the directory let our challenge go {tries} times in a row (is it \
                         flooded?): {why}"
                    )));
                }
                other => return other,
            }
        }
    }

    async fn register_once(
        &mut self,
        mut client: DirectoryClient<Channel>,
        status: Presence,
    ) -> Result<Lease, Failure> {
        // Proof of possession: sign the directory's fresh nonce together
        // with everything it will publish about us.
        let nonce =
            call(client.challenge(pb::ChallengeRequest {})).await.map_err(no_lease_yet)?.nonce;
        let advertise = self.advertise.map(|a| a.to_string()).unwrap_or_default();
        let port = u32::from(self.port);
        let timestamp_ms = now_ms();
        let payload = registration_payload(&nonce, timestamp_ms, port, &self.name, &advertise);
        let req = pb::RegisterRequest {
            name: self.name.clone(),
            advertise,
            port,
            status: wire_status(status) as i32,
            public_key: self.identity.public_key().to_vec(),
            nonce,
            timestamp_ms,
            signature: self.identity.sign(&payload),
        };
        let resp = call(client.register(req)).await.map_err(no_lease_yet)?;
        tracing::info!(address = %resp.address, ttl = resp.ttl_seconds, "registered in the directory");
        self.state.send_replace(DirectoryState::Registered { address: resp.address.clone() });
        self.report_first(FirstAttempt::Registered);
        Ok(Lease {
            token: resp.lease,
            ttl: Duration::from_secs(u64::from(resp.ttl_seconds.max(1))),
            address: resp.address,
        })
    }

    /// Renews `lease` and asks for `status`; returns the status the
    /// directory lists now, which is the old one when it refused the change
    /// for now (its rate limit).
    async fn heartbeat(
        &mut self,
        mut client: DirectoryClient<Channel>,
        lease: &Lease,
        status: Presence,
    ) -> Result<Presence, Failure> {
        let req = pb::HeartbeatRequest {
            name: self.name.clone(),
            lease: lease.token.clone(),
            status: wire_status(status) as i32,
        };
        let listed = match call(client.heartbeat(req)).await?.status() {
            pb::PeerStatus::Available => Presence::Available,
            pb::PeerStatus::Busy => Presence::Busy,
            // An older directory, which always takes the request's status.
            pb::PeerStatus::Unspecified => status,
        };
        // Back from an outage with the lease intact.
        if !matches!(*self.state.borrow(), DirectoryState::Registered { .. }) {
            tracing::info!("the directory is reachable again");
            self.state.send_replace(DirectoryState::Registered { address: lease.address.clone() });
        }
        Ok(listed)
    }
}

/// Challenges asked for in a row when the directory lets each go before
/// our Register uses it.
const STALE_NONCE_TRIES: u32 = 3;

/// NOT_FOUND means a lease is gone; while registering there is none, so a
/// replica answering it is misbehaving and is retried with backoff like
/// any other failure, not at once (which would spin).
fn no_lease_yet(f: Failure) -> Failure {
    match f {
        Failure::LeaseGone => {
            Failure::Failed("the directory answered NOT_FOUND while registering".into())
        }
        other => other,
    }
}

enum Failure {
    /// The directory no longer knows our lease (NOT_FOUND to a heartbeat):
    /// register again at once.
    LeaseGone,
    Taken,
    Rejected(String),
    /// This replica did not answer: the next one may.
    Unreachable(String),
    /// This replica showed a key other than the pinned one: the next one
    /// may be the real directory; if none is, this is a refusal.
    WrongKey(String),
    /// The directory answered with an error that is not about us
    /// (overloaded, internal): the same is due from any replica, so retry
    /// later with backoff.
    Failed(String),
    /// Our registration's nonce was no longer outstanding when it came (a
    /// flooded directory let it go): nothing is wrong with us; a new
    /// Challenge may do.
    StaleNonce(String),
}

async fn call<T>(
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(DIRECTORY_CALL_TIMEOUT, fut).await {
        Err(_) => Err(Failure::Unreachable("the directory did not answer in time".into())),
        Ok(Ok(resp)) => Ok(resp.into_inner()),
        Ok(Err(status)) => Err(match (Verdict::of(&status), status.code()) {
            (Verdict::WrongKey, _) => Failure::WrongKey(directory::reason(&status)),
            (Verdict::Unreachable, _) => Failure::Unreachable(directory::reason(&status)),
            (Verdict::Answer, Code::NotFound) => Failure::LeaseGone,
            (Verdict::Answer, Code::AlreadyExists) => Failure::Taken,
            (Verdict::Answer, Code::PermissionDenied)
                if directory::refusal_reason(&status)
                    == pb::directory_refusal::Reason::StaleNonce =>
            {
                Failure::StaleNonce(status.message().to_owned())
            }
            (Verdict::Answer, Code::InvalidArgument | Code::PermissionDenied) => {
                Failure::Rejected(status.message().to_owned())
            }
            // Unlike a rate limit, not over in a few seconds: say so.
            (Verdict::Answer, Code::ResourceExhausted)
                if directory::refusal_reason(&status)
                    == pb::directory_refusal::Reason::NewNameQuota =>
            {
                Failure::Rejected(status.message().to_owned())
            }
            (Verdict::Answer, _) => Failure::Failed(directory::reason(&status)),
        }),
    }
}

pub(crate) fn wire_status(p: Presence) -> pb::PeerStatus {
    match p {
        Presence::Available => pb::PeerStatus::Available,
        Presence::Busy => pb::PeerStatus::Busy,
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_while_registering_is_a_failure_to_back_off_from() {
        assert!(matches!(no_lease_yet(Failure::LeaseGone), Failure::Failed(_)));
        assert!(matches!(no_lease_yet(Failure::Taken), Failure::Taken));
        assert!(matches!(
            no_lease_yet(Failure::Unreachable(String::new())),
            Failure::Unreachable(_)
        ));
    }

    /// A stale nonce is told by its typed reason, not its words: the same
    /// code and words without it are a refusal.
    #[tokio::test]
    async fn a_stale_nonce_is_known_by_its_reason() {
        use prost::Message as _;
        let refused = |details: Vec<u8>| async move {
            let status = tonic::Status::with_details(
                Code::PermissionDenied,
                "registration proof failed: the nonce was let go",
                details.into(),
            );
            call(async { Err::<tonic::Response<()>, _>(status) }).await
        };
        let stale =
            pb::DirectoryRefusal { reason: pb::directory_refusal::Reason::StaleNonce.into() };
        assert!(matches!(refused(stale.encode_to_vec()).await, Err(Failure::StaleNonce(_))));
        assert!(matches!(refused(Vec::new()).await, Err(Failure::Rejected(_))));
    }
}
