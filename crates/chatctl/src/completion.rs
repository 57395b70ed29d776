//! Shell completion. `chatctl completions bash|zsh|fish` prints a script
//! for the shell to source; the script calls chatctl back (with
//! `COMPLETE=<shell>` in its environment) for every completion, and
//! [`complete_if_asked`] answers from the clap definitions, so commands and
//! flags are always this build's, and peer names come from the daemon
//! (who is online for `connect`, blocked names for `unblock`, waiting
//! requests for `accept`/`reject`). Names are asked of the daemon the
//! finished command would talk to: a `--socket` on the line being
//! completed, else `PEERCHAT_SOCKET`, else the default socket; with a
//! short time limit: no daemon, no names.

use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, ValueEnum};
use clap_complete::env::{Bash, EnvCompleter, Fish, Zsh};
use clap_complete::{CompleteEnv, CompletionCandidate};
use peerchat::v1 as pb;

use crate::cli::Cli;
use crate::client::{self, Control};

/// The variable the script sets when it calls chatctl back.
const VAR: &str = "COMPLETE";

/// How long a completion may wait for the daemon: a shell that hangs on Tab
/// is worse than one that offers no names.
const NAMES_TIMEOUT: Duration = Duration::from_millis(1500);

/// The shells `chatctl completions` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Answers a completion request and exits, if this run is one (the
/// script's call back); returns otherwise. Called before anything else.
pub fn complete_if_asked() {
    CompleteEnv::with_factory(Cli::command).var(VAR).complete();
}

/// `chatctl completions SHELL`: the script that registers chatctl's
/// completion with `shell`.
pub(crate) fn write_script(shell: Shell, out: &mut dyn Write) -> std::io::Result<()> {
    let completer: &dyn EnvCompleter = match shell {
        Shell::Bash => &Bash,
        Shell::Zsh => &Zsh,
        Shell::Fish => &Fish,
    };
    completer.write_registration(VAR, "chatctl", "chatctl", "chatctl", out)
}

/// Asks the daemon, on a runtime of its own, within [`NAMES_TIMEOUT`].
fn ask<T, F>(query: impl FnOnce(Control) -> F) -> Option<T>
where
    F: Future<Output = Option<T>>,
{
    let socket = socket_on_line(std::env::args_os(), std::env::var("_CLAP_COMPLETE_INDEX").ok())
        .or_else(|| {
            std::env::var_os("PEERCHAT_SOCKET").filter(|s| !s.is_empty()).map(PathBuf::from)
        })
        .unwrap_or_else(client::default_socket);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    runtime.block_on(async {
        tokio::time::timeout(NAMES_TIMEOUT, async {
            let control = client::connect(&socket).await.ok()?;
            query(control).await
        })
        .await
        .ok()
        .flatten()
    })
}

/// The socket a `--socket PATH` or `--socket=PATH` names on the line being
/// completed (the last one, as clap takes it), from the arguments of the
/// call back: `chatctl -- WORD...`, with `index` the word being completed
/// (bash passes it; the other shells complete the last word). The shell
/// hands the words as typed, so a `~` is expanded here and one pair of
/// quotes around the path taken off (a path that is not UTF-8 is read
/// lossily, and then no daemon answers: no names, as without one).
fn socket_on_line(
    args: impl IntoIterator<Item = OsString>,
    index: Option<String>,
) -> Option<PathBuf> {
    let mut words: Vec<OsString> =
        args.into_iter().skip_while(|a| a.as_os_str() != "--").skip(1).collect();
    let current =
        index.and_then(|i| i.parse::<usize>().ok()).unwrap_or(words.len().saturating_sub(1));
    words.truncate(current);
    let mut found = None;
    let mut words = words.iter().map(|w| w.to_string_lossy());
    while let Some(word) = words.next() {
        if word == "--" {
            break;
        } else if word == "--socket" {
            found = words.next().map(|w| w.into_owned());
        } else if let Some(path) = word.strip_prefix("--socket=") {
            found = Some(path.to_owned());
        }
    }
    let path = unquote(&found?).to_owned();
    if path.is_empty() {
        return None;
    }
    if let Some(home) = dirs::home_dir() {
        if path == "~" {
            return Some(home);
        }
        if let Some(rest) = path.strip_prefix("~/") {
            return Some(home.join(rest));
        }
    }
    Some(PathBuf::from(path))
}

