//! The peer-to-peer link: one `Chat.Converse` bidirectional stream per
//! conversation. [`listener`] accepts TCP + TLS connections on the peer
//! port; [`callee`] answers dials on them (the `Chat` service) and offers
//! each verified one as an [`callee::Offer`]; [`dial`] dials a peer. Both
//! ends end up with a [`duplex::Link`], which the driver reads itself, with
//! frames checked and converted by [`frames`] on the way in; a refusal
//! travels typed, as a [`refusal::Refusal`].
//!
//! This module knows nothing of the driver: it hands out links and
//! offers, and reports dial failures as [`dial::DialError`]s.
//!
//! Both ends configure HTTP/2 keepalive (ping every second, two seconds to
//! answer), so a peer that vanishes without a goodbye is noticed within
//! five seconds; the explicit Goodbye frame is what tells a clean end from
//! a lost link (tonic reports a server-side keepalive timeout as a plain
//! end of stream).

pub(crate) mod callee;
pub(crate) mod dial;
pub(crate) mod dialer_check;
pub(crate) mod duplex;
pub(crate) mod frames;
pub(crate) mod listener;
pub(crate) mod pending;
pub(crate) mod refusal;
pub(crate) mod refusal_log;

use std::time::Duration;

use peerchat_core::MAX_TEXT_BYTES;
use peerchat_core::session::MAX_UNACKED_BYTES;

/// HTTP/2 keepalive ping interval on both ends of the link.
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a keepalive ping may go unanswered before the link is dead.
pub(crate) const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the Hello/Welcome exchange may take.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a peer-port connection may carry no Chat stream (before its
/// first, or after its last) before it is closed. A dialer opens its
/// stream at once; this only frees the slots of connections held idle.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame accepted from a peer: one maximal message plus its id and
/// framing (not tonic's 4 MiB default).
pub(crate) const MAX_FRAME_BYTES: usize = MAX_TEXT_BYTES + 1024;
/// Frames queued towards one peer. A peer that lets this many pile up is
/// not reading, and the link is dropped rather than buffering without end.
pub(crate) const SEND_QUEUE: usize = 65_536;
/// ...and their bytes: what our unacknowledged messages may hold
/// ([`MAX_UNACKED_BYTES`], the most a conversation queues of its own), and
/// room for the receipts, pings and goodbye of a peer that reads slowly.
pub(crate) const SEND_QUEUE_BYTES: usize = MAX_UNACKED_BYTES + 8 * 1024 * 1024;
/// Inbound dials not yet answered at once; more wait a little for a slot
/// (see `pending`), then are refused.
pub(crate) const MAX_PENDING_DIALS: usize = 16;
/// ...of which one source address may hold this many.
pub(crate) const MAX_PENDING_DIALS_PER_SOURCE: usize = 2;
/// TCP connections on the peer port at once (handshaking or established).
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// ...of which one source address may hold this many, so that one host
/// cannot lock everyone else out.
pub(crate) const MAX_CONNECTIONS_PER_SOURCE: usize = 8;
/// Chat streams one peer-port connection may carry at once. A dial opens
/// one stream on a connection of its own, so two are plenty. A stream waits
/// up to [`HANDSHAKE_TIMEOUT`] for its hello holding no slot, so this times
/// [`MAX_CONNECTIONS`] bounds how many can wait at once (it was 8).
pub(crate) const MAX_STREAMS_PER_CONNECTION: u32 = 2;
/// The chat protocol version, in Hello and Welcome; each end refuses
/// another. 2: refusals carry a typed reason; Welcome carries the version.
/// 3: a callee may answer Asking (consent) before its welcome.
pub(crate) const PROTOCOL_VERSION: u32 = 3;
/// How long shutdown waits for a goodbye to complete before dropping the
/// link: the session's own close timeout plus a little.
pub(crate) const CLOSE_GRACE: Duration =
    peerchat_core::session::CLOSE_TIMEOUT.saturating_add(Duration::from_millis(500));
