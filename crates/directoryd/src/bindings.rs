//! Durable name → key bindings: the first key to register a name owns it,
//! also while its peer is offline and across directory restarts.
//!
//! The file is `bindings.jsonl` in the data dir, one JSON object a line,
//! `{"name":"<case-folded name>","key":"<64 hex chars>"}`. A new binding is
//! appended with one write and `sync_data` before the registration is
//! answered, so an acknowledged name survives a crash. Loading skips lines
//! it cannot read (a crash may tear the last one) with a warning.
//!
//! While a directory runs it holds an exclusive `flock` on the file: a
//! second directory on the same data dir, and `directoryd forget` (which
//! rewrites the file; appends by the running directory would then go to
//! the replaced file and be lost), are refused instead.
//!
//! - [`Bindings`]: the pure in-memory map.
//! - [`BindingStore`]: the map with its open, locked file.
//! - [`forget`]: removes a binding from the file of a stopped directory.

use std::collections::HashMap;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use peerchat_core::Name;
use serde::{Deserialize, Serialize};

use crate::proof::PublicKey;

/// The bindings file in the data dir.
pub(crate) const FILE_NAME: &str = "bindings.jsonl";

/// Bindings held at most. Each costs ~100 bytes of memory and file; this
/// bounds both should someone claim names in bulk over weeks.
pub(crate) const MAX_BINDINGS: usize = 1_000_000;

/// A failure around the bindings file, saying what was being done to which
/// path.
#[derive(Debug, thiserror::Error)]
pub enum BindingsError {
    /// The OS refused an operation.
    #[error("I/O error at {path} while {action}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What was being done, e.g. "appending a binding".
        action: &'static str,
        /// What the OS said.
        source: io::Error,
    },
    /// Another process (a running directory) holds the file.
    #[error(
        "{path} is in use by a running directory; stop it first (it keeps its bindings in memory)"
    )]
    Locked {
        /// The bindings file.
        path: PathBuf,
    },
    /// The store was closed because the directory is stopping.
    #[error("the directory is shutting down")]
    Closed,
}

fn io_error(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> BindingsError + use<> {
    let path = path.to_owned();
    move |source| BindingsError::Io { path, action, source }
}

/// One line of the file.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    name: String,
    key: String,
}

/// The line recording `name_key → key`, newline included.
pub(crate) fn encode_line(name_key: &str, key: &PublicKey) -> String {
    // Serialising two strings cannot fail; the fallback keeps this total.
    let json = serde_json::to_string(&Line { name: name_key.to_owned(), key: hex(key) })
        .unwrap_or_default();
    format!("{json}\n")
}

/// Reads one line: a valid name (returned case-folded) and a key.
pub(crate) fn decode_line(line: &str) -> Result<(String, PublicKey), String> {
    let parsed: Line = serde_json::from_str(line).map_err(|err| format!("not JSON: {err}"))?;
    let name = Name::parse(&parsed.name).map_err(|err| err.to_string())?;
    let key = unhex(&parsed.key).ok_or("the key is not 64 hex digits")?;
    Ok((name.key(), key))
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// A key from its 64 lowercase or uppercase hex digits.
pub(crate) fn unhex(text: &str) -> Option<PublicKey> {
    let digits = text.as_bytes();
    let mut key = PublicKey::default();
    if digits.len() != key.len() * 2 {
        return None;
    }
    for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        *byte = u8::try_from(high * 16 + low).ok()?;
    }
    Some(key)
}

/// What the bindings say about a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// The name is bound to this key.
    Same,
    /// The name is bound to another key.
    Other,
    /// Nobody holds the name yet.
    Free,
}

/// Case-folded name → key.
#[derive(Debug, Default)]
pub(crate) struct Bindings {
    map: HashMap<String, PublicKey>,
}

