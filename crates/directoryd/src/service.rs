//! The gRPC boundary: `DirectoryService` applies the abuse limits,
//! validates requests, checks proofs of possession and drives the
//! [`Store`]; the statuses for what it refuses itself are built here, those
//! for the store's answers in `wire`.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use peerchat::v1 as pb;
use peerchat_core::Name;
use peerchat_core::identity::NONCE_LEN;
use peerchat_core::lease::renew_interval;
use peerchat_core::rate::{Limited, RateLimiter};
use peerchat_core::source::Source;
use prost::Message as _;
use ring::rand::{SecureRandom as _, SystemRandom};
use tonic::{Request, Response, Status};

use crate::lock;
use crate::model::{Claim, Presence};
use crate::proof::{self, ProofError, Signed};
use crate::store::{Store, StoreError};
use crate::watch::{self, Watchers};
use crate::wire::{self, peer, store_status};

/// Sources tracked at once per limiter. Beyond it a new source is refused
/// until the reaper has dropped idle buckets: memory stays bounded even
/// under a flood from a huge number of addresses.
pub(crate) const MAX_SOURCES: usize = 65_536;
/// Sites tracked at once for the quota of new names. A bucket there is
/// forgotten once it is full again, a day after the site's names used its
/// whole quota (a day / quota for each name used), so the map holds the
/// sites that bound names lately; beyond it, no new site may bind one
/// until the reaper makes room (a claim of an owned name still works).
pub(crate) const MAX_NAMING_SOURCES: usize = 262_144;

const MAX_ADVERTISE: usize = 256;
/// Page tokens are case-folded names; anything longer is not one of ours.
const MAX_PAGE_TOKEN: usize = 64;
const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;

/// The per-replica abuse limits, shared by the service and the reaper.
/// They stay in each replica's memory even over a shared store: with R
/// replicas the effective rate is R times the flag (a load balancer that
/// hashes on the source address makes it nearly exact again).
#[derive(Debug)]
pub(crate) struct Limits {
    /// Challenge and Register: one bucket, since a registration takes both.
    pub(crate) register: Mutex<RateLimiter>,
    /// List, Lookup and WatchPeers.
    pub(crate) list: Mutex<RateLimiter>,
    /// Names bound for the first time: a daily quota, since a binding
    /// lasts for good and the directory holds a limited number.
    pub(crate) new_names: Mutex<RateLimiter>,
    /// Heartbeat and Unregister: free of proofs, but each is a store call.
    /// Its rate follows from the other limits (see [`lease_rate`]), so it
    /// is never what stops a well-behaved host.
    pub(crate) leases: Mutex<RateLimiter>,
}

/// Heartbeat+Unregister calls a second allowed per source: twice what
/// `max_per_source` leases need when each renews every `renew_interval`
/// (room for status changes, retries and a replica switch), and never less
/// than `list_rate`.
pub(crate) fn lease_rate(ttl: Duration, max_per_source: usize, list_rate: u32) -> u32 {
    let renewals = max_per_source as f64 / renew_interval(ttl).as_secs_f64();
    let needed = (2.0 * renewals).ceil().min(f64::from(u32::MAX)) as u32;
    needed.max(list_rate)
}

/// The `peerchat.v1.Directory` service.
#[derive(Debug, Clone)]
pub(crate) struct DirectoryService {
    store: Arc<dyn Store>,
    limits: Arc<Limits>,
    watchers: Watchers,
    ttl: Duration,
    rng: SystemRandom,
}

impl DirectoryService {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        limits: Arc<Limits>,
        watchers: Watchers,
        ttl: Duration,
    ) -> DirectoryService {
        DirectoryService { store, limits, watchers, ttl, rng: SystemRandom::new() }
    }

    fn ttl_seconds(&self) -> u32 {
        u32::try_from(self.ttl.as_secs().max(1)).unwrap_or(u32::MAX)
    }
}

