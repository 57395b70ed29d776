//! Identity arithmetic shared by every side: how a public key is shown to
//! people (its fingerprint) and exactly which bytes a registration signs.
//! The keys themselves, and signing, live in the daemons.

use sha2::{Digest, Sha256};

/// Length of an ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;

/// Length of a directory challenge nonce.
pub const NONCE_LEN: usize = 32;

/// Domain separation for registration signatures: a signature made for a
/// registration can never be replayed as anything else.
pub const REGISTER_CONTEXT: &[u8] = b"peerchat/v1 register\0";

/// The bytes an ed25519 registration signature covers: the context, the
/// directory's nonce, the signer's clock, and every field the directory
/// will publish. Lengths are explicit so no two field lists share bytes.
pub fn registration_payload(
    nonce: &[u8],
    timestamp_ms: i64,
    port: u32,
    name: &str,
    advertise: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        REGISTER_CONTEXT.len() + nonce.len() + 24 + name.len() + advertise.len(),
    );
    out.extend_from_slice(REGISTER_CONTEXT);
    out.extend_from_slice(&(nonce.len() as u32).to_be_bytes());
    out.extend_from_slice(nonce);
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&(name.len() as u32).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&(advertise.len() as u32).to_be_bytes());
    out.extend_from_slice(advertise.as_bytes());
    out
}

/// A public key as people compare it, e.g. over the phone:
/// `MFRG-GZDF-MZTW-Q2LK-NNWG-23TP-OBYX-E3TT` — the first 20 bytes of its
/// SHA-256 in base32 (RFC 4648 alphabet, no padding), in groups of four.
pub fn fingerprint(public_key: &[u8]) -> String {
    let digest = Sha256::digest(public_key);
    let b32 = base32(&digest[..20]);
    let groups: Vec<&str> =
        b32.as_bytes().chunks(4).filter_map(|c| std::str::from_utf8(c).ok()).collect();
    groups.join("-")
}

/// RFC 4648 base32 without padding.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc_4648_vectors() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b"fo"), "MZXQ");
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
    }

    #[test]
    fn fingerprints_are_grouped_and_differ_per_key() {
        let a = fingerprint(&[1; 32]);
        let b = fingerprint(&[2; 32]);
        assert_eq!(a.len(), 32 + 7);
        assert_eq!(a.split('-').count(), 8);
        assert_ne!(a, b);
        assert_eq!(a, fingerprint(&[1; 32]));
    }

    #[test]
    fn payload_fields_cannot_be_shifted_into_each_other() {
        let n = [7u8; NONCE_LEN];
        let a = registration_payload(&n, 1, 2, "ab", "c");
        let b = registration_payload(&n, 1, 2, "a", "bc");
        assert_ne!(a, b);
        assert!(a.starts_with(REGISTER_CONTEXT));
    }
}
