//! Around the binaries, with the real programs: shell completion (chatctl's
//! asks the daemon for peer names as you type, in a real bash), peerd's
//! completion script, and `peerd install-service`'s systemd user unit.
#![allow(clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::bins::bin;
use support::daemons::assert_exit;
use support::proc;
use support::{Directory, Peer, short_tempdir};

const TTL: u32 = 15;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What chatctl offers for the word being typed at `words` (the last one),
/// asked the way its completion script asks it, of `socket`'s daemon.
fn offered(socket: &Path, words: &[&str]) -> Vec<String> {
    let mut cmd = proc::command(&bin("chatctl"));
    cmd.env("COMPLETE", "bash")
        .env("_CLAP_COMPLETE_INDEX", (words.len() - 1).to_string())
        .env("PEERCHAT_SOCKET", socket)
        .arg("--")
        .args(words);
    let out = proc::run(&mut cmd, Duration::from_secs(10));
    assert_exit(&out, 0, "chatctl's completion");
    stdout(&out).lines().map(str::to_owned).filter(|l| !l.is_empty()).collect()
}

#[test]
fn chatctl_completes_commands_and_names_from_the_daemon() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let _bob = Peer::start(&dir, "bob");
    let _bea = Peer::start(&dir, "bea");
    let carol = Peer::start(&dir, "carol");
    // Everyone is listed before we ask.
    support::eventually("all four listed", Duration::from_secs(10), || {
        let n = alice.list().len();
        if n == 4 { Ok(()) } else { Err(format!("{n} listed")) }
    });

    assert_eq!(offered(&alice.socket(), &["chatctl", "con"]), ["connect"]);
    assert_eq!(offered(&alice.socket(), &["chatctl", "connect", "b"]), ["bea", "bob"]);
    // Not yourself (flags are offered too when nothing is typed).
    let names: Vec<String> = offered(&alice.socket(), &["chatctl", "connect", ""])
        .into_iter()
        .filter(|w| !w.starts_with('-'))
        .collect();
    assert_eq!(names, ["bea", "bob", "carol"]);
    // unblock offers the blocked, accept the ones asking (nobody).
    alice.ctl_ok(&["block", "carol"]);
    assert_eq!(offered(&alice.socket(), &["chatctl", "unblock", "c"]), ["carol"]);
    assert!(offered(&alice.socket(), &["chatctl", "accept", "c"]).is_empty());
    // No daemon: no names, and no error.
    let nowhere = short_tempdir();
    let none = nowhere.path().join("none.sock");
    assert!(offered(&none, &["chatctl", "connect", "b"]).is_empty());
    // A --socket on the line names the daemon asked, as it would for the
    // command: before PEERCHAT_SOCKET.
    let socket = alice.socket();
    let socket = socket.to_str().expect("a UTF-8 temp path");
    assert_eq!(offered(&none, &["chatctl", "--socket", socket, "connect", "b"]), ["bea", "bob"]);
    let flag = format!("--socket={socket}");
    assert_eq!(offered(&none, &["chatctl", "unblock", &flag, "c"]), ["carol"]);

    // A real bash, with the script chatctl prints: carol's own name is
    // not offered to her, the others are.
    assert_eq!(bash_completes(&carol.socket(), "c"), Vec::<String>::new());
    assert_eq!(bash_completes(&carol.socket(), "b"), ["bea", "bob"]);
}

/// Sources `chatctl completions bash` in a bash whose PATH has our chatctl,
/// completes `chatctl connect TYPED` with the function it registered, and
/// returns what it offered.
fn bash_completes(socket: &Path, typed: &str) -> Vec<String> {
    let bin_dir = bin("chatctl").parent().expect("the binaries' folder").to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let script = format!(
        "source <(chatctl completions bash) && \
         COMP_WORDS=(chatctl connect {typed}) && COMP_CWORD=2 && COMP_TYPE=9 && \
         _clap_complete_chatctl chatctl {typed} connect 2>/dev/null; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\""
    );
    let mut cmd = proc::command(Path::new("bash"));
    cmd.args(["--norc", "--noprofile", "-c", &script])
        .env("PATH", path)
        .env("PEERCHAT_SOCKET", socket);
    let out = proc::run(&mut cmd, Duration::from_secs(10));
    assert_exit(&out, 0, "bash completing chatctl");
    stdout(&out).split_whitespace().map(str::to_owned).collect()
}

#[test]
fn peerd_writes_completion_scripts() {
    for shell in ["bash", "zsh", "fish"] {
        let out = proc::run(
            proc::command(&bin("peerd")).args(["completions", shell]),
            Duration::from_secs(10),
        );
        assert_exit(&out, 0, "peerd completions");
        let script = stdout(&out);
        assert!(
            script.contains("install-service") && script.contains("accept"),
            "{shell}: {script}"
        );
    }
}

#[test]
fn install_service_writes_a_user_unit_and_says_how_to_enable_it() {
    let home = short_tempdir();
    let config = home.path().join("config");
    let unit = config.join("systemd/user/peerd.service");
    let peerd = |args: &[&str]| {
        let mut cmd: Command = proc::command(&bin("peerd"));
        cmd.env("XDG_CONFIG_HOME", &config).args(args);
        proc::run(&mut cmd, Duration::from_secs(10))
    };

    let out = peerd(&["install-service", "--print", "--json"]);
    assert_exit(&out, 0, "install-service --print");
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["written"], false);
    assert_eq!(json["path"], unit.display().to_string());
    assert!(!unit.exists(), "--print writes nothing");
    let exec = format!("\nExecStart={} start --foreground\n", bin("peerd").display());
    assert!(json["unit"].as_str().is_some_and(|u| u.contains(&exec)), "{json}");

    let out = peerd(&["install-service"]);
    assert_exit(&out, 0, "install-service");
    assert_eq!(
        stdout(&out),
        format!("wrote {}\nnow run: systemctl --user enable --now peerd\n", unit.display())
    );
    let text = std::fs::read_to_string(&unit).expect("the unit is written");
    assert!(text.contains(&exec) && text.contains("\nRestart=on-failure\n"), "{text}");
}
