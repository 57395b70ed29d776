//! The daemon's resolved configuration. Each setting comes from the first
//! of: its flag, its environment variable, the config file
//! (`$XDG_CONFIG_HOME/peerchat/config.toml`, see
//! [`peerchat_core::config_file`]), its default; [`Resolved`] keeps where
//! each came from, for `peerd config`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use peerchat_core::config_file::{self, FileSettings, Setting};
use peerchat_core::{Name, paths};
use serde_json::Value;
use tonic::transport::Uri;

use crate::cli::{MAX_RESUME_WINDOW, Settings};
use crate::consent::Policy;
use crate::error::Error;

/// Everything `run` needs to know, with every default filled in.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: Name,
    /// The directory's replicas, in the order given; at least one. peerd
    /// uses one at a time and moves on when it stops answering.
    pub directories: Vec<String>,
    /// The directory's key fingerprint, for `https://` directories.
    pub directory_key: Option<String>,
    pub listen: SocketAddr,
    pub advertise: Option<SocketAddr>,
    pub socket: PathBuf,
    pub data_dir: PathBuf,
    /// How long a lost link may take to come back.
    pub resume_window: Duration,
    /// Who may open a conversation without asking the user.
    pub accept: Policy,
}

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The command line (the flag's name).
    Flag(&'static str),
    /// The environment (the variable's name).
    Env(&'static str),
    /// The config file, at this line.
    File {
        path: PathBuf,
        line: usize,
    },
    Default,
}

impl Origin {
    /// `flag`, `env`, `file` or `default`.
    pub fn kind(&self) -> &'static str {
        match self {
            Origin::Flag(_) => "flag",
            Origin::Env(_) => "env",
            Origin::File { .. } => "file",
            Origin::Default => "default",
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "flag {flag}"),
            Origin::Env(var) => write!(f, "env {var}"),
            Origin::File { path, line } => write!(f, "file {}:{line}", path.display()),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// Whether the command line or the environment gave a setting (clap
/// knows; the caller asks it by the setting's id, e.g. `"listen"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Given {
    Flag,
    Env,
}

/// A resolved configuration, where each value came from, and what the
/// config file had to warn about.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub config: Config,
    /// The config file read, if there was one.
    pub file: Option<PathBuf>,
    /// Each setting: its key, its value (a string, a number, or null when
    /// unset), its origin.
    pub origins: Vec<(&'static str, Value, Origin)>,
    pub warnings: Vec<String>,
}

/// The flag and environment variable of each setting.
const FLAGS: [(&str, &str, &str); 9] = [
    ("name", "--name", "PEERCHAT_NAME"),
    ("directory", "--directory", "PEERCHAT_DIRECTORY"),
    ("directory_key", "--directory-key", "PEERCHAT_DIRECTORY_KEY"),
    ("listen", "--listen", "PEERCHAT_LISTEN"),
    ("advertise", "--advertise", "PEERCHAT_ADVERTISE"),
    ("accept", "--accept", "PEERCHAT_ACCEPT"),
    ("socket", "--socket", "PEERCHAT_SOCKET"),
    ("data_dir", "--data-dir", "PEERCHAT_DATA_DIR"),
    ("resume_window", "--resume-window", "PEERCHAT_RESUME_WINDOW"),
];

const DEFAULT_DIRECTORY: &str = "http://127.0.0.1:7300";
const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);
const DEFAULT_RESUME_WINDOW: u64 = 30;

/// The config file to read: `--config`, else the default place.
pub fn config_file_path(flag: Option<&Path>) -> Option<PathBuf> {
    match flag {
        Some(p) => Some(p.to_owned()),
        None => config_file::default_path(dirs::config_dir().as_deref()),
    }
}

/// Reads the config file: `--config` must exist; the default one may not.
fn read_file(flag: Option<&Path>) -> Result<Option<FileSettings>, Error> {
    let Some(path) = config_file_path(flag) else { return Ok(None) };
    match config_file::load(&path)? {
        None if flag.is_some() => {
            Err(Error::Other(format!("the config file {} does not exist", path.display())))
        }
        found => Ok(found),
    }
}

impl Config {
    /// Resolves `settings` (flags and environment, with `given` saying
    /// which of the two gave a value) over the config file and defaults.
    pub fn resolve(
        settings: &Settings,
        given: &dyn Fn(&str) -> Option<Given>,
    ) -> Result<Resolved, Error> {
        let file = read_file(settings.config.as_deref())?;
        resolve_with(settings, given, file.as_ref())
    }

    /// Resolves the flags of `peerd start` (tests; no sources known).
    pub fn from_settings(settings: &Settings) -> Result<Config, Error> {
        Config::resolve(settings, &|_| Some(Given::Flag)).map(|r| r.config)
    }

    /// Where a detached daemon writes its log: the user's state dir, or the
    /// data dir where there is none.
    pub fn log_file(&self) -> PathBuf {
        match dirs::state_dir() {
            Some(state) => state.join("peerchat").join(self.name.key()).join("peerd.log"),
            None => self.data_dir.join("peerd.log"),
        }
    }
}

/// One setting's value and origin: the command line or environment, else
/// the file (checked by `parse`, whose error names the file, line and key),
/// else `default`.
fn pick<T, F>(
    key: &'static str,
    cli: Option<T>,
    given: &dyn Fn(&str) -> Option<Given>,
    file: Option<(&FileSettings, &Option<Setting<F>>)>,
    parse: impl FnOnce(&F) -> Result<T, String>,
    default: impl FnOnce() -> Result<T, Error>,
) -> Result<(T, Origin), Error> {
    let (flag, var) = FLAGS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, flag, var)| (*flag, *var))
        .unwrap_or(("", ""));
    if let Some(v) = cli {
        let origin = match given(key) {
            Some(Given::Env) => Origin::Env(var),
            _ => Origin::Flag(flag),
        };
        return Ok((v, origin));
    }
    if let Some((f, Some(setting))) = file {
        let v = parse(&setting.value).map_err(|why| f.error(setting.line, key, why))?;
        return Ok((v, Origin::File { path: f.path.clone(), line: setting.line }));
    }
    Ok((default()?, Origin::Default))
}