impl Bindings {
    /// Reads the file's text. Returns the bindings and, for each line that
    /// was skipped, its number and why. A later line for a name already
    /// bound does not move it: the first key keeps the name.
    pub(crate) fn parse(text: &str) -> (Bindings, Vec<(usize, String)>) {
        let mut bindings = Bindings::default();
        let mut skipped = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match decode_line(line) {
                Ok((name, key)) => match bindings.check(&name, &key) {
                    Check::Free => bindings.insert(name, key),
                    Check::Same => {}
                    Check::Other => {
                        skipped.push((index + 1, format!("{name} is already bound to another key")))
                    }
                },
                Err(why) => skipped.push((index + 1, why)),
            }
        }
        (bindings, skipped)
    }

    pub(crate) fn check(&self, name_key: &str, key: &PublicKey) -> Check {
        match self.map.get(name_key) {
            Some(bound) if bound == key => Check::Same,
            Some(_) => Check::Other,
            None => Check::Free,
        }
    }

    pub(crate) fn insert(&mut self, name_key: String, key: PublicKey) {
        self.map.insert(name_key, key);
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// The bindings of a running directory, with their file open for appends
/// and locked against other processes.
#[derive(Debug)]
pub(crate) struct BindingStore {
    bindings: Bindings,
    path: PathBuf,
    /// `None` once closed.
    file: Option<File>,
    /// Bytes known to be in the file: a failed append is cut back to here,
    /// so that a torn line never swallows the next one.
    len: u64,
    /// No file at all: bindings last for this run (no `--data-dir`).
    memory_only: bool,
}

impl BindingStore {
    /// Creates the data dir (0700) if needed, opens and locks the bindings
    /// file (0600) and loads it.
    pub(crate) fn open(data_dir: &Path) -> Result<BindingStore, BindingsError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(io_error(data_dir, "creating the data dir"))?;
        let path = data_dir.join(FILE_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_error(&path, "opening the bindings file"))?;
        lock(&file, &path)?;
        let mut raw = Vec::new();
        file.read_to_end(&mut raw).map_err(io_error(&path, "reading the bindings file"))?;
        let (bindings, skipped) = Bindings::parse(&String::from_utf8_lossy(&raw));
        for (line, why) in skipped {
            tracing::warn!(path = %path.display(), line, %why, "skipped a bindings line");
        }
        let mut len = raw.len() as u64;
        // A torn last line (crash mid-append) would swallow the next append;
        // ending it first turns it into one skipped line.
        if raw.last().is_some_and(|&b| b != b'\n') {
            file.write_all(b"\n")
                .and_then(|()| file.sync_data())
                .map_err(io_error(&path, "ending a torn last line"))?;
            len += 1;
        }
        tracing::info!(path = %path.display(), bindings = bindings.len(), "bindings loaded");
        Ok(BindingStore { bindings, path, file: Some(file), len, memory_only: false })
    }

    /// Bindings kept in memory only, for a directory run without a data dir.
    pub(crate) fn in_memory() -> BindingStore {
        BindingStore {
            bindings: Bindings::default(),
            path: PathBuf::new(),
            file: None,
            len: 0,
            memory_only: true,
        }
    }

    pub(crate) fn check(&self, name_key: &str, key: &PublicKey) -> Check {
        self.bindings.check(name_key, key)
    }

    pub(crate) fn len(&self) -> usize {
        self.bindings.len()
    }

    /// Records a new binding durably, then in memory. Blocking I/O.
    pub(crate) fn bind(&mut self, name_key: &str, key: &PublicKey) -> Result<(), BindingsError> {
        if self.memory_only {
            self.bindings.insert(name_key.to_owned(), *key);
            return Ok(());
        }
        let file = self.file.as_mut().ok_or(BindingsError::Closed)?;
        let line = encode_line(name_key, key);
        let written = file.write_all(line.as_bytes()).and_then(|()| file.sync_data());
        if let Err(source) = written {
            // Best effort: the error below is what matters.
            if let Err(err) = file.set_len(self.len) {
                tracing::warn!(path = %self.path.display(), %err, "cannot cut back a failed append");
            }
            return Err(BindingsError::Io {
                path: self.path.clone(),
                action: "appending a binding",
                source,
            });
        }
        self.len += line.len() as u64;
        self.bindings.insert(name_key.to_owned(), *key);
        Ok(())
    }

    /// Closes the file, releasing the lock: a directory started next on the
    /// same data dir must not wait for the last stray connection of this
    /// one to let go of the store.
    pub(crate) fn close(&mut self) {
        self.file = None;
    }
}

