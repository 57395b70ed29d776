//! The gRPC boundary: `DirectoryService` validates requests, drives the
//! [`Registry`], and is the one place a `Status` is built.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use peerchat::v1 as pb;
use peerchat_core::Name;
use tonic::{Code, Request, Response, Status};

use crate::registry::{Claim, Listing, Presence, Registry, RegistryError};

/// Owner tokens shorter than this are too easy to guess to guard a name.
const MIN_OWNER_TOKEN: usize = 16;
const MAX_OWNER_TOKEN: usize = 128;
const MAX_ADVERTISE: usize = 256;
/// Page tokens are case-folded names; anything longer is not one of ours.
const MAX_PAGE_TOKEN: usize = 64;
const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;

/// The registry shared by the service and the reaper.
pub(crate) type SharedRegistry = Arc<Mutex<Registry>>;

/// Locks the registry. A panic while holding the lock cannot leave the map
/// half-updated in a way that matters more than refusing all service, so a
/// poisoned lock is used as is.
pub(crate) fn lock(registry: &SharedRegistry) -> MutexGuard<'_, Registry> {
    registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The `peerchat.v1.Directory` service.
#[derive(Debug, Clone)]
pub(crate) struct DirectoryService {
    registry: SharedRegistry,
    ttl: Duration,
}

impl DirectoryService {
    pub(crate) fn new(registry: SharedRegistry, ttl: Duration) -> DirectoryService {
        DirectoryService { registry, ttl }
    }

    fn ttl_seconds(&self) -> u32 {
        u32::try_from(self.ttl.as_secs().max(1)).unwrap_or(u32::MAX)
    }
}

#[tonic::async_trait]
impl pb::directory_server::Directory for DirectoryService {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let observed = request.remote_addr();
        let req = request.into_inner();
        let name = parse_name(&req.name)?;
        let address = listed_address(&req.advertise, req.port, observed)?;
        let presence = parse_presence(req.status)?;
        if !(MIN_OWNER_TOKEN..=MAX_OWNER_TOKEN).contains(&req.owner_token.len()) {
            return Err(Status::invalid_argument(format!(
                "owner token must be {MIN_OWNER_TOKEN} to {MAX_OWNER_TOKEN} bytes, not {}",
                req.owner_token.len()
            )));
        }
        let lease = uuid::Uuid::new_v4().to_string();
        let claim = Claim {
            name: name.clone(),
            address: address.clone(),
            presence,
            owner_token: req.owner_token,
            lease_token: lease.clone(),
        };
        lock(&self.registry).register(claim, Instant::now()).map_err(status)?;
        tracing::info!(name = %name, %address, "registered");
        Ok(Response::new(pb::RegisterResponse { lease, ttl_seconds: self.ttl_seconds(), address }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let req = request.into_inner();
        let name = parse_name(&req.name)?;
        let presence = parse_presence(req.status)?;
        lock(&self.registry)
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
        lock(&self.registry).unregister(&name, &req.lease, Instant::now()).map_err(status)?;
        tracing::info!(name = %name, "unregistered");
        Ok(Response::new(pb::UnregisterResponse {}))
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let req = request.into_inner();
        let limit = match usize::try_from(req.page_size) {
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(n) => n.min(MAX_PAGE_SIZE),
            Err(_) => MAX_PAGE_SIZE,
        };
        let after = parse_page_token(&req.page_token)?;
        let page = lock(&self.registry).list(after.as_deref(), limit, Instant::now());
        Ok(Response::new(pb::ListResponse {
            peers: page.peers.into_iter().map(peer).collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    async fn lookup(
        &self,
        request: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        let req = request.into_inner();
        let name = parse_name(&req.name)?;
        let listing = lock(&self.registry).lookup(&name, Instant::now()).map_err(status)?;
        Ok(Response::new(pb::LookupResponse { peer: Some(peer(listing)) }))
    }
}

fn status(err: RegistryError) -> Status {
    let code = match err {
        RegistryError::Taken { .. } => Code::AlreadyExists,
        RegistryError::UnknownLease { .. } | RegistryError::NotOnline { .. } => Code::NotFound,
        RegistryError::WrongLease { .. } => Code::PermissionDenied,
    };
    Status::new(code, err.to_string())
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
    pb::Peer { name: listing.name, address: listing.address, status: status.into() }
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
            (RegistryError::UnknownLease { name: name.clone() }, Code::NotFound, "register again"),
            (RegistryError::NotOnline { name: name.clone() }, Code::NotFound, "not online"),
            (RegistryError::WrongLease { name }, Code::PermissionDenied, "different lease"),
        ];
        for (err, code, words) in table {
            let s = status(err);
            assert_eq!(s.code(), code);
            assert!(s.message().contains(words), "{:?} lacks {words:?}", s.message());
            assert!(s.message().contains("bob"));
        }
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