fn resolve_with(
    s: &Settings,
    given: &dyn Fn(&str) -> Option<Given>,
    file: Option<&FileSettings>,
) -> Result<Resolved, Error> {
    let f = |field: fn(&FileSettings) -> &Option<Setting<String>>| file.map(|fs| (fs, field(fs)));
    let mut origins = Vec::new();

    let (name, o) = pick(
        "name",
        s.name.as_deref().map(Name::parse).transpose()?,
        given,
        f(|fs| &fs.name),
        |v| Name::parse(v).map_err(|e| e.to_string()),
        || Ok(Name::parse(&login_name())?),
    )?;
    origins.push(("name", name.to_string().into(), o));

    let (directories, o) = pick(
        "directory",
        s.directory.as_deref().map(directory_urls).transpose()?,
        given,
        file.map(|fs| (fs, &fs.directory)),
        |urls: &Vec<String>| file_directory_urls(urls),
        || directory_urls(DEFAULT_DIRECTORY),
    )?;
    origins.push(("directory", directories.join(",").into(), o));

    let (directory_key, o) = pick(
        "directory_key",
        s.directory_key.clone().map(Some),
        given,
        f(|fs| &fs.directory_key),
        |v| Ok(Some(v.clone())),
        || Ok(None),
    )?;
    origins.push(("directory_key", directory_key.clone().into(), o));

    let (listen, o) = pick(
        "listen",
        s.listen,
        given,
        f(|fs| &fs.listen),
        |v| {
            v.parse::<SocketAddr>()
                .map_err(|e| format!("{v:?} is not an address such as 0.0.0.0:4000 ({e})"))
        },
        || Ok(DEFAULT_LISTEN),
    )?;
    origins.push(("listen", listen.to_string().into(), o));

    let (advertise, o) = pick(
        "advertise",
        s.advertise.map(Some),
        given,
        f(|fs| &fs.advertise),
        |v| {
            v.parse::<SocketAddr>()
                .map(Some)
                .map_err(|e| format!("{v:?} is not an address such as 203.0.113.7:4000 ({e})"))
        },
        || Ok(None),
    )?;
    origins.push(("advertise", advertise.map(|a| a.to_string()).into(), o));

    let (accept, o) = pick(
        "accept",
        s.accept,
        given,
        f(|fs| &fs.accept),
        |v| v.parse::<Policy>(),
        || Ok(Policy::All),
    )?;
    origins.push(("accept", accept.as_str().into(), o));

    let (socket, o) = pick(
        "socket",
        s.socket.clone(),
        given,
        f(|fs| &fs.socket),
        |v| non_empty_path(v),
        || Ok(socket_path(None)),
    )?;
    origins.push(("socket", socket.display().to_string().into(), o));

    let (data_dir, o) = pick(
        "data_dir",
        s.data_dir.clone(),
        given,
        f(|fs| &fs.data_dir),
        |v| non_empty_path(v),
        || Ok(paths::default_data_dir(dirs::data_dir().as_deref(), uid(), &name.key())),
    )?;
    origins.push(("data_dir", data_dir.display().to_string().into(), o));

    let (resume_window, o) = pick(
        "resume_window",
        s.resume_window,
        given,
        file.map(|fs| (fs, &fs.resume_window)),
        |v: &i64| {
            u64::try_from(*v).ok().filter(|v| (1..=MAX_RESUME_WINDOW).contains(v)).ok_or_else(
                || format!("{v} is not a number of seconds from 1 to {MAX_RESUME_WINDOW}"),
            )
        },
        || Ok(DEFAULT_RESUME_WINDOW),
    )?;
    origins.push(("resume_window", resume_window.into(), o));

    Ok(Resolved {
        config: Config {
            name,
            directories,
            directory_key,
            listen,
            advertise,
            socket,
            data_dir,
            resume_window: Duration::from_secs(resume_window),
            accept,
        },
        file: file.map(|fs| fs.path.clone()),
        origins,
        warnings: file.map(FileSettings::warnings).unwrap_or_default(),
    })
}

