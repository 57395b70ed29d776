//! The gRPC boundary: `DirectoryService` applies the abuse limits,
//! validates requests, checks proofs of possession, drives the bindings and
//! the [`Registry`], and is the one place a `Status` is built.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use peerchat::v1 as pb;
use peerchat_core::Name;
use peerchat_core::identity::NONCE_LEN;
use ring::rand::{SecureRandom as _, SystemRandom};
use tonic::{Code, Request, Response, Status};

use crate::bindings::{BindingStore, Check, MAX_BINDINGS, StoreError};
use crate::challenges::{ChallengeError, Challenges};
use crate::limits::{Limited, RateLimiter, Source};
use crate::proof::{self, ProofError, Signed};
use crate::registry::{Claim, Listing, Presence, Registry, RegistryError};

const MAX_ADVERTISE: usize = 256;
/// Page tokens are case-folded names; anything longer is not one of ours.
const MAX_PAGE_TOKEN: usize = 64;
const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;

/// The in-memory state shared by the service and the reaper. Each part has
/// its own lock so that, say, a List never waits for a Challenge.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) registry: Mutex<Registry>,
    pub(crate) challenges: Mutex<Challenges>,
    /// Challenge and Register: one bucket, since a registration takes both.
    pub(crate) register_limits: Mutex<RateLimiter>,
    /// List and Lookup.
    pub(crate) list_limits: Mutex<RateLimiter>,
}

/// Locks one part of the state. A panic while holding a lock cannot leave a
/// map half-updated in a way that matters more than refusing all service,
/// so a poisoned lock is used as is.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The `peerchat.v1.Directory` service.
#[derive(Debug, Clone)]
pub(crate) struct DirectoryService {
    state: Arc<Shared>,
    /// Behind its own lock, held across a whole claim (binding check,
    /// durable append, registry insert), so that two keys racing for a new
    /// name cannot both win. Only Register takes it.
    bindings: Arc<Mutex<BindingStore>>,
    ttl: Duration,
    rng: SystemRandom,
}

impl DirectoryService {
    pub(crate) fn new(
        state: Arc<Shared>,
        bindings: Arc<Mutex<BindingStore>>,
        ttl: Duration,
    ) -> DirectoryService {
        DirectoryService { state, bindings, ttl, rng: SystemRandom::new() }
    }

