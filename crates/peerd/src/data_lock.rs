//! One daemon per data dir. A second peerd on the same data dir would load
//! the same identity key, so the directory would let it take the first
//! one's registration (a restart of the owner is allowed to), and the two
//! would take the name from each other every heartbeat while writing the
//! same history files. So the daemon holds an exclusive lock on
//! `<data-dir>/peerd.lock` for as long as it runs, and a second one is
//! refused at start: with `taken` when it wanted the same name, which is
//! what the user asked for and cannot have.
//!
//! The lock is the kernel's (`flock`): a daemon that dies, even by
//! `kill -9`, releases it, so there is never a stale lock to remove. The
//! file holds the holder's name and pid, only to say who holds it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use peerchat_core::Name;

use crate::error::Error;

const LOCK_FILE: &str = "peerd.lock";

/// The most of the lock file read to say who holds it.
const MAX_HOLDER_BYTES: u64 = 256;

/// Held while the daemon runs; dropping it releases the data dir.
#[derive(Debug)]
pub(crate) struct DataDirLock {
    _file: File,
}

/// Takes the data dir for `name`, or says who has it.
pub(crate) fn lock(data_dir: &Path, name: &Name) -> Result<DataDirLock, Error> {
    let path = data_dir.join(LOCK_FILE);
    let io = |action, e| Error::io(&path, action, e);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| io("opening the data dir's lock", e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let holder = holder_once_noted(&mut file);
            return Err(match &holder {
                Some(h) if h.name.eq_ignore_ascii_case(name.as_str()) => Error::TakenHere {
                    name: name.to_string(),
                    pid: h.pid,
                    data_dir: data_dir.into(),
                },
                _ => Error::DataDirInUse {
                    data_dir: data_dir.into(),
                    holder: holder.map_or_else(
                        || "another peerd".to_owned(),
                        |h| format!("peerd {} (pid {})", h.name, h.pid),
                    ),
                },
            });
        }
        Err(TryLockError::Error(e)) => return Err(io("locking the data dir", e)),
    }
    let note = format!("{name} {}\n", std::process::id());
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(note.as_bytes()))
        .map_err(|e| io("writing the data dir's lock", e))?;
    Ok(DataDirLock { _file: file })
}

/// How long a refused daemon waits for the holder's note. The holder
/// writes it just after taking the lock, so an empty note means two starts
/// at the same moment; without the wait the second would say "in use by
/// another peerd" where it should say `taken`.
const NOTE_WAIT: Duration = Duration::from_millis(500);
const NOTE_POLL: Duration = Duration::from_millis(5);

/// The holder, once its note is readable, or `None` if it stays
/// unreadable for [`NOTE_WAIT`] (a holder that never wrote one). Blocks:
/// called off the runtime's thread.
fn holder_once_noted(file: &mut File) -> Option<Holder> {
    let deadline = Instant::now() + NOTE_WAIT;
    loop {
        let found = holder(file);
        if found.is_some() || Instant::now() >= deadline {
            return found;
        }
        std::thread::sleep(NOTE_POLL);
    }
}

/// Who the lock file says holds it.
#[derive(Debug, PartialEq)]
struct Holder {
    name: String,
    pid: u32,
}

fn holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(MAX_HOLDER_BYTES).read_to_string(&mut text).ok()?;
    parse_holder(&text)
}

fn parse_holder(text: &str) -> Option<Holder> {
    let mut words = text.split_ascii_whitespace();
    let name = Name::parse(words.next()?).ok()?;
    let pid = words.next()?.parse().ok()?;
    Some(Holder { name: name.to_string(), pid })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> Name {
        Name::parse(n).expect("valid")
    }

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    #[test]
    fn a_second_lock_on_the_same_dir_is_refused_until_the_first_is_dropped() {
        let dir = tmp();
        let first = lock(dir.path(), &name("alice")).expect("first");
        let pid = std::process::id();
        match lock(dir.path(), &name("ALICE")) {
            Err(e @ Error::TakenHere { pid: p, .. }) => {
                assert_eq!(p, pid);
                let text = e.to_string();
                assert!(text.contains("taken") && text.contains(&pid.to_string()), "{text}");
            }
            other => panic!("same name: {other:?}"),
        }
        match lock(dir.path(), &name("bob")) {
            Err(e @ Error::DataDirInUse { .. }) => {
                assert!(e.to_string().contains(&format!("peerd alice (pid {pid})")), "{e}");
            }
            other => panic!("another name: {other:?}"),
        }
        drop(first);
        let again = lock(dir.path(), &name("bob")).expect("free again");
        drop(again);
    }

    #[test]
    fn a_start_racing_the_holders_note_still_says_taken() {
        let dir = tmp();
        // A holder that has the lock but has not written its note yet.
        let path = dir.path().join(LOCK_FILE);
        let held = File::create(&path).expect("create");
        held.try_lock().expect("lock");
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            (&held).write_all(b"alice 4242\n").expect("note");
            held
        });
        match lock(dir.path(), &name("alice")) {
            Err(Error::TakenHere { pid, .. }) => assert_eq!(pid, 4242),
            other => panic!("a start racing the note: {other:?}"),
        }
        drop(writer.join().expect("the writer"));
    }

    #[test]
    fn the_holder_is_read_only_from_a_well_formed_note() {
        assert_eq!(parse_holder("alice 42\n"), Some(Holder { name: "alice".into(), pid: 42 }));
        assert_eq!(parse_holder(""), None);
        assert_eq!(parse_holder("alice"), None);
        assert_eq!(parse_holder("alice -1"), None);
        assert_eq!(parse_holder("not/a/name 1"), None);
    }
}