/// `peerd config`: one aligned line per setting, with its origin.
pub fn resolved_text(r: &Resolved) -> String {
    let file = match &r.file {
        Some(p) => p.display().to_string(),
        None => match config_file_path(None) {
            Some(p) => format!("{} (none there)", p.display()),
            None => "(none)".to_owned(),
        },
    };
    let mut lines = vec![format!("config file: {file}")];
    let shown: Vec<(&str, String, &Origin)> = r
        .origins
        .iter()
        .map(|(key, value, origin)| {
            let text = match value {
                Value::Null => "-".to_owned(),
                Value::String(s) if s.is_empty() => "-".to_owned(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (*key, text, origin)
        })
        .collect();
    let width = shown
        .iter()
        .map(|(k, v, _)| (k.len(), v.len()))
        .fold((0, 0), |a, b| (a.0.max(b.0), a.1.max(b.1)));
    for (key, value, origin) in &shown {
        lines.push(format!("{key:<kw$}  {value:<vw$}  ({origin})", kw = width.0, vw = width.1));
    }
    lines.join("\n")
}

/// `peerd config --json`: `{"file", "settings": {KEY: {"value", "source",
/// "from"}}}`; an unset value is null, `resume_window` a number.
pub fn resolved_json(r: &Resolved) -> Value {
    let settings: serde_json::Map<String, serde_json::Value> = r
        .origins
        .iter()
        .map(|(key, value, origin)| {
            let from = match origin {
                Origin::Flag(flag) => serde_json::Value::from(*flag),
                Origin::Env(var) => serde_json::Value::from(*var),
                Origin::File { path, line } => {
                    serde_json::Value::from(format!("{}:{line}", path.display()))
                }
                Origin::Default => serde_json::Value::Null,
            };
            (
                (*key).to_owned(),
                serde_json::json!({ "value": value, "source": origin.kind(), "from": from }),
            )
        })
        .collect();
    serde_json::json!({
        "file": r.file.as_ref().map(|p| p.display().to_string()),
        "settings": settings,
    })
}

fn non_empty_path(v: &str) -> Result<PathBuf, String> {
    if v.is_empty() { Err("an empty path".into()) } else { Ok(PathBuf::from(v)) }
}

/// The URLs of `--directory URL[,URL...]`: comma-separated, each trimmed,
/// each `http://` or `https://` with a host. Checked here rather than when
/// the channels are built so that a typo is a usage error (exit 2) naming
/// the entry, not a failed start.
pub fn directory_urls(raw: &str) -> Result<Vec<String>, Error> {
    directory_entries(raw.split(',')).map_err(|bad| {
        Error::Usage(match bad {
            BadEntry::Empty(_) => {
                format!("--directory {raw:?}: {bad}, or several separated by commas")
            }
            BadEntry::Invalid { .. } => format!("--directory {bad}"),
        })
    })
}

/// The file's `directory`: one string or a list, each maybe several URLs
/// separated by commas, checked as the flag's are; the error is worded for
/// the file (the caller adds its path, line and key).
fn file_directory_urls(list: &[String]) -> Result<Vec<String>, String> {
    if list.is_empty() {
        return Err(format!("an empty list; give {EXAMPLE_URL}, or a list of them"));
    }
    directory_entries(list.iter().flat_map(|entry| entry.split(','))).map_err(|bad| bad.to_string())
}

const EXAMPLE_URL: &str = "a URL such as http://127.0.0.1:7300";

/// What is wrong with one entry of a list of directory URLs (counted
/// from 1).
#[derive(Debug)]
enum BadEntry {
    Empty(usize),
    Invalid { which: usize, url: String, why: &'static str },
}

impl fmt::Display for BadEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadEntry::Empty(which) => write!(f, "entry {which} is empty; give {EXAMPLE_URL}"),
            BadEntry::Invalid { which, url, why } => {
                write!(f, "entry {which} {url:?} must be {EXAMPLE_URL} ({why})")
            }
        }
    }
}

