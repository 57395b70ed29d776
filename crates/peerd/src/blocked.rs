//! The peers the user blocked (`chatctl block NAME`): their dials are
//! refused as if we were busy (they are not told they are blocked), and we
//! do not dial them. Kept in `<data-dir>/blocked`, one name per line,
//! read at start and rewritten whole (temporary file + rename) on every
//! change, so a block survives restarts.
//!
//! Only the driver holds it: blocking the current peer also ends the
//! conversation, and that is the driver's to do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use peerchat_core::Name;

use crate::error::Error;
use crate::identity::write_private;

const FILE: &str = "blocked";

/// The most names kept; blocking more is refused (the file is read whole
/// at start).
pub(crate) const MAX_BLOCKED: usize = 10_000;

/// The blocked names, by their case-folded key (names compare without
/// case), each as the user spelled it.
#[derive(Debug, Default)]
pub(crate) struct Blocked {
    /// `None` in tests that keep the list in memory only.
    path: Option<PathBuf>,
    names: BTreeMap<String, Name>,
}

/// What `block` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Added {
    New,
    Already,
}

impl Blocked {
    /// Loads `<data_dir>/blocked` (missing: nobody is blocked). Lines that
    /// are not names are skipped with a warning.
    pub(crate) fn load(data_dir: &Path) -> Result<Blocked, Error> {
        let path = data_dir.join(FILE);
        let mut blocked = Blocked { path: None, names: BTreeMap::new() };
        match std::fs::read_to_string(&path) {
            Ok(text) => blocked.parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, "reading the blocked peers", e)),
        }
        blocked.path = Some(path);
        Ok(blocked)
    }

    fn parse(&mut self, text: &str, path: &Path) {
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            match Name::parse(line) {
                Ok(name) if self.names.len() < MAX_BLOCKED => {
                    self.names.insert(name.key(), name);
                }
                Ok(_) => {
                    tracing::warn!(path = %path.display(), "too many blocked names; ignoring the rest");
                    break;
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), line, error = %e, "skipping a bad line")
                }
            }
        }
    }

    pub(crate) fn contains(&self, name: &Name) -> bool {
        self.names.contains_key(&name.key())
    }

    /// Blocks `name`, on disk before it answers.
    pub(crate) fn add(&mut self, name: &Name) -> Result<Added, Error> {
        if self.contains(name) {
            return Ok(Added::Already);
        }
        if self.names.len() >= MAX_BLOCKED {
            return Err(Error::Other(format!("cannot block more than {MAX_BLOCKED} peers")));
        }
        self.names.insert(name.key(), name.clone());
        if let Err(e) = self.save() {
            self.names.remove(&name.key());
            return Err(e);
        }
        Ok(Added::New)
    }

    /// Unblocks `name`; false if it was not blocked.
    pub(crate) fn remove(&mut self, name: &Name) -> Result<bool, Error> {
        let Some(old) = self.names.remove(&name.key()) else { return Ok(false) };
        if let Err(e) = self.save() {
            self.names.insert(name.key(), old);
            return Err(e);
        }
        Ok(true)
    }

    /// The blocked names, sorted (case-insensitively).
    pub(crate) fn names(&self) -> impl Iterator<Item = &Name> {
        self.names.values()
    }

    fn save(&self) -> Result<(), Error> {
        let Some(path) = &self.path else { return Ok(()) };
        let mut text = String::from("# peerchat: blocked peers, one name per line\n");
        for name in self.names.values() {
            text.push_str(name.as_str());
            text.push('\n');
        }
        write_private(path, text.as_bytes(), "saving the blocked peers")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::parse(s).expect("valid name")
    }

    #[test]
    fn blocks_survive_a_reload_and_compare_without_case() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut b = Blocked::load(dir.path()).expect("load");
        assert_eq!(b.add(&name("Mallory")).expect("add"), Added::New);
        assert_eq!(b.add(&name("mallory")).expect("add"), Added::Already);
        b.add(&name("eve")).expect("add");
        let again = Blocked::load(dir.path()).expect("reload");
        assert!(again.contains(&name("MALLORY")));
        assert_eq!(again.names().map(Name::as_str).collect::<Vec<_>>(), ["eve", "Mallory"]);
        let mut again = again;
        assert!(again.remove(&name("EVE")).expect("remove"));
        assert!(!again.remove(&name("eve")).expect("remove"));
        assert!(!Blocked::load(dir.path()).expect("reload").contains(&name("eve")));
    }

    #[test]
    fn bad_lines_are_skipped() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(FILE), "# c\nbob\nnot a name!\n\n  carol  \n")
            .expect("write");
        let b = Blocked::load(dir.path()).expect("load");
        assert_eq!(b.names().map(Name::as_str).collect::<Vec<_>>(), ["bob", "carol"]);
    }
}
