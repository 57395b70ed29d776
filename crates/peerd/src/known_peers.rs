//! The keys we have talked to, like SSH's known_hosts: the first key seen
//! for a name is remembered in `<data-dir>/known_peers`, and a different key
//! for that name later is refused (`key changed`) until the user accepts it
//! with `chatctl trust NAME`. This is what catches a directory that starts
//! handing out a wrong key for someone we already know.
//!
//! The file is small (one line per peer: `name hex-key`), read at start and
//! rewritten whole (temporary file + rename, fsynced) on every change. The
//! map in memory changes at once; the file is written on tokio's blocking
//! pool, never on the daemon's one runtime thread, one write at a time, each
//! of the map as it is then (so a later write never loses to an earlier).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::task::JoinHandle;

use peerchat_core::Name;
use peerchat_core::identity::fingerprint;

use crate::error::Error;
use crate::identity::write_private;
use crate::tls::PublicKey;

const FILE: &str = "known_peers";

/// What the file says about a name and a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Never talked to this name: trust on first use.
    New,
    /// The key we know.
    Known,
    /// A different key than the one we know.
    Changed { known: PublicKey },
}

/// The known-peers file, shared by the dialer, the callee and `trust`.
#[derive(Debug, Clone)]
pub(crate) struct KnownPeers {
    path: PathBuf,
    keys: Arc<Mutex<BTreeMap<String, PublicKey>>>,
    /// Held while the file is written (on the blocking pool), so that
    /// `check` on the runtime thread never waits for a disk.
    file: Arc<Mutex<()>>,
}

impl KnownPeers {
    /// Loads `<data_dir>/known_peers` (missing: empty). Lines that do not
    /// parse are skipped with a warning rather than stopping the daemon.
    pub(crate) fn load(data_dir: &Path) -> Result<KnownPeers, Error> {
        let path = data_dir.join(FILE);
        let mut keys = BTreeMap::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for line in text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
                    match parse_line(line) {
                        Some((name, key)) => {
                            keys.insert(name, key);
                        }
                        None => tracing::warn!(path = %path.display(), line, "skipping a bad line"),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, "reading the known peers", e)),
        }
        Ok(KnownPeers { path, keys: Arc::new(Mutex::new(keys)), file: Arc::default() })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, PublicKey>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Compares `key` with what we know of `name`.
    pub(crate) fn check(&self, name: &Name, key: &PublicKey) -> Verdict {
        match self.lock().get(&name.key()) {
            None => Verdict::New,
            Some(known) if known == key => Verdict::Known,
            Some(known) => Verdict::Changed { known: *known },
        }
    }

    /// Remembers `key` for `name` if we knew none (trust on first use).
    /// The file is written in the background (a failure is logged); the
    /// handle, if there is a write, says when it is done.
    pub(crate) fn remember(&self, name: &Name, key: &PublicKey) -> Option<JoinHandle<()>> {
        {
            let mut keys = self.lock();
            if keys.contains_key(&name.key()) {
                return None;
            }
            keys.insert(name.key(), *key);
        }
        let this = self.clone();
        Some(tokio::task::spawn_blocking(move || {
            if let Err(e) = this.save() {
                tracing::warn!(error = %e, "cannot record the peer's key");
            }
        }))
    }

    /// Replaces whatever we knew of `name` with `key` (`chatctl trust`);
    /// returns the key it replaces once the file says so.
    pub(crate) async fn trust(
        &self,
        name: &Name,
        key: &PublicKey,
    ) -> Result<Option<PublicKey>, Error> {
        let old = self.lock().insert(name.key(), *key);
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.save())
            .await
            .map_err(|e| Error::Other(format!("saving the known peers: {e}")))??;
        Ok(old)
    }

    /// Writes the map as it is now. Blocking I/O: the blocking pool only.
    fn save(&self) -> Result<(), Error> {
        let _one_writer = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = String::from("# peerchat known peers: name, ed25519 public key (hex)\n");
        for (name, key) in self.lock().iter() {
            text.push_str(&format!("{name} {}\n", hex(key)));
        }
        write_private(&self.path, text.as_bytes(), "saving the known peers")
    }
}

/// A human description of a key change, with the way out.
pub(crate) fn changed_message(name: &Name, known: &PublicKey, listed: &PublicKey) -> String {
    format!(
        "key changed for {name}: you talked to {name} with key {}, but it now has key {}; \
         if {name} really has a new key, accept it with: chatctl trust {name}",
        fingerprint(known),
        fingerprint(listed)
    )
}

fn parse_line(line: &str) -> Option<(String, PublicKey)> {
    if line.starts_with('#') {
        return None;
    }
    let (name, key) = line.split_once(' ')?;
    let name = Name::parse(name).ok()?.key();
    let key = unhex(key.trim())?;
    Some((name, key))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<PublicKey> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::parse(s).expect("valid")
    }

    #[tokio::test]
    async fn first_use_is_remembered_a_change_is_caught_trust_replaces() {
        let dir = std::env::temp_dir().join(format!("peerd-kp-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let kp = KnownPeers::load(&dir).expect("empty");
        let (k1, k2) = ([1u8; 32], [2u8; 32]);
        assert_eq!(kp.check(&name("Bob"), &k1), Verdict::New);
        kp.remember(&name("Bob"), &k1).expect("a write").await.expect("saved");
        assert!(kp.remember(&name("bob"), &k2).is_none(), "known already: nothing to write");
        let kp = KnownPeers::load(&dir).expect("reload");
        assert_eq!(kp.check(&name("BOB"), &k1), Verdict::Known);
        assert_eq!(kp.check(&name("bob"), &k2), Verdict::Changed { known: k1 });
        assert!(changed_message(&name("bob"), &k1, &k2).contains("chatctl trust bob"));
        assert_eq!(kp.trust(&name("bob"), &k2).await.expect("trust"), Some(k1));
        assert_eq!(
            KnownPeers::load(&dir).expect("reload").check(&name("bob"), &k2),
            Verdict::Known
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let k = [0xab; 32];
        assert_eq!(unhex(&hex(&k)), Some(k));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex(&"é".repeat(32)), None);
        assert_eq!(parse_line("bob nothex"), None);
    }
}
