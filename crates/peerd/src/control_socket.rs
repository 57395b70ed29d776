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
//!
//! Nor can anyone else put their own socket in its place: the folder must
//! be this user's or root's, and either closed to others' writes or sticky
//! (like `/tmp`, where nobody moves what is not theirs). In a folder another
//! user owns or may write to, they could move the socket away and listen
//! in its place, reading what chatctl sends (chatctl also checks who
//! serves the socket, but a daemon that cannot keep its place should not
//! start).

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::error::Error;
use crate::served::{Incoming, Served};

/// Control connections open at once at most. Only this user's processes
/// can connect, but a runaway script is one of them: each connection costs
/// tens of KiB of HTTP/2 state, so without a ceiling a loop that opens them
/// and never closes them grows the daemon without bound. Past it the
/// daemon stops accepting until one closes (a client waits in the
/// kernel's listen queue, or is refused when that is full), which keeps
/// what it holds bounded and costs the connections already open nothing.
pub(crate) const MAX_CONNECTIONS: usize = 256;

/// Accepts control connections on `listener`, at most `max` open at once;
/// ends when the server stops taking them.
pub(crate) fn connections(listener: UnixListener, max: usize) -> Incoming {
    let (tx, rx) = mpsc::channel(16);
    let slots = Arc::new(Semaphore::new(max));
    tokio::spawn(async move {
        loop {
            let slot = tokio::select! {
                _ = tx.closed() => break,
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            };
            let accepted = tokio::select! {
                _ = tx.closed() => break,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, _)) => {
                    if tx.send(Ok(Served::local(stream, slot))).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    // EMFILE and friends: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accept on the control socket failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

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
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    check_folder(folder, crate::config::uid())?;
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

/// Refuses a socket folder (the one a symlink leads to) that someone other
/// than `me` (or root) could change: see the module's doc.
fn check_folder(folder: &Path, me: u32) -> Result<(), Error> {
    // A symlink's owner can point it elsewhere later, whatever it leads
    // to now (another user's link in /tmp to a folder of ours, say).
    let link = std::fs::symlink_metadata(folder)
        .map_err(|e| Error::io(folder, "checking the socket folder", e))?;
    if link.file_type().is_symlink() && link.uid() != me && link.uid() != 0 {
        return Err(Error::Usage(format!(
            "the socket folder {} is a symlink of uid {}'s, who could point it elsewhere and \
             take the socket's place; choose another --socket",
            folder.display(),
            link.uid()
        )));
    }
    let meta = std::fs::metadata(folder)
        .map_err(|e| Error::io(folder, "checking the socket folder", e))?;
    let (owner, mode) = (meta.uid(), meta.mode() & 0o7777);
    let writable_by_others = mode & 0o022 != 0;
    let sticky = mode & 0o1000 != 0;
    // In a sticky folder nobody but its owner and root may move or remove
    // what another user put there.
    let safe = (owner == me || owner == 0) && (!writable_by_others || sticky);
    if safe {
        return Ok(());
    }
    let whose = if owner == me { "yours".to_owned() } else { format!("uid {owner}'s") };
    Err(Error::Usage(format!(
        "the socket folder {} ({whose}, mode {mode:o}) could be changed by another user, who \
         could then take the socket's place; make it yours with mode 700, or choose another \
         --socket",
        folder.display()
    )))
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

    /// A folder another user owns, or others may write to, is refused; a
    /// sticky one of root's (`/tmp`) is not.
    #[test]
    fn a_folder_someone_else_can_change_is_refused() {
        let dir = std::env::temp_dir().join(format!("pcf-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&dir).expect("folder");
        let me = crate::config::uid();
        let set = |mode: u32| {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).expect("chmod");
        };
        set(0o700);
        assert!(check_folder(&dir, me).is_ok());
        set(0o755);
        assert!(check_folder(&dir, me).is_ok(), "readable is fine");
        set(0o777);
        let err = check_folder(&dir, me).expect_err("writable by others");
        assert!(err.to_string().contains("could be changed by another user"), "{err}");
        set(0o1777);
        assert!(check_folder(&dir, me).is_ok(), "sticky: nobody else moves what is ours");
        // Another user's (only root can make one): refused even when closed.
        if me == 0 {
            std::os::unix::fs::chown(&dir, Some(4343), Some(4343)).expect("chown");
            set(0o700);
            let err = check_folder(&dir, me).expect_err("another user's");
            assert!(err.to_string().contains("uid 4343's"), "{err}");
        }
        assert!(check_folder(Path::new("/tmp"), me).is_ok(), "root's and sticky");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A symlink to a folder of ours is refused when another user owns the
    /// link: they could point it elsewhere once peerd has checked.
    #[test]
    fn a_symlink_someone_else_owns_is_refused() {
        let base = std::env::temp_dir().join(format!("pcl-{}", uuid::Uuid::new_v4().simple()));
        let (dir, link) = (base.join("real"), base.join("link"));
        std::fs::create_dir_all(&dir).expect("folder");
        std::os::unix::fs::symlink(&dir, &link).expect("symlink");
        let me = crate::config::uid();
        assert!(check_folder(&link, me).is_ok(), "our own link to our own folder");
        // Only root can give a link away.
        if me == 0 {
            std::os::unix::fs::lchown(&link, Some(4343), Some(4343)).expect("lchown");
            let err = check_folder(&link, me).expect_err("another user's link");
            assert!(err.to_string().contains("symlink of uid 4343's"), "{err}");
            assert!(!err.to_string().contains("  "), "one line, single spaces: {err}");
        }
        let _ = std::fs::remove_dir_all(&base);
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
