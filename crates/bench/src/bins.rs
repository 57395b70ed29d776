//! The binaries under test, found beside this one: `scripts/bench` builds
//! the whole workspace in release into one target dir, so peerd, directoryd
//! and chatctl are this executable's siblings.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// Paths to every binary the bench runs.
#[derive(Debug, Clone)]
pub(crate) struct Bins {
    pub(crate) peerd: PathBuf,
    pub(crate) directoryd: PathBuf,
    pub(crate) chatctl: PathBuf,
    /// This executable, re-run as the baseline servers.
    pub(crate) me: PathBuf,
}

impl Bins {
    pub(crate) fn beside_this_executable() -> anyhow::Result<Bins> {
        let me = std::env::current_exe().context("finding this executable")?;
        let dir = me.parent().context("this executable has no parent directory")?;
        Ok(Bins {
            peerd: sibling(dir, "peerd")?,
            directoryd: sibling(dir, "directoryd")?,
            chatctl: sibling(dir, "chatctl")?,
            me,
        })
    }
}

fn sibling(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: build every binary first (scripts/bench runs \
             `cargo build --release --workspace --bins`)",
            path.display()
        );
    }
    Ok(path)
}
