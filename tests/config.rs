//! The config file (`$XDG_CONFIG_HOME/peerchat/config.toml`) with the real
//! binaries: `peerd config` says where each value comes from (flag > env >
//! file > default), a malformed file stops peerd with the file, line and
//! key, and peerd, chatctl and `peerd stop` all find the socket the file
//! names.
#![allow(clippy::expect_used)]

mod support;

use std::fs;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::bins::bin;
use support::daemons::{assert_exit, isolate_dirs, parse_peerd_ready};
use support::proc::{self, Proc};
use support::{Directory, READY_TIMEOUT, short_tempdir};

const TTL: u32 = 15;

/// Writes `home/config/peerchat/config.toml`; returns its path.
fn write_config(home: &Path, text: &str) -> String {
    let dir = home.join("config").join("peerchat");
    fs::create_dir_all(&dir).expect("creating the config dir");
    let path = dir.join("config.toml");
    fs::write(&path, text).expect("writing the config file");
    path.display().to_string()
}

/// `BIN ARGS...` with `home/config` as the config home.
fn command(name: &str, home: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = proc::command(&bin(name));
    cmd.env("XDG_CONFIG_HOME", home.join("config")).env_remove("RUST_LOG").args(args);
    isolate_dirs(&mut cmd, home);
    cmd
}

#[test]
fn peerd_config_says_where_each_value_comes_from() {
    let home = short_tempdir();
    let file = write_config(
        home.path(),
        "name = \"filed\"\nlisten = \"127.0.0.1:4999\"\naccept = \"known\"\ncolour = \"blue\"\n",
    );
    let out = proc::run(
        command("peerd", home.path(), &["config", "--json", "--name", "flagged"])
            .env("PEERCHAT_ACCEPT", "ask"),
        Duration::from_secs(10),
    );
    assert_exit(&out, 0, "peerd config");
    let json: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let s = &json["settings"];
    assert_eq!(json["file"], file.as_str());
    assert_eq!((&s["name"]["value"], &s["name"]["source"]), (&"flagged".into(), &"flag".into()));
    assert_eq!(s["name"]["from"], "--name");
    assert_eq!((&s["accept"]["value"], &s["accept"]["source"]), (&"ask".into(), &"env".into()));
    assert_eq!(s["accept"]["from"], "PEERCHAT_ACCEPT");
    assert_eq!(s["listen"]["value"], "127.0.0.1:4999");
    assert_eq!(s["listen"]["source"], "file");
    assert_eq!(s["listen"]["from"], format!("{file}:2"));
    assert_eq!(s["directory"]["source"], "default");
    assert_eq!(s["directory"]["value"], "http://127.0.0.1:7300");
    assert_eq!(s["advertise"]["value"], Value::Null);
    assert_eq!(s["resume_window"]["value"], 30, "a number, not text");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("warning: {file}:4: unknown key `colour`")), "{stderr}");

    // The text form: one line per setting, with its origin.
    let out = proc::run(&mut command("peerd", home.path(), &["config"]), Duration::from_secs(10));
    assert_exit(&out, 0, "peerd config");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with(&format!("config file: {file}\n")), "{text}");
    let accept = text.lines().find(|l| l.starts_with("accept")).expect("an accept line");
    assert!(accept.contains("known") && accept.ends_with(&format!("(file {file}:3)")), "{accept}");
}

#[test]
fn a_malformed_config_file_stops_peerd_naming_file_line_and_key() {
    let home = short_tempdir();
    let file = write_config(home.path(), "name = \"alice\"\n\nresume_window = \"soon\"\n");
    let out = proc::run(
        &mut command("peerd", home.path(), &["start", "--foreground"]),
        Duration::from_secs(10),
    );
    assert_exit(&out, 1, "peerd start with a bad config file");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with(&format!("error: {file}:3: key `resume_window`: ")), "{stderr}");

    let file = write_config(home.path(), "name = \"alice\"\naccept = \"sometimes\"\n");
    let out = proc::run(&mut command("peerd", home.path(), &["config"]), Duration::from_secs(10));
    assert_exit(&out, 1, "peerd config with a bad value");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with(&format!("error: {file}:2: key `accept`: ")), "{stderr}");
}

#[test]
fn the_file_alone_starts_peerd_and_chatctl_finds_its_socket() {
    let dir = Directory::start(TTL);
    let home = short_tempdir();
    let socket = home.path().join("c.sock");
    write_config(
        home.path(),
        &format!(
            "name = \"carol\"\ndirectory = [\"{}\"]\nlisten = \"127.0.0.1:0\"\nsocket = \"{}\"\ndata_dir = \"{}\"\n",
            dir.url(),
            socket.display(),
            home.path().join("data").display()
        ),
    );
    let mut cmd = command("peerd", home.path(), &["start", "--foreground"]);
    let (mut peerd, line) =
        Proc::start_ready("peerd carol", &mut cmd, &home.path().join("peerd.log"), READY_TIMEOUT);
    assert_eq!(parse_peerd_ready(&line).0, "carol");

    // chatctl without --socket: the file's socket.
    let out = proc::run(
        &mut command("chatctl", home.path(), &["--json", "status"]),
        Duration::from_secs(10),
    );
    assert_exit(&out, 0, "chatctl status");
    let status: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(status["name"], "carol");
    // A file named in PEERCHAT_CONFIG that is not there is said, not
    // silently passed over; the hint names the socket looked at.
    let missing = home.path().join("missing.toml");
    let mut cmd = command("chatctl", home.path(), &["status"]);
    let out = proc::run(cmd.env("PEERCHAT_CONFIG", &missing), Duration::from_secs(10));
    assert_exit(&out, 1, "chatctl status with a missing config file");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warning =
        format!("warning: the config file {} (PEERCHAT_CONFIG) does not exist", missing.display());
    assert!(stderr.starts_with(&warning), "{stderr}");
    assert!(stderr.contains("not running"), "{stderr}");

    let out = proc::run(&mut command("peerd", home.path(), &["stop"]), Duration::from_secs(15));
    assert_exit(&out, 0, "peerd stop");
    let exited = peerd.wait_exit(Duration::from_secs(15)).expect("peerd exits after stop");
    assert!(exited.success(), "{exited:?}");
    assert!(!socket.exists(), "the socket file is removed");
}
