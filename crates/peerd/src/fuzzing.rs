//! Entry points for the fuzz targets (`crates/fuzz`, `scripts/fuzz`): the
//! two places untrusted bytes become requests — frames from a peer and
//! requests on the control socket. Each decodes the bytes as the wire would
//! and runs the same checks the daemon runs; none may panic. Also exercised
//! with random bytes by the unit tests below, so a plain `cargo test`
//! covers them too.

use peerchat::v1 as pb;
use prost::Message as _;

use crate::control::validate;
use crate::link::frames;

/// A frame from a peer: decode, then check into the core's types.
pub fn frame(bytes: &[u8]) {
    if let Ok(frame) = pb::Frame::decode(bytes) {
        let _ = frames::from_wire(frame);
    }
}

/// A control request: the first byte picks the request type, the rest is
/// its encoding.
pub fn control(bytes: &[u8]) {
    let Some((&kind, rest)) = bytes.split_first() else {
        return;
    };
    match kind % 5 {
        0 => {
            if let Ok(req) = pb::SendRequest::decode(rest) {
                let _ = validate::send(req);
            }
        }
        1 => {
            if let Ok(req) = pb::GetHistoryRequest::decode(rest) {
                let _ = validate::history(&req);
            }
        }
        2 => {
            if let Ok(req) = pb::MarkDisplayedRequest::decode(rest) {
                let _ = validate::displayed(req);
            }
        }
        3 => {
            if let Ok(req) = pb::OpenConversationRequest::decode(rest) {
                let _ = validate::peer_name(&req.name);
            }
        }
        _ => {
            if let Ok(req) = pb::TrustRequest::decode(rest) {
                let _ = validate::peer_name(&req.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator: the same bytes every run.
    fn bytes(seed: &mut u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                (*seed >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        for i in 0..20_000 {
            let data = bytes(&mut seed, i % 300);
            frame(&data);
            control(&data);
        }
    }

    #[test]
    fn valid_encodings_reach_the_checks() {
        let f = pb::Frame {
            kind: Some(pb::frame::Kind::Message(pb::ChatMessage {
                id: "x".into(),
                text: "hi".into(),
                sent_at_ms: 1,
                seq: 1,
            })),
        };
        frame(&f.encode_to_vec());
        let mut req = vec![0u8];
        req.extend(pb::SendRequest { text: "hi".into(), wait: 1, timeout_ms: 1 }.encode_to_vec());
        control(&req);
    }
}
