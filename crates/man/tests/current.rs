//! The committed man pages are the ones the clap definitions give today:
//! a flag or command changed without `scripts/man` fails here.
#![allow(clippy::expect_used)]

use std::path::Path;

#[test]
fn the_committed_pages_are_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pages");
    let pages = peerchat_man::pages();
    let mut stale = Vec::new();
    for (name, text) in &pages {
        match std::fs::read(dir.join(name)) {
            Ok(committed) if committed == *text => {}
            Ok(_) => stale.push(format!("{name} differs")),
            Err(_) => stale.push(format!("{name} is missing")),
        }
    }
    let listed = std::fs::read_dir(&dir).expect("crates/man/pages exists");
    for entry in listed {
        let name = entry.expect("a dir entry").file_name().to_string_lossy().into_owned();
        if name.ends_with(".1") && !pages.iter().any(|(n, _)| *n == name) {
            stale.push(format!("{name} is for a command that no longer exists"));
        }
    }
    assert!(stale.is_empty(), "man pages out of date (run scripts/man): {stale:?}");
    for program in ["directoryd.1", "peerd.1", "chatctl.1", "chatctl-connect.1", "peerd-config.1"] {
        assert!(pages.iter().any(|(n, _)| n == program), "no page {program}");
    }
}

/// peerd prints these files for `peerd completions SHELL`: they must be
/// what clap_complete makes of today's CLI.
#[test]
fn the_committed_completion_scripts_are_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../peerd/completions");
    for (name, text) in peerchat_man::peerd_completions() {
        let committed = std::fs::read(dir.join(&name)).unwrap_or_default();
        assert!(committed == text, "{name} is out of date (run scripts/man)");
        assert!(text.windows(b"install-service".len()).any(|w| w == b"install-service"));
    }
}
