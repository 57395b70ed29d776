//! Proof of possession for a registration: the caller signs, with the key
//! it claims the name for, a directory-issued nonce, its clock and every
//! field the directory will publish (see
//! [`peerchat_core::identity::registration_payload`]).
//!
//! Pure: whether the nonce was outstanding and the directory's clock are
//! passed in. Every failure says which check failed, behind the common
//! prefix `registration proof failed:`.

use peerchat_core::identity::{PUBLIC_KEY_LEN, registration_payload};
use ring::signature::{ED25519, UnparsedPublicKey};

/// How far the signer's clock may be from ours. The nonce already prevents
/// replay; the timestamp bounds how long a signed registration withheld by
/// someone in the middle stays usable should the nonce store be lost.
pub(crate) const MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// Length of an ed25519 signature.
pub(crate) const SIGNATURE_LEN: usize = 64;

/// An ed25519 public key, as bound to names.
pub(crate) type PublicKey = [u8; PUBLIC_KEY_LEN];

/// The signed parts of a RegisterRequest, as received.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Signed<'a> {
    pub(crate) public_key: &'a [u8],
    pub(crate) nonce: &'a [u8],
    pub(crate) timestamp_ms: i64,
    pub(crate) port: u32,
    /// Exactly as sent: the signature covers these bytes, not a normalised form.
    pub(crate) name: &'a str,
    pub(crate) advertise: &'a str,
    pub(crate) signature: &'a [u8],
}

/// Which check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProofError {
    #[error("registration proof failed: the public key must be {PUBLIC_KEY_LEN} bytes, not {len}")]
    KeyLength { len: usize },
    #[error(
        "registration proof failed: the nonce was not issued by this directory, has expired (60 s), was let go (too many outstanding) or was already used; call Challenge again"
    )]
    Nonce,
    #[error(
        "registration proof failed: the timestamp is {skew_secs} s off the directory's clock (at most 300 s allowed); check the clock"
    )]
    Timestamp { skew_secs: i64 },
    #[error("registration proof failed: the signature must be {SIGNATURE_LEN} bytes, not {len}")]
    SignatureLength { len: usize },
    #[error("registration proof failed: the signature does not verify with the public key")]
    Signature,
    #[error(
        "registration proof failed: the public key is a point of small order, which any signature verifies with"
    )]
    WeakKey,
}

/// The encodings of the points of small order (orders 1, 2, 4 and 8, and
/// the non-canonical encodings of 0 and 1), the sign bit cleared: the
/// list libsodium refuses. With such a key `R = identity, S = 0` verifies
/// (for the identity, for every message), so it proves no private key.
/// Checked against the eight torsion points computed from the curve.
const SMALL_ORDER: [[u8; 32]; 7] = {
    let mut table = [[0u8; 32]; 7];
    table[1][0] = 0x01;
    table[2] = [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ];
    table[3] = [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ];
    // p - 1, p, p + 1 (little-endian, p = 2^255 - 19).
    let mut i = 4;
    while i < 7 {
        let mut k = 0;
        while k < 31 {
            table[i][k] = 0xff;
            k += 1;
        }
        table[i][31] = 0x7f;
        table[i][0] = 0xec + (i as u8 - 4);
        i += 1;
    }
    table
};

/// Whether `key` encodes a point of small order (see [`SMALL_ORDER`]).
fn small_order(key: &PublicKey) -> bool {
    let mut masked = *key;
    masked[31] &= 0x7f;
    SMALL_ORDER.contains(&masked)
}

