//! TLS 1.3 for the peer link, with identities pinned by public key.
//!
//! Each start makes a fresh self-signed certificate from the identity key;
//! the certificate is only a carrier for the key. The dialer knows which key
//! it wants (the one the directory lists for the name, checked against the
//! known-peers file) and its verifier accepts exactly that key. The callee
//! accepts any well-formed ed25519 certificate during the handshake and
//! checks the key against the name the dialer claims once the Hello arrives.
//!
//! Pinning alone is not enough: a man in the middle can replay a victim's
//! certificate. Both verifiers therefore still verify the handshake
//! signature with the key in the certificate, which only the holder of the
//! private key can make. Session resumption is off, so every handshake runs
//! the verifiers.

use std::sync::Arc;

use peerchat_core::identity::{PUBLIC_KEY_LEN, fingerprint};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    ServerConfig, SignatureScheme,
};

use crate::error::Error;
use crate::identity::Identity;

/// ALPN for gRPC over HTTP/2.
const ALPN_H2: &[u8] = b"h2";

/// An ed25519 public key.
pub(crate) type PublicKey = [u8; PUBLIC_KEY_LEN];

/// Our certificate chain and key, made once per start.
#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivatePkcs8KeyDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl Credentials {
    /// A self-signed certificate for `identity`.
    pub(crate) fn new(identity: &Identity) -> Result<Credentials, Error> {
        let tls = |e: &dyn std::fmt::Display| {
            Error::Other(format!("cannot make the TLS certificate: {e}"))
        };
        let pkcs8 = PrivatePkcs8KeyDer::from(identity.pkcs8().to_vec());
        let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)
            .map_err(|e| tls(&e))?;
        let params =
            rcgen::CertificateParams::new(vec!["peerchat".to_owned()]).map_err(|e| tls(&e))?;
        let cert = params.self_signed(&key_pair).map_err(|e| tls(&e))?;
        Ok(Credentials {
            chain: vec![cert.der().clone()],
            key: Arc::new(pkcs8),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.as_ref().clone_key())
    }

    /// The callee's configuration: TLS 1.3 only, a client certificate
    /// required, no tickets and no session cache.
    pub(crate) fn server_config(&self) -> Result<Arc<ServerConfig>, Error> {
        let verifier = Arc::new(AnyPeerKey { algorithms: self.algorithms() });
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key())
            .map_err(tls_error)?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }

    /// The dialer's configuration for a peer that must hold `expected`.
    pub(crate) fn client_config(&self, expected: PublicKey) -> Result<Arc<ClientConfig>, Error> {
        let verifier = Arc::new(PinnedPeerKey { expected, algorithms: self.algorithms() });
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(self.chain.clone(), self.key())
            .map_err(tls_error)?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Arc::new(config))
    }

    fn algorithms(&self) -> WebPkiSupportedAlgorithms {
        self.provider.signature_verification_algorithms
    }
}

fn tls_error(e: rustls::Error) -> Error {
    Error::Other(format!("TLS configuration: {e}"))
}

/// The DER of an ed25519 SubjectPublicKeyInfo up to its key (RFC 8410
/// §4): SEQUENCE (42 bytes) { SEQUENCE (5) { OID 1.3.101.112 }, BIT STRING
/// (33) { no unused bits, then the 32-byte key } }. The algorithm has no
/// parameters, so this encoding is the only one there is.
const ED25519_SPKI_PREFIX: [u8; 12] =
    [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// The ed25519 key a certificate carries, parsed properly (a key merely
/// appearing somewhere in the bytes is not enough). The certificate is
/// parsed by webpki, the parser rustls itself verifies signatures with, so
/// there is one X.509 parser facing the network, not two.
pub(crate) fn certificate_key(cert: &CertificateDer<'_>) -> Result<PublicKey, rustls::Error> {
    let bad = |why: &str| {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
            BadCertificate(why.to_owned()),
        ))))
    };
    let parsed =
        webpki::EndEntityCert::try_from(cert).map_err(|_| bad("not an X.509 certificate"))?;
    let spki = parsed.subject_public_key_info();
    let raw = spki
        .as_ref()
        .strip_prefix(ED25519_SPKI_PREFIX.as_slice())
        .ok_or_else(|| bad("the certificate key is not ed25519"))?;
    raw.try_into().map_err(|_| bad("the ed25519 key is not 32 bytes"))
}

/// The peer we dialed showed a key other than the pinned one. A type of
/// its own so that the dialer tells this from an unreachable peer without
/// reading error text.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct PeerKeyMismatch(String);

/// A certificate that carries no well-formed ed25519 key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BadCertificate(String);

