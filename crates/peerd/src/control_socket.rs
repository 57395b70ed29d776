//! The control socket's file: probe, bind, restrict, and remove on exit.
//!
//! A socket file that answers belongs to a live daemon: refuse to start. One
//! that does not is left over from a crash: replace it. The folder is
//! created 0700 and the socket made 0600, so only this user can reach it.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

use crate::error::Error;

/// Removes the socket file when dropped, on every exit path.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the socket");
        }
    }
}

/// Binds the control socket at `path`.
pub(crate) fn bind(path: &Path) -> Result<(UnixListener, SocketFile), Error> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(dir, "creating the socket folder", e))?;
    }
    if path.exists() || path.symlink_metadata().is_ok() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::AlreadyRunning(path.to_path_buf()));
        }
        tracing::info!(path = %path.display(), "replacing a stale socket");
        std::fs::remove_file(path).map_err(|e| Error::io(path, "removing a stale socket", e))?;
    }
    let listener =
        UnixListener::bind(path).map_err(|e| Error::io(path, "binding the control socket", e))?;
    let guard = SocketFile { path: path.to_path_buf() };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(path, "restricting the control socket", e))?;
    Ok((listener, guard))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pcs-{}", uuid::Uuid::new_v4().simple()));
        dir.join("sub").join("s.sock")
    }

    #[tokio::test]
    async fn creates_a_private_folder_and_socket_and_removes_it() {
        let path = tmp();
        let (listener, guard) = bind(&path).expect("bind");
        let dir_mode =
            std::fs::metadata(path.parent().expect("parent")).expect("dir").permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let mode = std::fs::metadata(&path).expect("sock").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A live socket is refused...
        assert!(matches!(bind(&path), Err(Error::AlreadyRunning(_))));
        drop(listener);
        // ...a dead one is replaced.
        let (_l2, g2) = bind(&path).expect("stale socket replaced");
        drop(guard);
        drop(g2);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(path.parent().and_then(Path::parent).expect("root"));
    }
}
