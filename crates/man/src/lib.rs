//! The man pages of the three programs, rendered from their clap
//! definitions: one page per program and one per subcommand
//! (`chatctl-connect.1`, ...). `scripts/man` writes them to
//! `crates/man/pages/`; a test checks that the pages there are current.
//! The same goes for peerd's completion scripts, which `scripts/man`
//! writes to `crates/peerd/completions/` for peerd to print.

use clap::{Command, CommandFactory};

/// Where the pages are kept, from the workspace root.
pub const PAGES_DIR: &str = "crates/man/pages";

/// Where peerd's completion scripts are kept, from the workspace root.
pub const COMPLETIONS_DIR: &str = "crates/peerd/completions";

/// peerd's completion script for every shell: file name and text.
pub fn peerd_completions() -> Vec<(String, Vec<u8>)> {
    use clap::ValueEnum;
    use peerchat_peerd::completions::Shell;
    Shell::value_variants()
        .iter()
        .map(|&shell| {
            let generator = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Elvish => clap_complete::Shell::Elvish,
                Shell::Fish => clap_complete::Shell::Fish,
                Shell::PowerShell => clap_complete::Shell::PowerShell,
                Shell::Zsh => clap_complete::Shell::Zsh,
            };
            let mut script = Vec::new();
            let mut cmd = peerchat_peerd::cli::Cli::command();
            clap_complete::generate(generator, &mut cmd, "peerd", &mut script);
            (shell.file().0.to_owned(), script)
        })
        .collect()
}

/// Every page: its file name and its roff text.
pub fn pages() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for cmd in [
        peerchat_directoryd::cli::Cli::command(),
        peerchat_peerd::cli::Cli::command(),
        peerchat_chatctl::Cli::command(),
    ] {
        let mut cmd = cmd.disable_help_subcommand(true);
        cmd.build();
        render(cmd, &mut out);
    }
    out
}

/// `cmd`'s page and its subcommands', depth first.
fn render(cmd: Command, out: &mut Vec<(String, Vec<u8>)>) {
    // The values of environment variables at generation time are no part
    // of the documentation.
    let cmd = cmd.mut_args(|a| a.hide_env_values(true));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
        render(sub, out);
    }
    let man = clap_mangen::Man::new(cmd).manual("peerchat");
    let mut text = Vec::new();
    // Into memory: cannot fail.
    if man.render(&mut text).is_ok() {
        out.push((man.get_filename(), text));
    }
}
