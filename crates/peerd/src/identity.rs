//! What this daemon keeps to prove it is itself: for now the owner token,
//! a random secret in `<data-dir>/owner-token` that lets a restarted daemon
//! reclaim its name from the directory at once instead of waiting for its
//! old lease to expire. (The trust work replaces it with a key pair.)

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::Error;

const TOKEN_FILE: &str = "owner-token";

/// Creates the data dir (0700) if it is missing.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), Error> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(dir, "creating the data dir", e))?;
    }
    Ok(())
}

/// Reads the owner token, creating it on first start.
pub(crate) fn owner_token(data_dir: &Path) -> Result<Vec<u8>, Error> {
    let path = data_dir.join(TOKEN_FILE);
    match std::fs::read(&path) {
        Ok(bytes) if (16..=128).contains(&bytes.len()) => {
            let mode = std::fs::metadata(&path)
                .map_err(|e| Error::io(&path, "checking the owner token", e))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(Error::Other(format!(
                    "{} is readable by other users (mode {:o}); fix it with: chmod 600 {}",
                    path.display(),
                    mode & 0o777,
                    path.display()
                )));
            }
            return Ok(bytes);
        }
        Ok(_) => tracing::warn!(path = %path.display(), "malformed owner token; making a new one"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&path, "reading the owner token", e)),
    }
    let token =
        format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()).into_bytes();
    // Written whole to a temporary file, then renamed: never half a token.
    let tmp = data_dir.join(format!("{TOKEN_FILE}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io(&tmp, "creating the owner token", e))?;
    f.write_all(&token).map_err(|e| Error::io(&tmp, "writing the owner token", e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, "writing the owner token", e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, "saving the owner token", e))?;
    Ok(token)
}
