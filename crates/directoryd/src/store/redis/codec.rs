//! How listings and changes are written in Redis and on the shard
//! channels. Pure; no I/O. Everything is text (keys as hex), so that an
//! operator can read the cluster with `redis-cli`.
//!
//! - info: `KEYHEX(64)` `SOURCE` `\n` `NAME` `\n` `ADDRESS`. Names and
//!   addresses are validated before they get here and hold no newline.
//! - live: presence byte (`a` available, `b` busy) then the lease hash.
//! - event: `u` (up) or `d` (down), the bucket's sequence number, `\n`,
//!   the presence byte, the info.
//! - probe: `p` then the probing replica's id and a counter.

use crate::bindings::hex;
pub(crate) use crate::bindings::unhex;
use crate::model::{Listing, Presence, PublicKey};

/// A listing's fields as stored in a bucket's info hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Info {
    pub(crate) public_key: PublicKey,
    pub(crate) source: String,
    pub(crate) name: String,
    pub(crate) address: String,
}

pub(crate) fn encode_info(info: &Info) -> String {
    format!("{}{}\n{}\n{}", hex(&info.public_key), info.source, info.name, info.address)
}

pub(crate) fn decode_info(raw: &str) -> Option<Info> {
    let key_hex = raw.get(..64)?;
    let mut rest = raw.get(64..)?.splitn(3, '\n');
    let (source, name, address) = (rest.next()?, rest.next()?, rest.next()?);
    Some(Info {
        public_key: unhex(key_hex)?,
        source: source.to_owned(),
        name: name.to_owned(),
        address: address.to_owned(),
    })
}

pub(crate) fn presence_byte(presence: Presence) -> &'static str {
    match presence {
        Presence::Available => "a",
        Presence::Busy => "b",
    }
}

/// The presence a `live` value's first byte stands for.
pub(crate) fn presence_of(byte: &str) -> Option<Presence> {
    match byte {
        "a" => Some(Presence::Available),
        "b" => Some(Presence::Busy),
        _ => None,
    }
}

/// A listing from a bucket's `live` and `info` values.
pub(crate) fn listing(live: &str, info: &str) -> Option<Listing> {
    let info = decode_info(info)?;
    Some(Listing {
        name: info.name,
        address: info.address,
        presence: presence_of(live.get(..1)?)?,
        public_key: info.public_key,
    })
}

/// One message from a bucket's shard channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    Up { seq: u64, listing: Listing },
    Down { seq: u64, name: String },
    Probe { payload: String },
}

pub(crate) fn decode_event(raw: &str) -> Option<Event> {
    let kind = raw.get(..1)?;
    if kind == "p" {
        return Some(Event::Probe { payload: raw.get(1..)?.to_owned() });
    }
    let (seq, rest) = raw.get(1..)?.split_once('\n')?;
    let seq = seq.parse().ok()?;
    let (live, info) = (rest.get(..1)?, rest.get(1..)?);
    match kind {
        "u" => Some(Event::Up { seq, listing: listing(live, info)? }),
        "d" => Some(Event::Down { seq, name: decode_info(info)?.name }),
        _ => None,
    }
}

pub(crate) fn probe(payload: &str) -> String {
    format!("p{payload}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> Info {
        Info {
            public_key: [0xab; 32],
            source: "10.0.0.1".into(),
            name: "Bob".into(),
            address: "[::1]:7400".into(),
        }
    }

    #[test]
    fn info_round_trips() {
        let raw = encode_info(&info());
        assert!(raw.starts_with(&"ab".repeat(32)));
        assert_eq!(decode_info(&raw).unwrap(), info());
        let listed = listing("b0123", &raw).unwrap();
        assert_eq!(listed.presence, Presence::Busy);
        assert_eq!((listed.name.as_str(), listed.address.as_str()), ("Bob", "[::1]:7400"));
    }

    #[test]
    fn events_decode_and_garbage_does_not() {
        let raw = encode_info(&info());
        let up = decode_event(&format!("u42\na{raw}")).unwrap();
        let Event::Up { seq, listing } = up else { panic!("{up:?}") };
        assert_eq!((seq, listing.presence), (42, Presence::Available));
        assert_eq!(
            decode_event(&format!("d7\na{raw}")).unwrap(),
            Event::Down { seq: 7, name: "Bob".into() }
        );
        assert_eq!(decode_event("px1 3").unwrap(), Event::Probe { payload: "x1 3".into() });
        for bad in ["", "u", "u1", "ux\na", "u1\nz", "q1\na", "d1\na", "u1\na1234"] {
            assert_eq!(decode_event(bad), None, "{bad:?}");
        }
        assert_eq!(decode_info("short"), None);
        assert_eq!(unhex(&"zz".repeat(32)), None);
    }
}
