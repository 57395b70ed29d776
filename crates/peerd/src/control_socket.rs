//! The control socket's file: probe, bind, restrict, and remove on exit.
//!
//! A socket file that answers belongs to a live daemon: refuse to start. One
//! that does not is left over from a crash: replace it. Anything else at the
//! path is not ours: refuse to start, touching nothing. The folder is
//! created 0700 and the socket made 0600, so only this user can reach it.
//!
//! The socket is never reachable by anyone else, not even for a moment: it
//! is bound inside a fresh private (0700) folder beside its place, made
//! 0600 there, and only then renamed into place. Binding at its place and
//! restricting it afterwards would leave it open between the two calls
//! (the umask is the process's, shared by every thread, so it is not the
//! tool for this).

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

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
    if let Ok(meta) = path.symlink_metadata() {
        // Only a socket is ours to replace: anything else at the path
        // (a mistyped --socket naming someone's file) is left alone.
        if !meta.file_type().is_socket() {
            return Err(Error::Usage(format!(
                "the control socket path {} is taken by something that is not a socket; \
                 move it away or choose another --socket",
                path.display()
            )));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::AlreadyRunning(path.to_path_buf()));
        }
        tracing::info!(path = %path.display(), "replacing a stale socket");
        std::fs::remove_file(path).map_err(|e| Error::io(path, "removing a stale socket", e))?;
    }
    let private = Private::create(path)?;
    let listener = UnixListener::bind(&private.socket)
        .map_err(|e| Error::io(&private.socket, "binding the control socket", e))?;
    std::fs::set_permissions(&private.socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(&private.socket, "restricting the control socket", e))?;
    std::fs::rename(&private.socket, path)
        .map_err(|e| Error::io(path, "moving the control socket into place", e))?;
    Ok((listener, SocketFile { path: path.to_path_buf() }))
}

/// The private folder a socket is bound in before it moves to its place;
/// removed when dropped (empty by then, or with a socket nobody can reach).
struct Private {
    dir: PathBuf,
    socket: PathBuf,
}

impl Private {
    fn create(path: &Path) -> Result<Private, Error> {
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        // Short: a socket path may be only ~100 bytes long. Numbered, for
        // daemons started side by side in one process (tests).
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!(".peerd-{}-{n}", std::process::id()));
        if dir.symlink_metadata().is_ok() {
            // Left by a crashed start of a process with our pid.
            std::fs::remove_dir_all(&dir)
                .map_err(|e| Error::io(&dir, "removing a stale private folder", e))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(&dir, "creating a private folder for the socket", e))?;
        let socket = dir.join("s");
        Ok(Private { dir, socket })
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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
        let left: Vec<_> = std::fs::read_dir(path.parent().expect("parent"))
            .expect("the folder")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "the private folder is gone: {left:?}");
        let _ = std::fs::remove_dir_all(path.parent().and_then(Path::parent).expect("root"));
    }

    /// A mistyped `--socket` naming a file must not cost its contents.
    #[tokio::test]
    async fn a_file_that_is_not_a_socket_is_left_alone() {
        let path = tmp();
        std::fs::create_dir_all(path.parent().expect("parent")).expect("folder");
        std::fs::write(&path, "notes").expect("a file");
        let err = bind(&path).expect_err("refused");
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).expect("still there"), "notes");
        let _ = std::fs::remove_dir_all(path.parent().and_then(Path::parent).expect("root"));
    }
}
