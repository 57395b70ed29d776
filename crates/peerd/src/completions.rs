//! `peerd completions SHELL`: the completion scripts, generated from the
//! CLI by clap_complete in `crates/man` (`scripts/man` writes them to
//! `crates/peerd/completions/`, and a test there fails when they are
//! stale) and carried here as text.
//!
//! Why not call clap_complete here: its generators were ~120 KB of
//! peerd's code, and code pages are most of an idle daemon's memory (the
//! kernel maps code around every page touched); a fixed text costs nothing
//! until it is printed.

use clap::ValueEnum;

/// A shell peerd has a completion script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Elvish,
    Fish,
    #[value(name = "powershell")]
    PowerShell,
    Zsh,
}

/// A script's file name in `crates/peerd/completions/`, and its text:
/// one literal for both, so that they cannot disagree.
macro_rules! script {
    ($file:literal) => {
        ($file, include_str!(concat!("../completions/", $file)))
    };
}

impl Shell {
    /// The script's file name in `crates/peerd/completions/`, and the
    /// script.
    pub fn file(self) -> (&'static str, &'static str) {
        match self {
            Shell::Bash => script!("peerd.bash"),
            Shell::Elvish => script!("peerd.elv"),
            Shell::Fish => script!("peerd.fish"),
            Shell::PowerShell => script!("_peerd.ps1"),
            Shell::Zsh => script!("_peerd"),
        }
    }
}