/// Checks the proof; on success returns the key the name is claimed for.
/// `nonce_was_outstanding` is the answer of the challenge store, which has
/// already consumed the nonce whatever happens here.
pub(crate) fn verify(
    signed: &Signed<'_>,
    nonce_was_outstanding: bool,
    now_ms: i64,
) -> Result<PublicKey, ProofError> {
    let key = PublicKey::try_from(signed.public_key)
        .map_err(|_| ProofError::KeyLength { len: signed.public_key.len() })?;
    if small_order(&key) {
        return Err(ProofError::WeakKey);
    }
    if !nonce_was_outstanding {
        return Err(ProofError::Nonce);
    }
    let skew = signed.timestamp_ms.saturating_sub(now_ms);
    if skew.saturating_abs() > MAX_CLOCK_SKEW_MS {
        return Err(ProofError::Timestamp { skew_secs: skew / 1000 });
    }
    if signed.signature.len() != SIGNATURE_LEN {
        return Err(ProofError::SignatureLength { len: signed.signature.len() });
    }
    let payload = registration_payload(
        signed.nonce,
        signed.timestamp_ms,
        signed.port,
        signed.name,
        signed.advertise,
    );
    UnparsedPublicKey::new(&ED25519, &key)
        .verify(&payload, signed.signature)
        .map_err(|_| ProofError::Signature)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use peerchat_core::identity::NONCE_LEN;
    use ring::rand::SystemRandom;
    use ring::signature::{Ed25519KeyPair, KeyPair as _};

    use super::*;

    const NOW_MS: i64 = 1_750_000_000_000;

    fn key_pair() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    struct Owned {
        public_key: Vec<u8>,
        nonce: Vec<u8>,
        timestamp_ms: i64,
        signature: Vec<u8>,
    }

    impl Owned {
        fn signed(&self) -> Signed<'_> {
            Signed {
                public_key: &self.public_key,
                nonce: &self.nonce,
                timestamp_ms: self.timestamp_ms,
                port: 7400,
                name: "Bob",
                advertise: "",
                signature: &self.signature,
            }
        }
    }

    fn sign(pair: &Ed25519KeyPair, timestamp_ms: i64) -> Owned {
        let nonce = vec![9; NONCE_LEN];
        let payload = registration_payload(&nonce, timestamp_ms, 7400, "Bob", "");
        Owned {
            public_key: pair.public_key().as_ref().to_vec(),
            nonce,
            timestamp_ms,
            signature: pair.sign(&payload).as_ref().to_vec(),
        }
    }

    /// A key of small order proves nothing: with the identity point and
    /// the signature (R = identity, S = 0) anyone could register a name
    /// and later take it from whoever registered it so (a probe did).
    #[test]
    fn a_key_of_small_order_is_refused_before_its_signature_is_checked() {
        let mut forged = vec![0u8; SIGNATURE_LEN];
        forged[0] = 0x01;
        for entry in SMALL_ORDER {
            for sign_bit in [0, 0x80] {
                let mut key = entry;
                key[31] |= sign_bit;
                let owned = Owned {
                    public_key: key.to_vec(),
                    nonce: vec![9; NONCE_LEN],
                    timestamp_ms: NOW_MS,
                    signature: forged.clone(),
                };
                assert_eq!(verify(&owned.signed(), true, NOW_MS), Err(ProofError::WeakKey));
            }
        }
        // The table's last three: p - 1, p and p + 1.
        assert_eq!(SMALL_ORDER[6][0], 0xee);
        assert_eq!(SMALL_ORDER[4][30..], [0xff, 0x7f]);
        let pair = key_pair();
        let key = PublicKey::try_from(pair.public_key().as_ref()).unwrap();
        assert!(!small_order(&key));
    }

    #[test]
    fn a_good_proof_yields_the_key() {
        let pair = key_pair();
        let owned = sign(&pair, NOW_MS);
        let key = verify(&owned.signed(), true, NOW_MS).unwrap();
        assert_eq!(key.as_slice(), pair.public_key().as_ref());
    }

    #[test]
    fn each_failed_check_is_named() {
        let pair = key_pair();
        let good = sign(&pair, NOW_MS);
        let check = |owned: &Owned, outstanding: bool| -> ProofError {
            let err = verify(&owned.signed(), outstanding, NOW_MS).unwrap_err();
            assert!(err.to_string().starts_with("registration proof failed:"), "{err}");
            err
        };

        let short_key = Owned { public_key: vec![1; 31], ..sign(&pair, NOW_MS) };
        assert_eq!(check(&short_key, true), ProofError::KeyLength { len: 31 });
        assert_eq!(check(&good, false), ProofError::Nonce);

        let limit = MAX_CLOCK_SKEW_MS;
        assert!(verify(&sign(&pair, NOW_MS - limit).signed(), true, NOW_MS).is_ok());
        assert!(verify(&sign(&pair, NOW_MS + limit).signed(), true, NOW_MS).is_ok());
        assert_eq!(
            check(&sign(&pair, NOW_MS - limit - 1), true),
            ProofError::Timestamp { skew_secs: -300 }
        );
        assert!(matches!(check(&sign(&pair, i64::MIN), true), ProofError::Timestamp { .. }));
        assert!(matches!(check(&sign(&pair, i64::MAX), true), ProofError::Timestamp { .. }));

        let short_sig = Owned { signature: vec![0; 10], ..sign(&pair, NOW_MS) };
        assert_eq!(check(&short_sig, true), ProofError::SignatureLength { len: 10 });

        // Another key's signature, and a signature over other fields.
        let other = key_pair();
        let wrong_key =
            Owned { public_key: other.public_key().as_ref().to_vec(), ..sign(&pair, NOW_MS) };
        assert_eq!(check(&wrong_key, true), ProofError::Signature);
        let owned = sign(&pair, NOW_MS);
        let moved = Signed { advertise: "10.0.0.1:7400", ..owned.signed() };
        assert_eq!(verify(&moved, true, NOW_MS).unwrap_err(), ProofError::Signature);
        let renamed = Signed { name: "bob", ..owned.signed() };
        assert_eq!(verify(&renamed, true, NOW_MS).unwrap_err(), ProofError::Signature);
    }
}
