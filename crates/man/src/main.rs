//! `peerchat-man [DIR]`: writes every man page into DIR (default
//! `crates/man/pages`), removing pages of commands that no longer exist,
//! and peerd's completion scripts into `crates/peerd/completions` (run
//! from the workspace root). Run through `scripts/man`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from(peerchat_man::PAGES_DIR), PathBuf::from);
    if let Err(e) = write(&dir) {
        eprintln!("error: {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn write(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let pages = peerchat_man::pages();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let stale = path.extension().is_some_and(|e| e == "1")
            && !pages.iter().any(|(name, _)| path.file_name().is_some_and(|f| f == name.as_str()));
        if stale {
            std::fs::remove_file(&path)?;
        }
    }
    for (name, text) in &pages {
        std::fs::write(dir.join(name), text)?;
        println!("{}", dir.join(name).display());
    }
    let completions = std::path::Path::new(peerchat_man::COMPLETIONS_DIR);
    std::fs::create_dir_all(completions)?;
    for (name, text) in peerchat_man::peerd_completions() {
        std::fs::write(completions.join(&name), text)?;
        println!("{}", completions.join(&name).display());
    }
    Ok(())
}