/// The dialer's configuration for the directory (`https://` URLs): TLS 1.3,
/// no client certificate (registrations carry their own proof), and the
/// directory's key pinned by `pin`.
pub(crate) fn directory_client_config(pin: DirectoryPin) -> Result<Arc<ClientConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(DirectoryKey { pin, algorithms }))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Which key the directory at `authority` must show: the fingerprint the
/// user gave (`--directory-key`), else the one recorded the first time we
/// talked to it (`known_directories`), else whatever it shows now, which is
/// then recorded (trust on first use).
#[derive(Debug, Clone)]
pub(crate) struct DirectoryPin {
    pub(crate) authority: String,
    pub(crate) given: Option<String>,
    pub(crate) known_file: std::path::PathBuf,
}

/// The words a directory with the wrong key shows up with.
pub(crate) const DIRECTORY_KEY_MISMATCH: &str = "directory key mismatch";

impl DirectoryPin {
    fn check(&self, shown: &str) -> Result<(), String> {
        let same = |a: &str, b: &str| normalize(a) == normalize(b);
        if let Some(given) = &self.given {
            return if same(given, shown) {
                Ok(())
            } else {
                Err(format!(
                    "{DIRECTORY_KEY_MISMATCH}: {} shows key {shown}, not {given} (--directory-key)",
                    self.authority
                ))
            };
        }
        let known = std::fs::read_to_string(&self.known_file).unwrap_or_default();
        let recorded = known.lines().find_map(|line| {
            let (authority, key) = line.split_once(' ')?;
            (authority == self.authority).then(|| key.trim().to_owned())
        });
        match recorded {
            Some(key) if same(&key, shown) => Ok(()),
            Some(key) => Err(format!(
                "{DIRECTORY_KEY_MISMATCH}: {} shows key {shown}, but it had key {key} before; \
                 if the directory really has a new key, remove its line from {}",
                self.authority,
                self.known_file.display()
            )),
            None => {
                tracing::warn!(directory = %self.authority, key = shown, "trusting the directory's key on first use");
                append_line(&self.known_file, &format!("{} {shown}\n", self.authority))
                    .map_err(|e| format!("cannot record the directory's key: {e}"))
            }
        }
    }
}

fn normalize(fingerprint: &str) -> String {
    fingerprint
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn append_line(path: &std::path::Path, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    f.write_all(line.as_bytes())
}

/// A directory showed a key other than the pinned one (or its key could not
/// be recorded on first use). A type of its own so that peerd can tell this
/// refusal from an unreachable directory without reading error text.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct DirectoryKeyMismatch(String);

/// Whether `err` failed because the directory's key is not the pinned one.
pub(crate) fn is_directory_key_mismatch(err: &(dyn std::error::Error + 'static)) -> bool {
    chain_has(err, &|e| e.is::<DirectoryKeyMismatch>())
}

/// Whether `err` failed because the peer we dialed did not prove the key
/// we pinned: it showed another key, or could not sign with the one it
/// showed.
pub(crate) fn is_peer_key_refused(err: &(dyn std::error::Error + 'static)) -> bool {
    chain_has(err, &|e| {
        e.is::<PeerKeyMismatch>()
            || matches!(
                e.downcast_ref::<rustls::Error>(),
                Some(rustls::Error::InvalidCertificate(CertificateError::BadSignature))
            )
    })
}

/// Whether any error in `err`'s chain is `wanted`.
///
/// A refusal travels from our verifier through rustls, tokio-rustls (an
/// `io::Error` wrapping the `rustls::Error`) and tonic (a `Status` whose
/// sources lead there). `io::Error::source` skips the error it wraps and
/// `rustls::Error` has no source, so both are opened by hand.
fn chain_has(
    err: &(dyn std::error::Error + 'static),
    wanted: &dyn Fn(&(dyn std::error::Error + 'static)) -> bool,
) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if wanted(e) {
            return true;
        }
        if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) =
            e.downcast_ref::<rustls::Error>()
            && chain_has(other.0.as_ref(), wanted)
        {
            return true;
        }
        if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref)
            && chain_has(inner, wanted)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Accepts the directory's pinned key (see [`DirectoryPin`]).
#[derive(Debug)]
struct DirectoryKey {
    pin: DirectoryPin,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for DirectoryKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let shown = fingerprint(&certificate_key(end_entity)?);
        self.pin.check(&shown).map_err(|why| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                DirectoryKeyMismatch(why),
            ))))
        })?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ED25519_ONLY.to_vec()
    }
}

/// Our identities are ed25519 keys; nothing else is offered or accepted.
const ED25519_ONLY: [SignatureScheme; 1] = [SignatureScheme::ED25519];

/// Both configurations are TLS 1.3 only, so a TLS 1.2 signature never
/// reaches a verifier; refuse it should one try.
fn tls12_refused() -> rustls::Error {
    rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic)
}

