//! The man pages of the three programs, rendered from their clap
//! definitions: one page per program and one per subcommand
//! (`chatctl-connect.1`, ...). `scripts/man` writes them to
//! `crates/man/pages/`; a test checks that the pages there are current.

use clap::{Command, CommandFactory};

/// Where the pages are kept, from the workspace root.
pub const PAGES_DIR: &str = "crates/man/pages";

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