/// Whether a store call surely did nothing, so that a token taken for it
/// up front may be given back: it answered so (`nothing` of its answer),
/// or refused. Not on other errors: the store may have acted before it
/// failed (a binding not yet confirmed, a reply lost), and a retry will
/// find it done and not charge it again.
fn did_nothing<T>(outcome: &Result<T, StoreError>, nothing: impl FnOnce(&T) -> bool) -> bool {
    match outcome {
        Ok(answer) => nothing(answer),
        Err(err) => matches!(err, StoreError::Refused(_)),
    }
}

/// Charges one request from `source` to `limiter`.
fn charge(limiter: &Mutex<RateLimiter>, source: Source) -> Result<(), Status> {
    lock(limiter).check(source, Instant::now()).map_err(limited)
}

#[tonic::async_trait]
impl pb::directory_server::Directory for DirectoryService {
    async fn challenge(
        &self,
        request: Request<pb::ChallengeRequest>,
    ) -> Result<Response<pb::ChallengeResponse>, Status> {
        let source = Source::of(request.remote_addr());
        charge(&self.limits.register, source)?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| Status::internal("cannot draw a random nonce from the OS"))?;
        self.store.issue_nonce(nonce, source).await.map_err(store_status)?;
        Ok(Response::new(pb::ChallengeResponse { nonce: nonce.to_vec() }))
    }

    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let observed = request.remote_addr();
        let source = Source::of(observed);
        charge(&self.limits.register, source)?;
        let req = request.into_inner();
        // Spent before anything else is looked at: a nonce gets exactly one
        // attempt, whatever is wrong with the request.
        let nonce_was_outstanding =
            self.store.consume_nonce(&req.nonce).await.map_err(store_status)?;

        let name = parse_name(&req.name)?;
        let address = listed_address(&req.advertise, req.port, observed)?;
        let presence = parse_presence(req.status)?;
        let signed = Signed {
            public_key: &req.public_key,
            nonce: &req.nonce,
            timestamp_ms: req.timestamp_ms,
            port: req.port,
            name: &req.name,
            advertise: &req.advertise,
            signature: &req.signature,
        };
        let public_key = proof::verify(&signed, nonce_was_outstanding, unix_millis())
            .map_err(|err| proof_status(&name, source, err))?;

        let lease = uuid::Uuid::new_v4().to_string();
        // A name nobody owns yet is bound for good, so new names are a
        // daily quota per site (an IPv6 /48: a host has 65,536 /64s). As
        // with status changes, the token is taken up front, and given back
        // when the store answered that it bound nothing.
        let site = source.site();
        let may_bind = charge(&self.limits.new_names, site).is_ok();
        let claim = Claim {
            name: name.clone(),
            address: address.clone(),
            presence,
            public_key,
            lease_token: lease.clone(),
            source,
            may_bind,
        };
        let registered = self.store.register(claim).await;
        if may_bind && did_nothing(&registered, |r| !r.new_binding) {
            lock(&self.limits.new_names).refund(site);
        }
        let registered = registered.map_err(store_status)?;
        let fingerprint = peerchat_core::identity::fingerprint(&public_key);
        if registered.new_binding {
            tracing::info!(name = %name, key = %fingerprint, "name bound to a key");
        }
        tracing::info!(name = %name, %address, key = %fingerprint, %source, "registered");
        Ok(Response::new(pb::RegisterResponse { lease, ttl_seconds: self.ttl_seconds(), address }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let source = Source::of(request.remote_addr());
        charge(&self.limits.leases, source)?;
        let req = request.into_inner();
        let name = parse_name(&req.name)?;
        let wanted = parse_presence(req.status)?;
        // A change of presence reaches every watcher, as a registration
        // does, so it costs a token of the same bucket. The token is taken
        // up front (two heartbeats at once cannot both spend the last one)
        // and given back when nothing changed: renewing alone is free.
        // Without a token the lease is still renewed and the presence kept,
        // so a flood of busy/available flips cannot cost anyone the lease.
        let may_change = charge(&self.limits.register, source).is_ok();
        let renewed = self.store.renew(&name, &req.lease, may_change.then_some(wanted)).await;
        if may_change && did_nothing(&renewed, |r| !r.changed) {
            lock(&self.limits.register).refund(source);
        }
        let renewed = renewed.map_err(store_status)?;
        if renewed.presence == wanted {
            tracing::debug!(name = %name, presence = ?wanted, "renewed");
        } else {
            let kept = renewed.presence;
            tracing::debug!(name = %name, ?kept, ?wanted, %source, "renewed; change over the rate limit");
        }
        Ok(Response::new(pb::HeartbeatResponse {
            ttl_seconds: self.ttl_seconds(),
            status: wire::status(renewed.presence).into(),
        }))
    }

    async fn unregister(
        &self,
        request: Request<pb::UnregisterRequest>,
    ) -> Result<Response<pb::UnregisterResponse>, Status> {
        charge(&self.limits.leases, Source::of(request.remote_addr()))?;
        let req = request.into_inner();
        let name = parse_name(&req.name)?;
        self.store.unregister(&name, &req.lease).await.map_err(store_status)?;
        tracing::info!(name = %name, "unregistered");
        Ok(Response::new(pb::UnregisterResponse {}))
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        charge(&self.limits.list, Source::of(request.remote_addr()))?;
        let req = request.into_inner();
        let limit = match usize::try_from(req.page_size) {
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(n) => n.min(MAX_PAGE_SIZE),
            Err(_) => MAX_PAGE_SIZE,
        };
        let after = parse_page_token(&req.page_token)?;
        let page = self.store.list(after.as_deref(), limit).await.map_err(store_status)?;
        Ok(Response::new(pb::ListResponse {
            peers: page.peers.into_iter().map(peer).collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    async fn lookup(
        &self,
        request: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        charge(&self.limits.list, Source::of(request.remote_addr()))?;
        let req = request.into_inner();
        let name = parse_name(&req.name)?;
        let listing = self.store.lookup(&name).await.map_err(store_status)?;
        Ok(Response::new(pb::LookupResponse { peer: Some(peer(listing)) }))
    }

    type WatchPeersStream = watch::PeerEvents;

    async fn watch_peers(
        &self,
        request: Request<pb::WatchPeersRequest>,
    ) -> Result<Response<Self::WatchPeersStream>, Status> {
        let source = Source::of(request.remote_addr());
        charge(&self.limits.list, source)?;
        Ok(Response::new(self.watchers.start(self.store.clone(), source)?))
    }
}

/// Milliseconds since the Unix epoch by our clock (0 if it is set before 1970).
fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

fn limited(err: Limited) -> Status {
    Status::resource_exhausted(err.to_string())
}

fn proof_status(name: &Name, source: Source, err: ProofError) -> Status {
    tracing::info!(name = %name, %source, %err, "registration refused");
    if err == ProofError::Nonce {
        // Typed, so that the client asks again rather than give up.
        let reason = pb::directory_refusal::Reason::StaleNonce;
        let details = pb::DirectoryRefusal { reason: reason.into() };
        return Status::with_details(
            tonic::Code::PermissionDenied,
            err.to_string(),
            details.encode_to_vec().into(),
        );
    }
    Status::permission_denied(err.to_string())
}

fn parse_name(raw: &str) -> Result<Name, Status> {
    // NameError's message already starts with "invalid name".
    Name::parse(raw).map_err(|err| Status::invalid_argument(err.to_string()))
}

fn parse_presence(raw: i32) -> Result<Presence, Status> {
    match pb::PeerStatus::try_from(raw) {
        Ok(pb::PeerStatus::Unspecified | pb::PeerStatus::Available) => Ok(Presence::Available),
        Ok(pb::PeerStatus::Busy) => Ok(Presence::Busy),
        Err(_) => Err(Status::invalid_argument(format!("unknown peer status {raw}"))),
    }
}

/// The address other peers will dial: `advertise` when given, else the
/// port on the IP this request came from (which is what makes peers on
/// other machines of a LAN work without flags).
fn listed_address(
    advertise: &str,
    port: u32,
    observed: Option<SocketAddr>,
) -> Result<String, Status> {
    if !advertise.is_empty() {
        if advertise.len() > MAX_ADVERTISE {
            return Err(Status::invalid_argument(format!(
                "advertise address is longer than {MAX_ADVERTISE} bytes"
            )));
        }
        let addr: SocketAddr = advertise.parse().map_err(|_| {
            Status::invalid_argument(format!("advertise address {advertise:?} is not an IP:port"))
        })?;
        if addr.port() == 0 || addr.ip().is_unspecified() {
            return Err(Status::invalid_argument(format!(
                "advertise address {addr} cannot be dialed: it needs a specific IP and a nonzero port"
            )));
        }
        // One host's address, not a group's: peers that dial a multicast
        // or broadcast address would send their handshakes to everyone
        // on it.
        let group = match addr.ip() {
            std::net::IpAddr::V4(ip) => ip.is_multicast() || ip.is_broadcast(),
            std::net::IpAddr::V6(ip) => ip.is_multicast(),
        };
        if group {
            return Err(Status::invalid_argument(format!(
                "advertise address {addr} is a multicast or broadcast address, not one host's"
            )));
        }
        return Ok(addr.to_string());
    }
    let port = u16::try_from(port).ok().filter(|&p| p != 0).ok_or_else(|| {
        Status::invalid_argument(format!(
            "port must be 1 to 65535 when advertise is empty, not {port}"
        ))
    })?;
    let observed = observed.ok_or_else(|| {
        Status::failed_precondition(
            "cannot see the address this request came from; send an advertise address",
        )
    })?;
    Ok(SocketAddr::new(canonical_ip(observed.ip()), port).to_string())
}

/// A dual-stack listener sees IPv4 clients as `::ffff:a.b.c.d`; list them as
/// plain IPv4 so that IPv4-only peers can dial them.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

fn parse_page_token(raw: &str) -> Result<Option<String>, Status> {
    if raw.is_empty() {
        return Ok(None);
    }
    let malformed = || Status::invalid_argument("invalid page token: pass back a next_page_token");
    if raw.len() > MAX_PAGE_TOKEN {
        return Err(malformed());
    }
    let name = Name::parse(raw).map_err(|_| malformed())?;
    Ok(Some(name.key()))
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::bindings::BindingsError;
    use crate::model::Refusal;

    #[test]
    fn limits_and_proofs_map_to_the_promised_codes_and_words() {
        let source = Source::of(Some("10.0.0.1:9".parse().unwrap()));
        let s = limited(Limited::TooFast { from: source, per_sec: 20 });
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(s.message().contains("rate limit") && s.message().contains("10.0.0.1"));
        let s = limited(Limited::TooManySources);
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(s.message().contains("rate limit"));
        let s = proof_status(&Name::parse("bob").unwrap(), source, ProofError::Nonce);
        assert_eq!(s.code(), Code::PermissionDenied);
        assert!(s.message().starts_with("registration proof failed: the nonce"));
        let details = pb::DirectoryRefusal::decode(s.details()).unwrap();
        assert_eq!(details.reason(), pb::directory_refusal::Reason::StaleNonce);
        let s = proof_status(&Name::parse("bob").unwrap(), source, ProofError::Signature);
        assert!(s.details().is_empty(), "only a stale nonce says to ask again");
        let full = StoreError::Refused(Refusal::Full { max: 1 });
        assert_eq!(store_status(full).code(), Code::ResourceExhausted);
        let quota = store_status(StoreError::Refused(Refusal::NewNames { from: source }));
        assert_eq!(quota.code(), Code::ResourceExhausted);
        assert!(
            quota.message().contains("too many new names from 10.0.0.1"),
            "{}",
            quota.message()
        );
        assert_eq!(store_status(BindingsError::Closed.into()).code(), Code::Unavailable);
        let down = store_status(StoreError::Unavailable { why: "timed out".into() });
        assert_eq!(down.code(), Code::Unavailable);
        assert!(down.message().starts_with("directory store unavailable"), "{}", down.message());
        assert_eq!(store_status(StoreError::NotDurable).code(), Code::Unavailable);
        let io = BindingsError::Io {
            path: "/secret/path".into(),
            action: "appending a binding",
            source: std::io::Error::other("disk full"),
        };
        let s = store_status(io.into());
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("/secret"), "{}", s.message());
    }

    #[test]
    fn tokens_come_back_only_when_the_store_surely_did_nothing() {
        assert!(!did_nothing(&Ok::<bool, StoreError>(true), |&done| !done));
        assert!(did_nothing(&Ok::<bool, StoreError>(false), |&done| !done));
        let taken = StoreError::Refused(Refusal::Taken { name: "bob".into() });
        assert!(did_nothing(&Err::<bool, _>(taken), |_| false));
        // It may have bound the name, or changed the status, before it failed.
        for failed in [StoreError::NotDurable, StoreError::Unavailable { why: "lost".into() }] {
            assert!(!did_nothing(&Err::<bool, _>(failed), |_| true));
        }
    }

    #[test]
    fn the_lease_rate_covers_every_lease_a_source_may_hold_twice() {
        // 256 leases renewed every 5 s: 51.2 a second, twice over.
        assert_eq!(lease_rate(Duration::from_secs(15), 256, 100), 103);
        // Never below the list rate; short leases need more.
        assert_eq!(lease_rate(Duration::from_secs(15), 2, 100), 100);
        assert_eq!(lease_rate(Duration::from_secs(3), 256, 100), 512);
        assert_eq!(lease_rate(Duration::ZERO, usize::MAX, 1), u32::MAX);
    }

    #[test]
    fn invalid_names_say_invalid_name() {
        for bad in ["", "-bob", "bob smith", &"x".repeat(33), "bøb"] {
            let s = parse_name(bad).unwrap_err();
            assert_eq!(s.code(), Code::InvalidArgument);
            assert!(s.message().contains("invalid name"), "{bad:?}: {}", s.message());
        }
    }

    #[test]
    fn listed_address_prefers_advertise_then_observed_ip() {
        let v4: SocketAddr = "192.168.1.7:55555".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:192.168.1.7]:55555".parse().unwrap();
        let v6: SocketAddr = "[fe80::1]:55555".parse().unwrap();
        assert_eq!(listed_address("", 7400, Some(v4)).unwrap(), "192.168.1.7:7400");
        assert_eq!(listed_address("", 7400, Some(mapped)).unwrap(), "192.168.1.7:7400");
        assert_eq!(listed_address("", 7400, Some(v6)).unwrap(), "[fe80::1]:7400");
        assert_eq!(listed_address("10.1.2.3:9", 0, Some(v4)).unwrap(), "10.1.2.3:9");
        assert_eq!(listed_address("[::1]:9", 0, None).unwrap(), "[::1]:9");
    }

    #[test]
    fn listed_address_rejects_what_cannot_be_dialed() {
        let v4: SocketAddr = "192.168.1.7:55555".parse().unwrap();
        let invalid = [
            ("", 0),
            ("", 65_536),
            ("", u32::MAX),
            ("10.1.2.3:0", 0),
            ("0.0.0.0:7400", 0),
            ("[::]:7400", 0),
            ("host.example:7400", 0),
            ("10.1.2.3", 0),
            ("224.0.0.1:5", 0),
            ("255.255.255.255:1", 0),
            ("[ff02::1]:7400", 0),
        ];
        for (advertise, port) in invalid {
            let s = listed_address(advertise, port, Some(v4)).unwrap_err();
            assert_eq!(s.code(), Code::InvalidArgument, "{advertise:?} {port}");
        }
        let long = format!("{}:1", "1".repeat(300));
        assert_eq!(listed_address(&long, 0, Some(v4)).unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(listed_address("", 7400, None).unwrap_err().code(), Code::FailedPrecondition);
    }

    #[test]
    fn status_unspecified_means_available_and_unknown_is_refused() {
        assert_eq!(parse_presence(0).unwrap(), Presence::Available);
        assert_eq!(parse_presence(1).unwrap(), Presence::Available);
        assert_eq!(parse_presence(2).unwrap(), Presence::Busy);
        assert_eq!(parse_presence(7).unwrap_err().code(), Code::InvalidArgument);
    }

    #[test]
    fn page_tokens_are_case_folded_names() {
        assert_eq!(parse_page_token("").unwrap(), None);
        assert_eq!(parse_page_token("Bob").unwrap().as_deref(), Some("bob"));
        for bad in ["../x", &"a".repeat(65), "a b"] {
            assert_eq!(parse_page_token(bad).unwrap_err().code(), Code::InvalidArgument);
        }
    }
}