/// Accepts exactly one key (the dialer's verifier).
#[derive(Debug)]
struct PinnedPeerKey {
    expected: PublicKey,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedPeerKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let key = certificate_key(end_entity)?;
        if key != self.expected {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
                Arc::new(PeerKeyMismatch(format!(
                    "peer key mismatch: it answered with key {} instead of {}",
                    fingerprint(&key),
                    fingerprint(&self.expected)
                ))),
            ))));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The proof that the other end holds the private key of the
        // certificate it showed: without it, pinning lets a relay through.
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ED25519_ONLY.to_vec()
    }
}

/// Accepts any ed25519 certificate whose holder signs the handshake (the
/// callee's verifier; the key is matched to the claimed name later).
#[derive(Debug)]
struct AnyPeerKey {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyPeerKey {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        certificate_key(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ED25519_ONLY.to_vec()
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(given: Option<&str>) -> DirectoryPin {
        let file = std::env::temp_dir().join(format!("peerd-kd-{}", uuid::Uuid::new_v4().simple()));
        DirectoryPin {
            authority: "10.0.0.1:7300".into(),
            given: given.map(str::to_owned),
            known_file: file,
        }
    }

    /// A self-signed certificate for a key rcgen makes with `algorithm`.
    fn certificate(algorithm: &'static rcgen::SignatureAlgorithm) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate_for(algorithm).expect("key pair");
        let params = rcgen::CertificateParams::new(vec!["peerchat".to_owned()]).expect("params");
        params.self_signed(&key).expect("certificate").der().clone()
    }

    fn why(e: rustls::Error) -> String {
        match e {
            rustls::Error::InvalidCertificate(CertificateError::Other(other)) => other.to_string(),
            other => panic!("not a bad certificate: {other:?}"),
        }
    }

    #[test]
    fn a_certificate_yields_the_ed25519_key_it_was_made_for() {
        let dir = tempfile::tempdir().expect("temp dir");
        let identity = Identity::load_or_create(dir.path()).expect("identity");
        let credentials = Credentials::new(&identity).expect("credentials");
        let key = certificate_key(&credentials.chain[0]).expect("an ed25519 certificate");
        assert_eq!(&key, identity.public_key());
    }

    #[test]
    fn a_certificate_without_an_ed25519_key_is_refused() {
        let ecdsa = certificate(&rcgen::PKCS_ECDSA_P256_SHA256);
        let err = certificate_key(&ecdsa).expect_err("not ed25519");
        assert_eq!(why(err), "the certificate key is not ed25519");
    }

    #[test]
    fn bytes_that_are_not_one_certificate_are_refused() {
        let good = certificate(&rcgen::PKCS_ED25519);
        assert!(certificate_key(&good).is_ok());
        let mut trailing = good.to_vec();
        trailing.push(0);
        let cut = good[..good.len() - 1].to_vec();
        for bad in [trailing, cut, b"not a certificate".to_vec(), Vec::new()] {
            let err = certificate_key(&CertificateDer::from(bad)).expect_err("refused");
            assert_eq!(why(err), "not an X.509 certificate");
        }
    }

    #[test]
    fn a_directory_key_is_trusted_on_first_use_then_pinned() {
        let p = pin(None);
        assert!(p.check("AAAA-BBBB").is_ok());
        assert!(p.check("aaaa bbbb").is_ok(), "fingerprints compare loosely");
        let err = p.check("CCCC-DDDD").expect_err("changed");
        assert!(err.contains(DIRECTORY_KEY_MISMATCH) && err.contains("AAAA-BBBB"), "{err}");
        std::fs::remove_file(&p.known_file).ok();
    }

    #[test]
    fn a_directory_key_mismatch_is_found_through_rustls_io_and_tonic() {
        let refusal = || {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                DirectoryKeyMismatch("shows another key".into()),
            ))))
        };
        // The shape tokio-rustls hands to tonic's connector.
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, refusal());
        let status = tonic::Status::from_error(Box::new(io));
        assert!(is_directory_key_mismatch(&status));

        let other =
            std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        assert!(!is_directory_key_mismatch(&tonic::Status::from_error(Box::new(other))));
        let peer = rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
            Arc::new(PeerKeyMismatch("not the one".into())),
        )));
        assert!(!is_directory_key_mismatch(&peer), "a peer's wrong key is another matter");
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, peer);
        assert!(is_peer_key_refused(&tonic::Status::from_error(Box::new(io))));
        let forged = rustls::Error::InvalidCertificate(CertificateError::BadSignature);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, forged);
        assert!(is_peer_key_refused(&tonic::Status::from_error(Box::new(io))));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!is_directory_key_mismatch(&tonic::Status::from_error(Box::new(refused))));
    }

    #[test]
    fn a_given_fingerprint_wins() {
        let p = pin(Some("AAAA-BBBB"));
        assert!(p.check("AAAABBBB").is_ok());
        assert!(p.check("CCCC-DDDD").expect_err("wrong").contains("--directory-key"));
        assert!(!p.known_file.exists(), "a given key is not recorded");
    }
}
