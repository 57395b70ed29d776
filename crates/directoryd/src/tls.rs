//! The directory's own identity and TLS: an ed25519 key in
//! `<data-dir>/directory.key` (PKCS#8 DER, mode 0600), created on first
//! start, and a TLS 1.3 server configuration carrying it.
//!
//! Peers pin this key (trust on first use, or a fingerprint the operator
//! hands out with `directoryd key`), so that whatever answers their lookups
//! cannot hand out wrong peer keys unnoticed. The certificate is only a
//! carrier for the key: it is self-signed and made afresh at each start, and
//! clients check the key in it, not a chain.
//!
//! A key file that other users may read or write is refused, not silently
//! fixed: somebody may already have copied or replaced it, and the operator
//! should know.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use peerchat_core::identity::{PUBLIC_KEY_LEN, fingerprint};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use rustls::ServerConfig;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// The key file in the data dir.
pub(crate) const KEY_FILE: &str = "directory.key";

/// The name in the certificate. Clients pin the key, not the name, so it
/// only has to be a valid DNS name.
const CERT_NAME: &str = "peerchat-directory";

/// ALPN for gRPC over HTTP/2.
const ALPN_H2: &[u8] = b"h2";

/// Why the directory key could not be loaded, created or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The OS refused an operation.
    #[error("I/O error at {path} while {action}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What was being done, e.g. "reading the directory key".
        action: &'static str,
        /// What the OS said.
        source: io::Error,
    },
    /// The key file is open to group or others.
    #[error(
        "{path} is accessible by other users (mode {mode:03o}); it must be private: chmod 600 {path}"
    )]
    Mode {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file does not hold an ed25519 PKCS#8 key.
    #[error("{path} is not an ed25519 key ({why}); move it away to make a new one")]
    Invalid {
        /// The key file.
        path: PathBuf,
        /// What ring said.
        why: String,
    },
    /// The system random number generator failed.
    #[error("cannot generate a directory key")]
    Generate,
    /// The certificate or TLS configuration could not be made.
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

fn io_error(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> KeyError + use<> {
    let path = path.to_owned();
    move |source| KeyError::Io { path, action, source }
}

/// The directory's key pair, loaded.
pub(crate) struct DirectoryKey {
    pkcs8: Vec<u8>,
    public: [u8; PUBLIC_KEY_LEN],
}

impl std::fmt::Debug for DirectoryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private half.
        f.debug_struct("DirectoryKey").field("fingerprint", &self.fingerprint()).finish()
    }
}

impl DirectoryKey {
    /// Loads the key from `data_dir`, creating the folder (0700) and the key
    /// on first use. Blocking I/O.
    pub(crate) fn load_or_create(data_dir: &Path) -> Result<DirectoryKey, KeyError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(io_error(data_dir, "creating the data dir"))?;
        let path = data_dir.join(KEY_FILE);
        match File::open(&path) {
            Ok(file) => read_private(file, &path),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                    .map_err(|_| KeyError::Generate)?;
                write_private(data_dir, &path, doc.as_ref())?;
                tracing::info!(path = %path.display(), "created a new directory key");
                DirectoryKey::from_pkcs8(doc.as_ref().to_vec(), &path)
            }
            Err(source) => Err(KeyError::Io { path, action: "opening the directory key", source }),
        }
    }

    /// A key for this run only (no data dir): peers that pin it will refuse
    /// the directory after a restart, which is the point of pinning.
    pub(crate) fn ephemeral() -> Result<DirectoryKey, KeyError> {
        let doc =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Generate)?;
        DirectoryKey::from_pkcs8(doc.as_ref().to_vec(), Path::new("(in memory)"))
    }

    fn from_pkcs8(pkcs8: Vec<u8>, path: &Path) -> Result<DirectoryKey, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8)
            .map_err(|err| KeyError::Invalid { path: path.to_owned(), why: err.to_string() })?;
        let mut public = [0u8; PUBLIC_KEY_LEN];
        public.copy_from_slice(pair.public_key().as_ref());
        Ok(DirectoryKey { pkcs8, public })
    }

    /// The raw ed25519 public key, as it appears in the certificate.
    pub(crate) fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.public
    }

    /// What operators hand to users, and what peers show when they pin it.
    pub(crate) fn fingerprint(&self) -> String {
        fingerprint(&self.public)
    }

    /// A TLS 1.3 server configuration with a fresh self-signed certificate
    /// for this key: no client certificates (anyone may look peers up), h2
    /// only (gRPC), and no resumption, so that every client sees, and can
    /// check, the key at every handshake.
    pub(crate) fn server_config(&self) -> Result<Arc<ServerConfig>, KeyError> {
        let tls = |err: &dyn std::fmt::Display| KeyError::Tls(err.to_string());
        let pkcs8 = PrivatePkcs8KeyDer::from(self.pkcs8.clone());
        let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)
            .map_err(|err| tls(&err))?;
        let params =
            rcgen::CertificateParams::new(vec![CERT_NAME.to_owned()]).map_err(|err| tls(&err))?;
        let cert = params.self_signed(&key_pair).map_err(|err| tls(&err))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|err| tls(&err))?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], PrivateKeyDer::Pkcs8(pkcs8))
            .map_err(|err| tls(&err))?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }
}

