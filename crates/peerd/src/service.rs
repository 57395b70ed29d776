//! `peerd install-service`: a systemd user unit that keeps peerd running
//! (`--foreground`, restarted on failure). Its settings come from the
//! config file, as for any `peerd start` (`peerd config` shows them), so
//! the unit itself holds nothing but the program and, if given, which
//! config file to read.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// The unit's file name; also what `systemctl --user` calls it.
pub const UNIT: &str = "peerd.service";

/// The line that enables and starts the unit.
pub const ENABLE: &str = "systemctl --user enable --now peerd";

/// Where user units go: `<config dir>/systemd/user/peerd.service`.
pub fn unit_path(config_dir: Option<&Path>) -> Option<PathBuf> {
    config_dir.map(|d| d.join("systemd").join("user").join(UNIT))
}

/// The unit for the peerd at `exe`, reading `config` if given.
pub fn unit_text(exe: &Path, config: Option<&Path>) -> String {
    let mut exec = format!("{} start --foreground", quote(&exe.display().to_string()));
    if let Some(c) = config {
        exec.push_str(&format!(" --config {}", quote(&c.display().to_string())));
    }
    format!(
        "# Written by `peerd install-service`. Settings: the config file\n\
         # ($XDG_CONFIG_HOME/peerchat/config.toml); `peerd config` shows them.\n\
         [Unit]\n\
         Description=peerchat daemon (peerd)\n\
         Documentation=man:peerd(1)\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={exec}\n\
         # SIGTERM is peerd's clean shutdown: goodbye to the peer, unregister.\n\
         KillSignal=SIGTERM\n\
         Restart=on-failure\n\
         RestartSec=2\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n"
    )
}

/// A word of ExecStart: quoted (systemd's rules) if it has a space, a quote
/// or a backslash in it.
fn quote(word: &str) -> String {
    if word.chars().any(|c| c.is_whitespace() || c == '"' || c == '\\' || c == '\'') {
        format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        word.to_owned()
    }
}

/// Writes the unit to `path` (creating its folder); returns the text.
pub fn install(path: &Path, text: &str) -> Result<(), Error> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "creating the unit folder", e))?;
    }
    std::fs::write(path, text).map_err(|e| Error::io(path, "writing the unit", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_runs_peerd_in_the_foreground_and_restarts_it() {
        let unit = unit_text(Path::new("/usr/local/bin/peerd"), None);
        assert!(unit.contains("\nExecStart=/usr/local/bin/peerd start --foreground\n"), "{unit}");
        assert!(unit.contains("\nRestart=on-failure\n"), "{unit}");
        assert!(unit.contains("\n[Install]\nWantedBy=default.target\n"), "{unit}");
        assert!(unit.contains("\nType=simple\n"), "{unit}");
    }

    #[test]
    fn paths_with_spaces_are_quoted() {
        let unit =
            unit_text(Path::new("/opt/peer chat/peerd"), Some(Path::new("/c/my \"x\".toml")));
        assert!(
            unit.contains("ExecStart=\"/opt/peer chat/peerd\" start --foreground --config \"/c/my \\\"x\\\".toml\"\n"),
            "{unit}"
        );
    }

    #[test]
    fn the_unit_goes_with_the_users_units() {
        assert_eq!(
            unit_path(Some(Path::new("/home/a/.config"))),
            Some(PathBuf::from("/home/a/.config/systemd/user/peerd.service"))
        );
    }
}