fn directory_entries<'a>(entries: impl Iterator<Item = &'a str>) -> Result<Vec<String>, BadEntry> {
    let mut urls = Vec::new();
    for (i, entry) in entries.enumerate() {
        let url = entry.trim();
        let which = i + 1;
        if url.is_empty() {
            return Err(BadEntry::Empty(which));
        }
        let bad = |why| BadEntry::Invalid { which, url: url.to_owned(), why };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(bad("http:// or https://"));
        }
        let uri: Uri = url.parse().map_err(|_| bad("not a valid URL"))?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        urls.push(url.to_owned());
    }
    Ok(urls)
}

/// The control socket: the flag, or the default location.
pub fn socket_path(flag: Option<&Path>) -> PathBuf {
    match flag {
        Some(p) => p.to_path_buf(),
        None => paths::default_socket(dirs::runtime_dir().as_deref(), uid()),
    }
}

/// The control socket `peerd stop` talks to: the flag (or environment),
/// else the config file's, else the default location.
pub fn stop_socket(flag: Option<&Path>, config: Option<&Path>) -> Result<PathBuf, Error> {
    if let Some(p) = flag {
        return Ok(p.to_owned());
    }
    match read_file(config)? {
        Some(FileSettings { socket: Some(s), .. }) if !s.value.is_empty() => {
            Ok(PathBuf::from(s.value))
        }
        _ => Ok(socket_path(None)),
    }
}