/// Reads an existing key file, refusing it if group or others may access
/// it. The mode is taken from the open file, so it is the one read.
fn read_private(mut file: File, path: &Path) -> Result<DirectoryKey, KeyError> {
    let mode =
        file.metadata().map_err(io_error(path, "checking the directory key"))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(KeyError::Mode { path: path.to_owned(), mode: mode & 0o777 });
    }
    let mut pkcs8 = Vec::new();
    file.read_to_end(&mut pkcs8).map_err(io_error(path, "reading the directory key"))?;
    DirectoryKey::from_pkcs8(pkcs8, path)
}

/// Writes `bytes` to `path` as a 0600 file, atomically: a temporary file
/// beside it, synced, renamed over, and the folder synced. A crash leaves no
/// key or the whole key, never half of one (which would refuse to load).
fn write_private(data_dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    // Per process, so that two first starts never write into one temp file.
    let temp = data_dir.join(format!("{KEY_FILE}.{}.tmp", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .map_err(io_error(&temp, "creating the directory key"))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_error(&temp, "writing the directory key"))?;
    std::fs::rename(&temp, path).map_err(io_error(path, "saving the directory key"))?;
    // The rename itself is durable only once the folder is synced.
    File::open(data_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error(data_dir, "syncing the data dir"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_created_once_private_and_reloaded_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("nested").join("directory");
        let first = DirectoryKey::load_or_create(&data).unwrap();
        let path = data.join(KEY_FILE);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
        let again = DirectoryKey::load_or_create(&data).unwrap();
        assert_eq!(first.public_key(), again.public_key());
        assert_eq!(first.fingerprint(), fingerprint(&again.public_key()));
        // No temp file is left behind.
        let names: Vec<_> = std::fs::read_dir(&data)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [KEY_FILE]);
        assert!(!format!("{first:?}").contains("pkcs8"), "the Debug form hides the key");
        first.server_config().unwrap();
    }

    #[test]
    fn a_key_others_may_access_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirectoryKey::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        for mode in [0o644, 0o640, 0o602] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = DirectoryKey::load_or_create(dir.path()).unwrap_err().to_string();
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains(&format!("chmod 600 {}", path.display())), "{err}");
        }
        // Fixed by the operator: the same key again, not a new one.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let fixed = DirectoryKey::load_or_create(dir.path()).unwrap();
        assert_eq!(fixed.public_key(), first.public_key());
    }

    #[test]
    fn a_file_that_is_no_key_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path);
        file.as_mut().unwrap().write_all(b"not a key").unwrap();
        let err = DirectoryKey::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not an ed25519 key"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"not a key", "not replaced");
    }
}
