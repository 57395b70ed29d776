//! How many samples a run takes. Each measurement is split into rounds that
//! alternate with its baseline's, and the rounds are pooled, so that a
//! noisy moment on the shared machine hits a figure and its baseline alike.

/// The sizes of one run.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Round trips of each kind thrown away before measuring (connections,
    /// caches, allocator and CPU frequency settle).
    pub(crate) warmup: usize,
    /// Rounds of `tcp_rtt`, `link_rtt` and `grpc_bidi_rtt`, in turn.
    pub(crate) latency_rounds: usize,
    /// Round trips of each kind per round.
    pub(crate) latency_round: usize,
    /// Rounds of `link_rtt` and the bare stream over TLS (unpaced and
    /// paced) with the processes pinned, per placement (see `placement`).
    pub(crate) pinned_rounds: usize,
    /// Rounds of one `true`, one `chatctl send` and one `chatctl status`.
    pub(crate) process_rounds: usize,
    /// Rounds of `grpc_bidi_throughput` and `throughput`, in turn.
    pub(crate) throughput_rounds: usize,
    /// Messages through peerd per round.
    pub(crate) throughput_round: usize,
    /// Messages through the bare gRPC stream per round: it is tens of
    /// times faster, so more keep its rounds long enough to time well.
    pub(crate) grpc_round: usize,
    /// `Send` calls in flight at once, and the bare stream's window.
    pub(crate) in_flight: usize,
    /// Connections to alice's control socket the calls are spread over.
    pub(crate) control_connections: usize,
}

impl Plan {
    pub(crate) fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                warmup: 200,
                latency_rounds: 8,
                latency_round: 250,
                pinned_rounds: 2,
                process_rounds: 20,
                throughput_rounds: 4,
                throughput_round: 10_000,
                grpc_round: 100_000,
                in_flight: 512,
                control_connections: 4,
            }
        } else {
            Plan {
                warmup: 1_000,
                latency_rounds: 40,
                latency_round: 500,
                pinned_rounds: 4,
                process_rounds: 200,
                throughput_rounds: 10,
                throughput_round: 100_000,
                grpc_round: 1_000_000,
                in_flight: 512,
                control_connections: 4,
            }
        }
    }
}
