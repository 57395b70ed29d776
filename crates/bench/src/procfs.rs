//! Memory and CPU time of a process, read from `/proc`.

use std::time::Duration;

use anyhow::{Context as _, anyhow};

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`), in MiB.
pub(crate) fn status_mib(pid: u32, field: &str) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_status_kib(&text, field)
        .map(|kib| kib / 1024.0)
        .ok_or_else(|| anyhow!("{path} has no {field} in kB"))
}

fn parse_status_kib(status: &str, field: &str) -> Option<f64> {
    let line = status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    let mut words = line.split_whitespace();
    let value = words.next()?.parse::<f64>().ok()?;
    (words.next() == Some("kB")).then_some(value)
}

/// User plus system CPU time the process has used so far; `None` for this
/// process.
pub(crate) fn cpu_time(pid: Option<u32>) -> anyhow::Result<Duration> {
    let path = pid.map_or_else(|| "/proc/self/stat".to_owned(), |p| format!("/proc/{p}/stat"));
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = parse_stat_ticks(&text).ok_or_else(|| anyhow!("cannot parse {path}"))?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).ok().filter(|&t| t > 0).unwrap_or(100);
    Ok(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted
/// from the last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let utime = fields.get(11)?.parse::<u64>().ok()?;
    let stime = fields.get(12)?.parse::<u64>().ok()?;
    Some(utime + stime)
}

/// How long the process's main thread has run on a CPU so far (the first
/// field of `/proc/PID/schedstat`, in nanoseconds): exact, where
/// `cpu_time` counts clock ticks. peerd and the baseline servers run on
/// one thread.
pub(crate) fn run_time(pid: u32) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/schedstat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_schedstat(&text).ok_or_else(|| anyhow!("cannot parse {path}"))
}

fn parse_schedstat(text: &str) -> Option<Duration> {
    text.split_whitespace().next()?.parse().ok().map(Duration::from_nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields() {
        let status = "Name:\tpeerd\nVmHWM:\t   10240 kB\nVmRSS:\t    6144 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(6144.0));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(10240.0));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn stat_ticks_after_an_odd_name() {
        let stat = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 1 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(12));
    }

    #[test]
    fn schedstat_run_time_is_the_first_field() {
        assert_eq!(parse_schedstat("123456 789 10\n"), Some(Duration::from_nanos(123_456)));
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(parse_schedstat("x 1 2"), None);
    }
}
