//! Converting frames between the wire (`pb::Frame`) and the core's types.
//! Everything from a peer is untrusted: a frame that breaks the rules is a
//! protocol violation that ends the link, never a panic.

use peerchat::v1 as pb;
use peerchat_core::check_text;
use peerchat_core::session::{Frame, Id, MAX_ID_LEN, MAX_RECEIPT_IDS_TAKEN, Message, ReceiptKind};

use super::PROTOCOL_VERSION;

/// Why a frame from a peer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("protocol violation: {0}")]
pub(crate) struct Violation(pub(crate) String);

fn violation(s: impl Into<String>) -> Violation {
    Violation(s.into())
}

fn check_id(id: &str) -> Result<(), Violation> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(violation(format!(
            "message id of {} bytes (1 to {MAX_ID_LEN} allowed)",
            id.len()
        )));
    }
    Ok(())
}

/// A frame from the peer, after the handshake.
pub(crate) fn from_wire(frame: pb::Frame) -> Result<Frame, Violation> {
    use pb::frame::Kind;
    match frame.kind {
        Some(Kind::Message(m)) => {
            check_id(&m.id)?;
            check_text(&m.text).map_err(|e| violation(e.to_string()))?;
            if m.seq == 0 {
                return Err(violation("message without a sequence number"));
            }
            Ok(Frame::Message(Message {
                id: m.id.into(),
                text: m.text.into(),
                sent_at_ms: m.sent_at_ms,
                seq: m.seq,
            }))
        }
        Some(Kind::Receipt(r)) => {
            if r.ids.is_empty() || r.ids.len() > MAX_RECEIPT_IDS_TAKEN {
                return Err(violation(format!("receipt with {} ids", r.ids.len())));
            }
            for id in &r.ids {
                check_id(id)?;
            }
            let kind = match pb::ReceiptState::try_from(r.state) {
                Ok(pb::ReceiptState::Delivered) => ReceiptKind::Delivered,
                Ok(pb::ReceiptState::Displayed) => ReceiptKind::Displayed,
                _ => return Err(violation(format!("unknown receipt state {}", r.state))),
            };
            Ok(Frame::Receipt { ids: r.ids.into_iter().map(Id::from).collect(), kind })
        }
        Some(Kind::Goodbye(g)) => {
            let mut reason = g.reason;
            truncate(&mut reason, 256);
            Ok(Frame::Goodbye { reason })
        }
        Some(Kind::Ping(p)) => Ok(Frame::Ping(p.nonce)),
        Some(Kind::Pong(p)) => Ok(Frame::Pong(p.nonce)),
        Some(Kind::Hello(_)) | Some(Kind::Welcome(_)) | Some(Kind::Asking(_)) => {
            Err(violation("handshake frame after the handshake"))
        }
        None => Err(violation("empty frame")),
    }
}

