//! The binaries under test. Root `tests/` cannot use `CARGO_BIN_EXE_*` of
//! other packages, and `cargo test` does not build sibling binaries, so the
//! first test that needs one runs `cargo build --workspace --bins` (same
//! profile, same target dir) and every test then finds them beside this test
//! executable.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The path of the workspace binary `name` (`directoryd`, `peerd`,
/// `chatctl`), built on first use.
pub(crate) fn bin(name: &str) -> PathBuf {
    static BIN_DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = match BIN_DIR.get_or_init(build) {
        Ok(dir) => dir,
        Err(why) => panic!("{why}"),
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} does not exist after building the workspace binaries",
        path.display()
    );
    path
}

/// Builds the binaries and returns the directory they are in (the profile
/// dir holding this test executable's `deps/`).
fn build() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding the test executable: {e}"))?;
    let mut profile_dir =
        exe.parent().ok_or("the test executable has no parent dir")?.to_path_buf();
    if profile_dir.ends_with("deps") {
        profile_dir.pop();
    }
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("no profile dir name in {}", profile_dir.display()))?
        .to_owned();
    let parent = profile_dir.parent().ok_or("the profile dir has no parent")?;

    let mut cargo = Command::new(env!("CARGO"));
    cargo.current_dir(env!("CARGO_MANIFEST_DIR")).args(["build", "--workspace", "--bins"]);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cargo.arg("--release");
        }
        other => {
            cargo.args(["--profile", other]);
        }
    }
    if is_target_dir(parent) {
        cargo.arg("--target-dir").arg(parent);
    } else {
        // target/<triple>/<profile>: a cross build.
        let triple = parent.file_name().and_then(|n| n.to_str()).ok_or("no target triple dir")?;
        let target_dir = parent.parent().ok_or("the triple dir has no parent")?;
        cargo.args(["--target", triple, "--target-dir"]).arg(target_dir);
    }

    let output =
        cargo.output().map_err(|e| format!("running `cargo build --workspace --bins`: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`cargo build --workspace --bins` failed ({}), so there are no binaries to test:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(profile_dir)
}

/// Cargo marks its target dir with a `CACHEDIR.TAG`.
fn is_target_dir(dir: &Path) -> bool {
    dir.join("CACHEDIR.TAG").is_file()
}
