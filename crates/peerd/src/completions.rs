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

impl Shell {
    /// Every shell, in the order of `--help`.
    pub const ALL: [Shell; 5] =
        [Shell::Bash, Shell::Elvish, Shell::Fish, Shell::PowerShell, Shell::Zsh];

    /// The script's file name in `crates/peerd/completions/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Shell::Bash => "peerd.bash",
            Shell::Elvish => "peerd.elv",
            Shell::Fish => "peerd.fish",
            Shell::PowerShell => "_peerd.ps1",
            Shell::Zsh => "_peerd",
        }
    }

    /// The script.
    pub fn script(self) -> &'static str {
        match self {
            Shell::Bash => include_str!("../completions/peerd.bash"),
            Shell::Elvish => include_str!("../completions/peerd.elv"),
            Shell::Fish => include_str!("../completions/peerd.fish"),
            Shell::PowerShell => include_str!("../completions/_peerd.ps1"),
            Shell::Zsh => include_str!("../completions/_peerd"),
        }
    }
}