    fn ttl_seconds(&self) -> u32 {
        u32::try_from(self.ttl.as_secs().max(1)).unwrap_or(u32::MAX)
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
        charge(&self.state.register_limits, Source::of(request.remote_addr()))?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| Status::internal("cannot draw a random nonce from the OS"))?;
        lock(&self.state.challenges).issue(nonce, Instant::now()).map_err(challenge_status)?;
        Ok(Response::new(pb::ChallengeResponse { nonce: nonce.to_vec() }))
    }

    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let observed = request.remote_addr();
        let source = Source::of(observed);
        charge(&self.state.register_limits, source)?;
        let req = request.into_inner();
        // Spent before anything else is looked at: a nonce gets exactly one
        // attempt, whatever is wrong with the request.
        let nonce_was_outstanding =
            lock(&self.state.challenges).consume(&req.nonce, Instant::now());

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
        let claim = Claim {
            name: name.clone(),
            address: address.clone(),
            presence,
            public_key,
            lease_token: lease.clone(),
            source,
        };
        let (state, bindings) = (self.state.clone(), self.bindings.clone());
        // The claim may append to the bindings file and sync it: blocking.
        let new_binding = tokio::task::spawn_blocking(move || claim_name(&state, &bindings, claim))
            .await
            .map_err(|err| Status::internal(format!("registering {name} failed: {err}")))?
            .map_err(claim_status)?;
        let fingerprint = peerchat_core::identity::fingerprint(&public_key);
        if new_binding {
            tracing::info!(name = %name, key = %fingerprint, "name bound to a key");
        }
        tracing::info!(name = %name, %address, key = %fingerprint, %source, "registered");
        Ok(Response::new(pb::RegisterResponse { lease, ttl_seconds: self.ttl_seconds(), address }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let req = request.into_inner();
        let name = parse_name(&req.name)?;
        let presence = parse_presence(req.status)?;
        lock(&self.state.registry)
            .heartbeat(&name, &req.lease, presence, Instant::now())
            .map_err(status)?;
        tracing::debug!(name = %name, ?presence, "renewed");
        Ok(Response::new(pb::HeartbeatResponse { ttl_seconds: self.ttl_seconds() }))
    }

    async fn unregister(
        &self,
        request: Request<pb::UnregisterRequest>,
    ) -> Result<Response<pb::UnregisterResponse>, Status> {
        let req = request.into_inner();
        let name = parse_name(&req.name)?;
        lock(&self.state.registry).unregister(&name, &req.lease, Instant::now()).map_err(status)?;
        tracing::info!(name = %name, "unregistered");
        Ok(Response::new(pb::UnregisterResponse {}))
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        charge(&self.state.list_limits, Source::of(request.remote_addr()))?;
        let req = request.into_inner();
        let limit = match usize::try_from(req.page_size) {
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(n) => n.min(MAX_PAGE_SIZE),
            Err(_) => MAX_PAGE_SIZE,
        };
        let after = parse_page_token(&req.page_token)?;
        let page = lock(&self.state.registry).list(after.as_deref(), limit, Instant::now());
        Ok(Response::new(pb::ListResponse {
            peers: page.peers.into_iter().map(peer).collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    async fn lookup(
        &self,
        request: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        charge(&self.state.list_limits, Source::of(request.remote_addr()))?;
        let req = request.into_inner();
        let name = parse_name(&req.name)?;
        let listing = lock(&self.state.registry).lookup(&name, Instant::now()).map_err(status)?;
        Ok(Response::new(pb::LookupResponse { peer: Some(peer(listing)) }))
    }
}

/// Why a proven claim was still refused.
#[derive(Debug, thiserror::Error)]
enum ClaimError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the directory holds its maximum of {MAX_BINDINGS} name bindings; no new name can be claimed"
    )]
    Full,
}

/// Grants `claim` if its name is free or bound to its key, making a new
/// binding durable before the registration exists. Returns whether the
/// binding is new. Blocking: may append to and sync the bindings file.
fn claim_name(
    state: &Shared,
    bindings: &Mutex<BindingStore>,
    claim: Claim,
) -> Result<bool, ClaimError> {
    let mut bindings = lock(bindings);
    let name_key = claim.name.key();
    let new_binding = match bindings.check(&name_key, &claim.public_key) {
        // Whether or not its owner is online: nobody takes an offline name.
        Check::Other => {
            return Err(RegistryError::Taken { name: claim.name.as_str().to_owned() }.into());
        }
        Check::Same => false,
        Check::Free => true,
    };
    // Asked first, so that a registration refused for its source leaves no
    // binding behind. Only claims change who is admitted, and they are
    // serialised by the bindings lock, so the answer still holds below.
    lock(&state.registry).admit(&claim, Instant::now())?;
    if new_binding {
        if bindings.len() >= MAX_BINDINGS {
            return Err(ClaimError::Full);
        }
        bindings.bind(&name_key, &claim.public_key)?;
    }
    lock(&state.registry).register(claim, Instant::now())?;
    Ok(new_binding)
}

/// Milliseconds since the Unix epoch by our clock (0 if it is set before 1970).
fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

fn status(err: RegistryError) -> Status {
    let code = match err {
        RegistryError::Taken { .. } => Code::AlreadyExists,
        RegistryError::TooManyFromSource { .. } => Code::ResourceExhausted,
        RegistryError::UnknownLease { .. } | RegistryError::NotOnline { .. } => Code::NotFound,
        RegistryError::WrongLease { .. } => Code::PermissionDenied,
    };
    Status::new(code, err.to_string())
}

fn limited(err: Limited) -> Status {
    Status::resource_exhausted(err.to_string())
}

fn challenge_status(err: ChallengeError) -> Status {
    Status::resource_exhausted(err.to_string())
}

fn proof_status(name: &Name, source: Source, err: ProofError) -> Status {
    tracing::info!(name = %name, %source, %err, "registration refused");
    Status::permission_denied(err.to_string())
}

fn claim_status(err: ClaimError) -> Status {
    match err {
        ClaimError::Registry(err) => status(err),
        ClaimError::Full => Status::resource_exhausted(err.to_string()),
        ClaimError::Store(StoreError::Closed) => {
            Status::unavailable(StoreError::Closed.to_string())
        }
        // The path and OS error are for the operator's log, not the caller.
        ClaimError::Store(err) => {
            tracing::error!(%err, "cannot record a name binding");
            Status::internal("cannot record the name binding durably; try again later")
        }
    }
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

fn peer(listing: Listing) -> pb::Peer {
    let status = match listing.presence {
        Presence::Available => pb::PeerStatus::Available,
        Presence::Busy => pb::PeerStatus::Busy,
    };
    pb::Peer {
        name: listing.name,
        address: listing.address,
        status: status.into(),
        public_key: listing.public_key.to_vec(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn registry_errors_map_to_the_promised_codes_and_words() {
        let name = "bob".to_owned();
        let table = [
            (RegistryError::Taken { name: name.clone() }, Code::AlreadyExists, "taken"),
            (
                RegistryError::TooManyFromSource {
                    from: Source::of(Some("10.0.0.1:9".parse().unwrap())),
                    max: 3,
                },
                Code::ResourceExhausted,
                "too many registrations from 10.0.0.1",
            ),
            (RegistryError::UnknownLease { name: name.clone() }, Code::NotFound, "register again"),
            (RegistryError::NotOnline { name: name.clone() }, Code::NotFound, "not online"),
            (RegistryError::WrongLease { name }, Code::PermissionDenied, "different lease"),
        ];
        for (err, code, words) in table {
            let s = status(err);
            assert_eq!(s.code(), code);
            assert!(s.message().contains(words), "{:?} lacks {words:?}", s.message());
            if code != Code::ResourceExhausted {
                assert!(s.message().contains("bob"), "{}", s.message());
            }
        }
    }

    #[test]
    fn limits_and_proofs_map_to_the_promised_codes_and_words() {
        let source = Source::of(Some("10.0.0.1:9".parse().unwrap()));
        let s = limited(Limited::TooFast { from: source, per_sec: 20 });
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(s.message().contains("rate limit") && s.message().contains("10.0.0.1"));
        let s = limited(Limited::TooManySources);
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(s.message().contains("rate limit"));
        let s = challenge_status(ChallengeError::Full { max: 1 });
        assert_eq!(s.code(), Code::ResourceExhausted);
        let s = proof_status(&Name::parse("bob").unwrap(), source, ProofError::Nonce);
        assert_eq!(s.code(), Code::PermissionDenied);
        assert!(s.message().starts_with("registration proof failed: the nonce"));
        assert_eq!(claim_status(ClaimError::Full).code(), Code::ResourceExhausted);
        assert_eq!(claim_status(StoreError::Closed.into()).code(), Code::Unavailable);
        let io = StoreError::Io {
            path: "/secret/path".into(),
            action: "appending a binding",
            source: std::io::Error::other("disk full"),
        };
        let s = claim_status(io.into());
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("/secret"), "{}", s.message());
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