pub(crate) fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// The login user's name, as the default peer name.
fn login_name() -> String {
    for var in ["USER", "LOGNAME"] {
        if let Ok(v) = std::env::var(var)
            && !v.is_empty()
        {
            return v;
        }
    }
    if uid() == 0 { "root".to_owned() } else { format!("user{}", uid()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    /// The settings of `peerd start ARGS`, and which of them the command
    /// line gave (as clap would say).
    fn settings(args: &[&str]) -> Settings {
        let mut argv = vec!["peerd", "start"];
        argv.extend_from_slice(args);
        match crate::cli::Cli::try_parse_from(argv).expect("valid flags").command {
            crate::cli::Command::Start(s) => s.settings,
            other => panic!("{other:?}"),
        }
    }

    fn file(text: &str) -> FileSettings {
        config_file::parse(Path::new("/c/config.toml"), text).expect("valid toml")
    }

    /// A setting that is a string, and its origin.
    fn origin<'a>(r: &'a Resolved, key: &str) -> (&'a str, &'a Origin) {
        let (_, v, o) = r.origins.iter().find(|(k, _, _)| *k == key).expect("every key");
        (v.as_str().expect("a string"), o)
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let f = file(
            "name = \"filed\"\nlisten = \"127.0.0.1:4000\"\naccept = \"ask\"\nresume_window = 5\n",
        );
        // --name on the command line, --listen from the environment.
        let s = settings(&["--name", "flagged", "--listen", "127.0.0.1:5000"]);
        let given = |id: &str| match id {
            "name" => Some(Given::Flag),
            "listen" => Some(Given::Env),
            _ => None,
        };
        let r = resolve_with(&s, &given, Some(&f)).expect("resolves");
        assert_eq!(r.config.name.as_str(), "flagged");
        assert_eq!(origin(&r, "name"), ("flagged", &Origin::Flag("--name")));
        assert_eq!(origin(&r, "listen"), ("127.0.0.1:5000", &Origin::Env("PEERCHAT_LISTEN")));
        let at = |line| Origin::File { path: "/c/config.toml".into(), line };
        assert_eq!(origin(&r, "accept"), ("ask", &at(3)));
        assert_eq!(r.config.accept, Policy::Ask);
        assert_eq!(r.config.resume_window, Duration::from_secs(5));
        assert_eq!(origin(&r, "directory"), ("http://127.0.0.1:7300", &Origin::Default));
        assert_eq!(r.file.as_deref(), Some(Path::new("/c/config.toml")));

        // In JSON a number is a number and an unset value null; in text
        // an unset value is `-`.
        let json = resolved_json(&r);
        assert_eq!(json["settings"]["resume_window"]["value"], 5);
        assert_eq!(json["settings"]["resume_window"]["from"], "/c/config.toml:4");
        assert_eq!(json["settings"]["advertise"]["value"], Value::Null);
        assert_eq!(json["settings"]["name"]["value"], "flagged");
        let text = resolved_text(&r);
        let line = |key: &str| {
            text.lines()
                .find(|l| l.starts_with(key))
                .map(str::split_whitespace)
                .map(Iterator::collect)
        };
        assert_eq!(
            line("resume_window"),
            Some(vec!["resume_window", "5", "(file", "/c/config.toml:4)"])
        );
        assert_eq!(line("advertise"), Some(vec!["advertise", "-", "(default)"]));
    }

    #[test]
    fn a_bad_file_value_names_the_file_line_and_key() {
        let s = settings(&["--name", "a"]);
        for (text, want) in [
            ("\nlisten = \"nope\"\n", "/c/config.toml:2: key `listen`: "),
            ("accept = \"sometimes\"\n", "/c/config.toml:1: key `accept`: "),
            ("resume_window = 0\n", "/c/config.toml:1: key `resume_window`: "),
            ("directory = [\"ftp://x\"]\n", "/c/config.toml:1: key `directory`: entry 1 \"ftp"),
            ("directory = []\n", "/c/config.toml:1: key `directory`: an empty list; give a URL"),
            (
                "directory = [\"http://a:1\", \" \"]\n",
                "/c/config.toml:1: key `directory`: entry 2 is empty; give a URL",
            ),
        ] {
            let e = resolve_with(&s, &|_| None, Some(&file(text))).expect_err(text).to_string();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
        // Commas inside a string of the file split it, as in the flag.
        let f = file("directory = [\"http://a:1,http://b:2\", \"http://c:3\"]\n");
        let r = resolve_with(&s, &|_| None, Some(&f)).expect("resolves");
        assert_eq!(r.config.directories, ["http://a:1", "http://b:2", "http://c:3"]);
        // A flag over a bad file value: the file's value is never looked at.
        let s = settings(&["--name", "a", "--accept", "all"]);
        let f = file("accept = \"sometimes\"\n");
        assert!(resolve_with(&s, &|_| Some(Given::Flag), Some(&f)).is_ok());
    }

    fn usage(raw: &str) -> String {
        match directory_urls(raw) {
            Err(Error::Usage(why)) => why,
            other => panic!("{raw:?} gave {other:?}, not a usage error"),
        }
    }

    #[test]
    fn one_directory_url_is_taken_as_it_is() {
        let urls = directory_urls("http://127.0.0.1:7300").expect("valid");
        assert_eq!(urls, ["http://127.0.0.1:7300"]);
    }

    #[test]
    fn several_directory_urls_are_split_on_commas_and_trimmed() {
        let urls = directory_urls(" http://10.0.0.1:7300 , https://dir-b:7300/,http://[::1]:7301 ")
            .expect("valid");
        assert_eq!(urls, ["http://10.0.0.1:7300", "https://dir-b:7300/", "http://[::1]:7301"]);
    }

    #[test]
    fn an_empty_directory_entry_is_a_usage_error_naming_it() {
        for (raw, which) in
            [("", 1), ("http://a:1,,http://b:2", 2), ("http://a:1,", 2), (" ,http://a:1", 1)]
        {
            let why = usage(raw);
            assert!(why.contains(&format!("entry {which} is empty")), "{raw:?}: {why}");
        }
    }

    #[test]
    fn every_directory_entry_must_be_http_or_https_with_a_host() {
        let why = usage("http://a:1, ftp://b:2");
        assert!(why.contains("entry 2") && why.contains("\"ftp://b:2\""), "{why}");
        assert!(why.contains("http:// or https://"), "{why}");
        assert!(usage("127.0.0.1:7300").contains("entry 1"));
        assert!(usage("http://a:1,http://").contains("entry 2"));
        assert!(usage("https://a b:1").contains("not a valid URL"));
    }
}