/// `s` without one pair of matching quotes around it.
fn unquote(s: &str) -> &str {
    for q in ['\'', '"'] {
        if let Some(inner) = s.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner;
        }
    }
    s
}

/// The names in `names` that start with what was typed (without case).
fn matching(current: &OsStr, names: impl IntoIterator<Item = String>) -> Vec<CompletionCandidate> {
    let typed = current.to_string_lossy().to_lowercase();
    let mut names: Vec<String> =
        names.into_iter().filter(|n| n.to_lowercase().starts_with(&typed)).collect();
    names.sort();
    names.dedup();
    names.into_iter().map(CompletionCandidate::new).collect()
}

/// Who is online, but you.
pub(crate) fn online_peers(current: &OsStr) -> Vec<CompletionCandidate> {
    let names = ask(|mut c| async move {
        let (peers, you) = client::list_all(&mut c).await.ok()?;
        Some(peers.into_iter().map(|p| p.name).filter(|n| *n != you).collect::<Vec<_>>())
    });
    matching(current, names.unwrap_or_default())
}

/// Who is blocked.
pub(crate) fn blocked_peers(current: &OsStr) -> Vec<CompletionCandidate> {
    let names = ask(|mut c| async move {
        Some(c.list_blocked(pb::ListBlockedRequest {}).await.ok()?.into_inner().names)
    });
    matching(current, names.unwrap_or_default())
}

/// Who is asking to talk.
pub(crate) fn requesting_peers(current: &OsStr) -> Vec<CompletionCandidate> {
    let names = ask(|mut c| async move {
        let status = c.get_status(pb::GetStatusRequest {}).await.ok()?.into_inner();
        Some(status.requests.into_iter().map(|r| r.peer).collect::<Vec<_>>())
    });
    matching(current, names.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(c: Vec<CompletionCandidate>) -> Vec<String> {
        c.iter().map(|c| c.get_value().to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn names_match_what_was_typed_without_case() {
        let names = ["bob", "Bea", "carol", "bob"].map(String::from);
        assert_eq!(values(matching(OsStr::new("b"), names.clone())), ["Bea", "bob"]);
        assert_eq!(values(matching(OsStr::new(""), names.clone())).len(), 3);
        assert!(matching(OsStr::new("z"), names).is_empty());
    }

    fn socket(words: &[&str], index: Option<usize>) -> Option<PathBuf> {
        let args = ["chatctl", "--"].iter().chain(words).map(OsString::from);
        socket_on_line(args, index.map(|i| i.to_string()))
    }

    #[test]
    fn a_socket_on_the_line_is_the_one_asked() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(socket(&["chatctl", "--socket", "/s", "connect", "b"], None), p("/s"));
        assert_eq!(socket(&["chatctl", "connect", "--socket=/s", "b"], None), p("/s"));
        assert_eq!(socket(&["chatctl", "--socket", "'/a b'", "connect", ""], None), p("/a b"));
        // The last one wins, as when the command runs.
        assert_eq!(socket(&["chatctl", "--socket=/a", "--socket", "/b", "x"], None), p("/b"));
        // Words after the one being completed are not the line's yet.
        assert_eq!(socket(&["chatctl", "connect", "b", "--socket", "/s"], Some(2)), None);
        // Nothing after a bare `--`, no path yet, or no flag at all.
        assert_eq!(socket(&["chatctl", "send", "--", "--socket", "/s", "x"], None), None);
        assert_eq!(socket(&["chatctl", "--socket", ""], None), None);
        assert_eq!(socket(&["chatctl", "connect", "b"], None), None);
        assert_eq!(socket_on_line([OsString::from("chatctl")], None), None, "not a call back");
        if let Some(home) = dirs::home_dir() {
            let got = socket(&["chatctl", "--socket", "~/x.sock", "connect", ""], None);
            assert_eq!(got, Some(home.join("x.sock")));
        }
    }

    #[test]
    fn every_shell_gets_a_script_that_calls_chatctl_back() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            write_script(shell, &mut out).expect("written");
            let script = String::from_utf8(out).expect("text");
            assert!(script.contains("COMPLETE=") && script.contains("chatctl"), "{script}");
        }
    }
}