/// A frame of ours for the wire.
pub(crate) fn to_wire(frame: Frame) -> pb::Frame {
    use pb::frame::Kind;
    let kind = match frame {
        Frame::Message(m) => Kind::Message(pb::ChatMessage {
            // `String::from`, not `to_string`: that goes through `Display`
            // and the formatter, which showed in profiles.
            id: String::from(&*m.id),
            text: String::from(&*m.text),
            sent_at_ms: m.sent_at_ms,
            seq: m.seq,
        }),
        Frame::Receipt { ids, kind } => Kind::Receipt(pb::Receipt {
            ids: ids.iter().map(|id| String::from(&**id)).collect(),
            state: match kind {
                ReceiptKind::Delivered => pb::ReceiptState::Delivered,
                ReceiptKind::Displayed => pb::ReceiptState::Displayed,
            } as i32,
        }),
        // The callee's answer to Hello, which the session now sends itself
        // as the first frame of an accepted link. It carries our version
        // (not the default 0): the dialer refuses a Welcome of any other.
        Frame::Welcome { name } => {
            Kind::Welcome(pb::Welcome { name: name.to_string(), version: PROTOCOL_VERSION })
        }
        Frame::Goodbye { reason } => Kind::Goodbye(pb::Goodbye { reason }),
        Frame::Ping(nonce) => Kind::Ping(pb::Ping { nonce }),
        Frame::Pong(nonce) => Kind::Pong(pb::Pong { nonce }),
    };
    pb::Frame { kind: Some(kind) }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub(crate) fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::frame::Kind;

    /// The fullest receipt the session sends, of the longest ids a peer
    /// may use, is within the frame limit both ends set in tonic: bigger,
    /// tonic would refuse to send it and the link would die.
    #[test]
    fn the_fullest_receipt_fits_in_a_frame() {
        use peerchat_core::session::MAX_RECEIPT_IDS;
        use prost::Message as _;
        let ids: Vec<Id> = (0..MAX_RECEIPT_IDS).map(|i| format!("{i:064}").into()).collect();
        assert!(ids.iter().all(|id| id.len() == MAX_ID_LEN));
        let fullest = to_wire(Frame::Receipt { ids, kind: ReceiptKind::Displayed });
        let len = fullest.encoded_len();
        assert!(len <= super::super::MAX_FRAME_BYTES, "{len} bytes");
    }

    /// A peer of an earlier version split receipts at 4,096 ids: its frames
    /// are taken (the byte limit bounds them anyway), one more id is not.
    #[test]
    fn receipts_as_big_as_earlier_versions_sent_are_taken() {
        let receipt = |n: usize| pb::Frame {
            kind: Some(Kind::Receipt(pb::Receipt {
                ids: (0..n).map(|i| format!("{i:032x}")).collect(),
                state: pb::ReceiptState::Delivered as i32,
            })),
        };
        assert!(from_wire(receipt(MAX_RECEIPT_IDS_TAKEN)).is_ok());
        assert!(from_wire(receipt(MAX_RECEIPT_IDS_TAKEN + 1)).is_err());
    }

    fn msg(id: &str, text: &str, seq: u64) -> pb::Frame {
        pb::Frame {
            kind: Some(Kind::Message(pb::ChatMessage {
                id: id.into(),
                text: text.into(),
                sent_at_ms: 0,
                seq,
            })),
        }
    }

    #[test]
    fn round_trips_every_frame() {
        let frames = [
            Frame::Message(Message { id: "a".into(), text: "hi".into(), sent_at_ms: 5, seq: 1 }),
            Frame::Receipt { ids: vec!["a".into(), "b".into()], kind: ReceiptKind::Displayed },
            Frame::Goodbye { reason: "bye".into() },
            Frame::Ping(7),
            Frame::Pong(8),
        ];
        for f in frames {
            assert_eq!(from_wire(to_wire(f.clone())), Ok(f));
        }
    }

    #[test]
    fn refuses_frames_that_break_the_rules() {
        let bad = [
            pb::Frame { kind: None },
            msg("", "x", 1),
            msg(&"i".repeat(65), "x", 1),
            msg("a", "", 1),
            msg("a", &"x".repeat(65_537), 1),
            msg("a", "x", 0),
            pb::Frame { kind: Some(Kind::Receipt(pb::Receipt { ids: vec![], state: 1 })) },
            pb::Frame {
                kind: Some(Kind::Receipt(pb::Receipt { ids: vec!["a".into()], state: 9 })),
            },
            pb::Frame { kind: Some(Kind::Hello(pb::Hello::default())) },
            pb::Frame { kind: Some(Kind::Welcome(pb::Welcome::default())) },
        ];
        for f in bad {
            let err = from_wire(f.clone()).expect_err("must be refused");
            assert!(err.to_string().starts_with("protocol violation"), "{f:?}: {err}");
        }
    }

    #[test]
    fn a_welcome_goes_out_but_is_never_taken_in() {
        let name = peerchat_core::Name::parse("Bob").expect("valid");
        let wire = to_wire(Frame::Welcome { name });
        assert_eq!(
            wire.kind,
            Some(Kind::Welcome(pb::Welcome { name: "Bob".into(), version: PROTOCOL_VERSION })),
            "the callee's name, as registered, and our version"
        );
        // Only the dialer's handshake reads it; after that it is refused.
        let err = from_wire(wire).expect_err("must be refused");
        assert!(err.to_string().contains("handshake frame"), "{err}");
    }

    #[test]
    fn truncates_on_a_char_boundary() {
        let mut s = "ééé".to_string();
        truncate(&mut s, 3);
        assert_eq!(s, "é");
    }
}