/// Takes the exclusive lock without waiting.
fn lock(file: &File, path: &Path) -> Result<(), BindingsError> {
    // SAFETY: the descriptor is open for as long as `file` lives; flock has
    // no other preconditions.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Err(BindingsError::Locked { path: path.to_owned() });
    }
    Err(BindingsError::Io {
        path: path.to_owned(),
        action: "locking the bindings file",
        source: err,
    })
}

/// What [`forget`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forgotten {
    /// The bindings file that was rewritten.
    pub path: PathBuf,
    /// The key the name was bound to.
    pub key: PublicKey,
}

/// Removes the binding of `name` from the bindings file in `data_dir`,
/// atomically (a temp file renamed over it). `Ok(None)` when the name has
/// no binding. Refused while a directory is running on `data_dir`.
pub(crate) fn forget(data_dir: &Path, name: &Name) -> Result<Option<Forgotten>, BindingsError> {
    let path = data_dir.join(FILE_NAME);
    let mut file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(BindingsError::Io { path, action: "opening the bindings file", source });
        }
    };
    lock(&file, &path)?;
    let mut raw = Vec::new();
    file.read_to_end(&mut raw).map_err(io_error(&path, "reading the bindings file"))?;
    let text = String::from_utf8_lossy(&raw);

    let target = name.key();
    let mut removed = None;
    let mut kept = String::with_capacity(text.len());
    for line in text.lines() {
        match decode_line(line) {
            Ok((bound, key)) if bound == target => {
                // The first line is the binding in force (see `Bindings::parse`).
                removed.get_or_insert(key);
            }
            // Unreadable lines are kept as they are: they may be worth
            // repairing by hand, and loading skips them anyway.
            _ if !line.trim().is_empty() => {
                kept.push_str(line);
                kept.push('\n');
            }
            _ => {}
        }
    }
    let Some(key) = removed else {
        return Ok(None);
    };

    let temp = data_dir.join(format!("{FILE_NAME}.tmp"));
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .map_err(io_error(&temp, "creating the new bindings file"))?;
    out.write_all(kept.as_bytes())
        .and_then(|()| out.sync_all())
        .map_err(io_error(&temp, "writing the new bindings file"))?;
    std::fs::rename(&temp, &path).map_err(io_error(&path, "replacing the bindings file"))?;
    // The rename itself is durable only once the folder is synced.
    File::open(data_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error(data_dir, "syncing the data dir"))?;
    drop(file);
    Ok(Some(Forgotten { path, key }))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn without_a_data_dir_bindings_hold_for_the_run() {
        let mut store = BindingStore::in_memory();
        assert_eq!(store.check("bob", &[1; 32]), Check::Free);
        store.bind("bob", &[1; 32]).unwrap();
        assert_eq!(store.check("bob", &[1; 32]), Check::Same);
        assert_eq!(store.check("bob", &[2; 32]), Check::Other);
    }

    const A: PublicKey = [0xaa; 32];
    const B: PublicKey = [0x0b; 32];

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    #[test]
    fn lines_round_trip_and_are_the_documented_json() {
        let line = encode_line("bob", &B);
        assert_eq!(line, format!("{{\"name\":\"bob\",\"key\":\"{}\"}}\n", "0b".repeat(32)));
        assert_eq!(decode_line(line.trim_end()).unwrap(), ("bob".to_owned(), B));
        // Hand-edited files: upper case hex and names fold.
        let upper = format!("{{\"name\": \"Bob\", \"key\": \"{}\"}}", "AA".repeat(32));
        assert_eq!(decode_line(&upper).unwrap(), ("bob".to_owned(), A));
        for bad in [
            "",
            "{",
            "{\"name\":\"bob\"}",
            &format!("{{\"name\":\"b b\",\"key\":\"{}\"}}", "aa".repeat(32)),
            &format!("{{\"name\":\"bob\",\"key\":\"{}\"}}", "aa".repeat(31)),
            &format!("{{\"name\":\"bob\",\"key\":\"{}\"}}", "zz".repeat(32)),
            &format!("{{\"name\":\"bob\",\"key\":\"{}\"}}", "+a".repeat(32)),
        ] {
            assert!(decode_line(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parse_skips_bad_lines_and_keeps_the_first_key() {
        let text = format!(
            "{}garbage\n\n{}{}{{\"name\":\"carol\",\"ke",
            encode_line("bob", &A),
            encode_line("bob", &B),
            encode_line("alice", &B),
        );
        let (bindings, skipped) = Bindings::parse(&text);
        assert_eq!(bindings.len(), 2);
        assert_eq!(bindings.check("bob", &A), Check::Same);
        assert_eq!(bindings.check("bob", &B), Check::Other);
        assert_eq!(bindings.check("alice", &B), Check::Same);
        assert_eq!(bindings.check("carol", &A), Check::Free);
        let lines: Vec<usize> = skipped.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, [2, 4, 6]);
    }

    #[test]
    fn the_store_persists_bindings_and_survives_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("nested").join("directory");
        {
            let mut store = BindingStore::open(&data).unwrap();
            assert_eq!(store.check("bob", &A), Check::Free);
            store.bind("bob", &A).unwrap();
            assert_eq!(store.check("bob", &A), Check::Same);
        }
        let mode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let file = data.join(FILE_NAME);
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

        // A crash in the middle of an append.
        let mut raw = OpenOptions::new().append(true).open(&file).unwrap();
        raw.write_all(b"{\"name\":\"car").unwrap();
        drop(raw);
        {
            let mut store = BindingStore::open(&data).unwrap();
            assert_eq!(store.check("bob", &B), Check::Other);
            store.bind("alice", &B).unwrap();
        }
        let store = BindingStore::open(&data).unwrap();
        assert_eq!(store.len(), 2);
        assert_eq!(store.check("alice", &B), Check::Same);
    }

    #[test]
    fn a_second_open_or_forget_is_refused_while_the_store_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = BindingStore::open(dir.path()).unwrap();
        store.bind("bob", &A).unwrap();
        let err = BindingStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, BindingsError::Locked { .. }), "{err}");
        let err = forget(dir.path(), &name("bob")).unwrap_err();
        assert!(err.to_string().contains("running directory"), "{err}");
        store.close();
        assert!(matches!(store.bind("alice", &A), Err(BindingsError::Closed)));
        assert!(forget(dir.path(), &name("bob")).unwrap().is_some());
    }

    #[test]
    fn forget_removes_only_that_name() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(forget(dir.path(), &name("bob")).unwrap(), None, "no file yet");
        {
            let mut store = BindingStore::open(dir.path()).unwrap();
            store.bind("bob", &A).unwrap();
            store.bind("alice", &B).unwrap();
        }
        let forgotten = forget(dir.path(), &name("BOB")).unwrap().unwrap();
        assert_eq!(forgotten.key, A);
        assert_eq!(forgotten.path, dir.path().join(FILE_NAME));
        assert_eq!(forget(dir.path(), &name("bob")).unwrap(), None);
        assert!(!dir.path().join(format!("{FILE_NAME}.tmp")).exists());

        let mut store = BindingStore::open(dir.path()).unwrap();
        assert_eq!(store.check("bob", &B), Check::Free);
        assert_eq!(store.check("alice", &B), Check::Same);
        store.bind("bob", &B).unwrap();
        assert_eq!(store.check("bob", &B), Check::Same);
    }
}
