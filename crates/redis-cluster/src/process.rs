//! Child processes: how they are spawned so that they die with us, and how
//! a short command is run with a deadline.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::Error;

/// The longest sleep between two looks at a running command: short enough
/// that a `redis-cli` query (a few ms) costs little more than it takes.
const MAX_POLL: Duration = Duration::from_millis(20);

/// One child to spawn on the spawner thread, and where to send it back.
struct SpawnRequest {
    command: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

/// The spawner thread's inbox; `None` if the thread could not be started.
static SPAWNER: OnceLock<Option<mpsc::Sender<SpawnRequest>>> = OnceLock::new();

/// Spawns `command` so that the kernel kills the child (SIGKILL) when this
/// process dies, however it dies.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits,
/// not the process. Test threads, tokio's blocking pool and scoped threads
/// all end long before the cluster they started might, so every child is
/// forked by one thread that lives as long as the process.
pub(crate) fn spawn(mut command: Command) -> io::Result<Child> {
    die_with_parent(&mut command);
    let inbox = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("redis-spawner".into())
            .spawn(move || {
                for mut request in rx {
                    // The requester cannot have gone (it blocks on the
                    // answer), but if it had, kill the orphan, don't leak it.
                    if let Err(mpsc::SendError(Ok(mut child))) =
                        request.reply.send(request.command.spawn())
                    {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                }
            })
            .ok()
            .map(|_| tx)
    });
    let Some(inbox) = inbox else {
        return Err(io::Error::other("the redis-spawner thread could not be started"));
    };
    let (reply, answer) = mpsc::channel();
    inbox
        .send(SpawnRequest { command, reply })
        .map_err(|_| io::Error::other("the redis-spawner thread is gone"))?;
    answer.recv().map_err(|_| io::Error::other("the redis-spawner thread is gone"))?
}

/// Asks the kernel to SIGKILL the child when its parent thread exits, and
/// closes the race where the parent died before the request was made.
fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        // Read before the fork: in the child, getppid() must still be us.
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the hook runs between fork and exec and calls only
        // async-signal-safe functions (prctl, getppid) and allocates nothing.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// What a finished command printed.
#[derive(Debug)]
pub(crate) struct Output {
    /// How it exited.
    pub(crate) status: ExitStatus,
    /// Its stdout, lossily decoded.
    pub(crate) stdout: String,
    /// Its stderr, lossily decoded.
    pub(crate) stderr: String,
}

impl Output {
    /// Both streams, for an error message.
    pub(crate) fn both(&self) -> String {
        match (self.stdout.trim_end(), self.stderr.trim_end()) {
            (out, "") => out.to_owned(),
            ("", err) => err.to_owned(),
            (out, err) => format!("{out}\n{err}"),
        }
    }
}

/// The command line as a person would type it, for error messages.
pub(crate) fn display(program: &Path, args: &[impl AsRef<OsStr>]) -> String {
    let name = program.file_name().unwrap_or(program.as_os_str()).to_string_lossy();
    let mut line = name.into_owned();
    for arg in args {
        line.push(' ');
        line.push_str(&arg.as_ref().to_string_lossy());
    }
    line
}

/// Runs `program args` with no stdin, collects its output, and kills it if
/// it is still running after `timeout`. A non-zero exit is not an error
/// here: a refused `PING` is an answer while waiting for a node.
pub(crate) fn run(
    program: &Path,
    args: &[impl AsRef<OsStr>],
    timeout: Duration,
) -> Result<Output, Error> {
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = spawn(command)
        .map_err(|source| Error::Spawn { command: display(program, args), source })?;
    // Drained on their own threads so a chatty command cannot fill a pipe
    // and stall before it exits.
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);

    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                // Still ours (not reaped), so the pid cannot have been reused.
                let _ = child.kill();
                let _ = child.wait();
                break Err(Error::CommandTimeout { command: display(program, args), timeout });
            }
            Ok(None) => {
                thread::sleep(pause);
                pause = (pause * 2).min(MAX_POLL);
            }
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(Error::Spawn { command: display(program, args), source });
            }
        }
    };
    let stdout = stdout.map(join).unwrap_or_default();
    let stderr = stderr.map(join).unwrap_or_default();
    Ok(Output { status: status?, stdout, stderr })
}

/// Like [`run`], but a non-zero exit is an [`Error::Command`].
pub(crate) fn run_ok(
    program: &Path,
    args: &[impl AsRef<OsStr>],
    timeout: Duration,
) -> Result<Output, Error> {
    let output = run(program, args, timeout)?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(Error::Command {
            command: display(program, args),
            status: output.status.to_string(),
            output: output.both(),
        })
    }
}

/// Reads a pipe to its end on a thread of its own.
fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        // A read error ends the output early; what was read still helps.
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// The drained text; empty if the reader thread panicked (it cannot).
fn join(reader: thread::JoinHandle<String>) -> String {
    reader.join().unwrap_or_default()
}

/// Whether a process with this pid exists (a zombie counts). For checking
/// that the nodes are really gone after a stop.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 checks for existence and permission, sends nothing.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_that_outlives_its_timeout_is_killed() {
        let started = Instant::now();
        let result = run(Path::new("sleep"), &["5"], Duration::from_millis(100));
        assert!(matches!(result, Err(Error::CommandTimeout { .. })), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn output_and_status_are_collected() {
        let Ok(output) =
            run(Path::new("sh"), &["-c", "echo out; echo err >&2; exit 3"], Duration::from_secs(5))
        else {
            panic!("sh did not run");
        };
        assert_eq!(output.stdout, "out\n");
        assert_eq!(output.stderr, "err\n");
        assert_eq!(output.status.code(), Some(3));
        assert!(matches!(
            run_ok(Path::new("false"), &[] as &[&str], Duration::from_secs(5)),
            Err(Error::Command { .. })
        ));
    }

    #[test]
    fn children_outlive_the_thread_that_asked_for_them() {
        // Spawned from a thread that then exits: with PR_SET_PDEATHSIG set
        // on a child forked by that thread, the child would be killed now.
        let child = thread::spawn(|| {
            let mut command = Command::new("sleep");
            command.arg("30");
            spawn(command)
        })
        .join();
        let Ok(Ok(mut child)) = child else {
            panic!("sleep did not start");
        };
        thread::sleep(Duration::from_millis(100));
        let still_running = matches!(child.try_wait(), Ok(None));
        let _ = child.kill();
        let _ = child.wait();
        assert!(still_running, "the child died with the thread that spawned it");
        assert!(!pid_alive(child.id()));
    }
}
