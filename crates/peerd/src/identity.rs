//! This daemon's long-term identity: an ed25519 key pair created on first
//! start in `<data-dir>/identity.key` (PKCS#8, mode 0600, written whole to
//! a temporary file and renamed). Its public key is who we are: the
//! directory binds our name to it, and peers pin it.
//!
//! A key file that other users can read is refused, not silently fixed:
//! somebody may already have copied it, and the user should know.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use peerchat_core::identity::{PUBLIC_KEY_LEN, fingerprint};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::error::Error;

const KEY_FILE: &str = "identity.key";

/// The key pair, loaded.
pub(crate) struct Identity {
    pkcs8: Vec<u8>,
    pair: Ed25519KeyPair,
    public: [u8; PUBLIC_KEY_LEN],
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private half.
        f.debug_struct("Identity").field("fingerprint", &self.fingerprint()).finish()
    }
}

impl Identity {
    /// Loads the key from `data_dir`, creating it on first start.
    pub(crate) fn load_or_create(data_dir: &Path) -> Result<Identity, Error> {
        let path = data_dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(pkcs8) => {
                check_private(&path)?;
                Identity::from_pkcs8(pkcs8, &path)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let rng = SystemRandom::new();
                let doc = Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|_| Error::Other("cannot generate an identity key".into()))?;
                write_private(&path, doc.as_ref(), "saving the identity key")?;
                tracing::info!(path = %path.display(), "created a new identity key");
                Identity::from_pkcs8(doc.as_ref().to_vec(), &path)
            }
            Err(e) => Err(Error::io(&path, "reading the identity key", e)),
        }
    }

    fn from_pkcs8(pkcs8: Vec<u8>, path: &Path) -> Result<Identity, Error> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).map_err(|e| {
            Error::Other(format!(
                "{} is not an ed25519 key ({e}); move it away to make a new one",
                path.display()
            ))
        })?;
        let mut public = [0u8; PUBLIC_KEY_LEN];
        public.copy_from_slice(pair.public_key().as_ref());
        Ok(Identity { pkcs8, pair, public })
    }

    pub(crate) fn public_key(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.public
    }

    pub(crate) fn fingerprint(&self) -> String {
        fingerprint(&self.public)
    }

    /// An ed25519 signature over `message`.
    pub(crate) fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }

    /// The PKCS#8 document, for building TLS certificates.
    pub(crate) fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }
}

/// Refuses a key file that anyone but its owner may read or write.
fn check_private(path: &Path) -> Result<(), Error> {
    let mode = std::fs::metadata(path)
        .map_err(|e| Error::io(path, "checking the identity key", e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(Error::KeyFileMode { path: path.to_path_buf(), mode: mode & 0o777 });
    }
    Ok(())
}

/// Writes `bytes` to `path` as a 0600 file, atomically (a temporary file
/// beside it, synced, then renamed): a crash leaves the old file or the new
/// one, never half of either. `what` names the file in errors.
pub(crate) fn write_private(path: &Path, bytes: &[u8], what: &'static str) -> Result<(), Error> {
    let tmp: PathBuf = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io(&tmp, what, e))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| Error::io(&tmp, what, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, what, e))
}

/// Creates `dir` (0700) if it is missing; one of ours that others may
/// read or enter (made before, by hand or with another umask) is closed
/// to them, since what peerd keeps there (history, logs) is private.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(dir, "creating a private folder", e)),
        Err(e) => Err(Error::io(dir, "checking a private folder", e)),
        Ok(meta) if meta.uid() == crate::config::uid() && meta.mode() & 0o077 != 0 => {
            tracing::warn!(dir = %dir.display(), mode = format!("{:o}", meta.mode() & 0o777), "others could read this folder; made it 0700");
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io(dir, "making a folder private", e))
        }
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("peerd-id-{}", uuid::Uuid::new_v4().simple()));
        ensure_private_dir(&dir).expect("tmp");
        // One that others could read is closed to them.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        ensure_private_dir(&dir).expect("made private");
        let mode = std::fs::metadata(&dir).expect("dir").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        dir
    }

    #[test]
    fn is_created_once_private_and_reloaded_the_same() {
        let dir = tmp();
        let a = Identity::load_or_create(&dir).expect("create");
        let mode = std::fs::metadata(dir.join(KEY_FILE)).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = Identity::load_or_create(&dir).expect("reload");
        assert_eq!(a.public_key(), b.public_key());
        let sig = a.sign(b"hello");
        let pk = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, b.public_key());
        assert!(pk.verify(b"hello", &sig).is_ok());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_key_others_can_read_is_refused_by_name() {
        let dir = tmp();
        Identity::load_or_create(&dir).expect("create");
        let path = dir.join(KEY_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = Identity::load_or_create(&dir).expect_err("refused").to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
