//! Wall time of whole processes, from spawn to exit: what a user waits for
//! when a script runs `chatctl`, compared with the cheapest process there is
//! (`true`).

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};

/// Runs `cmd` to completion with no input and output discarded, and returns
/// its wall time in milliseconds. A non-zero exit is an error: a failing
/// command would be timing something else.
pub(crate) fn time(cmd: &mut Command) -> anyhow::Result<f64> {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let start = Instant::now();
    let output = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let took = start.elapsed().as_secs_f64() * 1e3;
    if !output.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(took)
}
