//! The user's config file, `$XDG_CONFIG_HOME/peerchat/config.toml`: what
//! peerd (and chatctl, for the socket) take when neither a flag nor an
//! environment variable says otherwise.
//!
//! ```toml
//! name = "alice"
//! directory = ["http://10.0.0.1:7300", "http://10.0.0.2:7300"]  # or one string
//! directory_key = "ABCD-..."
//! listen = "0.0.0.0:4000"
//! advertise = "203.0.113.7:4000"
//! accept = "known"          # all | known | ask
//! socket = "/run/user/1000/peerchat/peerd.sock"
//! data_dir = "/home/alice/.local/share/peerchat/alice"
//! resume_window = 30        # seconds
//! ```
//!
//! This module reads the file and keeps each value with the line it is on;
//! whoever uses a value checks it and, when it is wrong, names the file,
//! the line and the key ([`FileError`]). A file that is not TOML, or a
//! value of the wrong type, is an error here; a key we do not know is a
//! warning (a newer version's key must not stop an older daemon).

use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// The file's keys.
pub const KEYS: [&str; 9] = [
    "name",
    "directory",
    "directory_key",
    "listen",
    "advertise",
    "accept",
    "socket",
    "data_dir",
    "resume_window",
];

/// Files larger than this are refused rather than read.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// `<config dir>/peerchat/config.toml`, where the platform has a config
/// dir (on Linux `$XDG_CONFIG_HOME`, or `~/.config`).
pub fn default_path(config_dir: Option<&Path>) -> Option<PathBuf> {
    config_dir.map(|d| d.join("peerchat").join("config.toml"))
}

/// A value from the file and the line it is on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    pub value: T,
    pub line: usize,
}

/// What the file says; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSettings {
    pub path: PathBuf,
    pub name: Option<Setting<String>>,
    /// One URL or several.
    pub directory: Option<Setting<Vec<String>>>,
    pub directory_key: Option<Setting<String>>,
    pub listen: Option<Setting<String>>,
    pub advertise: Option<Setting<String>>,
    pub accept: Option<Setting<String>>,
    pub socket: Option<Setting<String>>,
    pub data_dir: Option<Setting<String>>,
    pub resume_window: Option<Setting<i64>>,
    /// Keys we do not know, each with its line: for a warning.
    pub unknown: Vec<(String, usize)>,
}

impl FileSettings {
    /// A warning for each unknown key, naming the file and line.
    pub fn warnings(&self) -> Vec<String> {
        self.unknown
            .iter()
            .map(|(key, line)| {
                format!("{}:{line}: unknown key `{key}` (ignored)", self.path.display())
            })
            .collect()
    }

    /// The error for a value of `key` on `line` that its user found wrong.
    pub fn error(&self, line: usize, key: &str, message: impl Into<String>) -> FileError {
        FileError {
            path: self.path.clone(),
            line: Some(line),
            key: Some(key.to_owned()),
            message: message.into(),
        }
    }
}

/// A config file that cannot be used: which file, where, which key, why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {}{message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default(), key.as_ref().map(|k| format!("key `{k}`: ")).unwrap_or_default())]
pub struct FileError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

/// Reads and parses the file at `path`; `Ok(None)` if there is none.
pub fn load(path: &Path) -> Result<Option<FileSettings>, FileError> {
    let fail =
        |message: String| FileError { path: path.to_owned(), line: None, key: None, message };
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(format!("cannot read it: {e}"))),
        // Not a FIFO or a device: opening one could wait, or never end.
        Ok(m) if !m.is_file() => return Err(fail("not a regular file".into())),
        Ok(m) if m.len() > MAX_FILE_BYTES => {
            return Err(fail(format!("larger than {MAX_FILE_BYTES} bytes")));
        }
        Ok(_) => {}
    }
    // Bounded again while reading: the file may have grown since.
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| fail(format!("cannot read it: {e}")))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(fail(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    parse(path, &text).map(Some)
}

/// `directory`: one URL or a list of them. Deserialized by hand rather
/// than as an untagged enum, so that a wrong value is reported by serde
/// with what is expected ("a URL string or a list of URL strings") instead
/// of serde's "did not match any variant", which would have to be
/// recognised by its text to be reworded.
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<OneOrMany, D::Error> {
        struct Urls;
        impl<'de> serde::de::Visitor<'de> for Urls {
            type Value = OneOrMany;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a URL string or a list of URL strings")
            }

            fn visit_str<E: serde::de::Error>(self, url: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(url.to_owned()))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrMany, A::Error> {
                let mut urls = Vec::new();
                while let Some(url) = seq.next_element::<String>()? {
                    urls.push(url);
                }
                Ok(OneOrMany::Many(urls))
            }
        }
        d.deserialize_any(Urls)
    }
}

#[derive(Deserialize)]
struct Raw {
    name: Option<Spanned<String>>,
    directory: Option<Spanned<OneOrMany>>,
    directory_key: Option<Spanned<String>>,
    listen: Option<Spanned<String>>,
    advertise: Option<Spanned<String>>,
    accept: Option<Spanned<String>>,
    socket: Option<Spanned<String>>,
    data_dir: Option<Spanned<String>>,
    resume_window: Option<Spanned<i64>>,
}

/// Parses the text of the file at `path`.
pub fn parse(path: &Path, text: &str) -> Result<FileSettings, FileError> {
    let lines = LineIndex::new(text);
    let error = |e: toml::de::Error| {
        let line = e.span().map(|s| lines.line(s.start));
        let key = line.and_then(|l| key_on_line(text, l));
        let message = e.message().trim().to_owned();
        FileError { path: path.to_owned(), line, key, message }
    };
    // Twice: once for the keys (to warn of unknown ones), once for the
    // values with their places.
    let table: toml::Table = toml::from_str(text).map_err(error)?;
    let raw: Raw = toml::from_str(text).map_err(error)?;
    let at = |span: Range<usize>| lines.line(span.start);
    fn take<T>(s: Option<Spanned<T>>, at: &dyn Fn(Range<usize>) -> usize) -> Option<Setting<T>> {
        s.map(|s| {
            let line = at(s.span());
            Setting { value: s.into_inner(), line }
        })
    }
    let mut unknown: Vec<(String, usize)> = table
        .keys()
        .filter(|k| !KEYS.contains(&k.as_str()))
        .map(|k| (k.clone(), line_of_key(text, k).unwrap_or(0)))
        .collect();
    unknown.sort_by_key(|(_, line)| *line);
    Ok(FileSettings {
        path: path.to_owned(),
        name: take(raw.name, &at),
        directory: take(raw.directory, &at).map(|s| Setting {
            value: match s.value {
                OneOrMany::One(url) => vec![url],
                OneOrMany::Many(urls) => urls,
            },
            line: s.line,
        }),
        directory_key: take(raw.directory_key, &at),
        listen: take(raw.listen, &at),
        advertise: take(raw.advertise, &at),
        accept: take(raw.accept, &at),
        socket: take(raw.socket, &at),
        data_dir: take(raw.data_dir, &at),
        resume_window: take(raw.resume_window, &at),
        unknown,
    })
}

/// Byte offsets to 1-based line numbers.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset).max(1)
    }
}

/// The key assigned on `line` (1-based), if the line is `key = ...`.
fn key_on_line(text: &str, line: usize) -> Option<String> {
    let l = text.lines().nth(line.checked_sub(1)?)?;
    let (key, _) = l.split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty() && !key.contains(char::is_whitespace)).then(|| key.to_owned())
}

/// The line on which `key` is assigned at the top level.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.split_once('=').is_some_and(|(k, _)| k.trim().trim_matches('"') == key)
                || l.trim() == format!("[{key}]")
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> FileSettings {
        parse(Path::new("/c/config.toml"), text).expect("valid")
    }

    fn failed(text: &str) -> FileError {
        parse(Path::new("/c/config.toml"), text).expect_err("invalid")
    }

    #[test]
    fn values_keep_their_lines() {
        let f = parsed(
            "# mine\nname = \"alice\"\n\ndirectory = \"http://a:1\"\naccept = \"ask\"\nresume_window = 10\n",
        );
        assert_eq!(f.name, Some(Setting { value: "alice".into(), line: 2 }));
        assert_eq!(f.directory, Some(Setting { value: vec!["http://a:1".into()], line: 4 }));
        assert_eq!(f.accept.map(|s| s.line), Some(5));
        assert_eq!(f.resume_window.map(|s| s.value), Some(10));
        assert!(f.listen.is_none() && f.unknown.is_empty());
    }

    #[test]
    fn directory_may_be_a_list() {
        let f = parsed("directory = [\n  \"http://a:1\",\n  \"http://b:2\",\n]\n");
        assert_eq!(
            f.directory.map(|s| s.value),
            Some(vec!["http://a:1".into(), "http://b:2".into()])
        );
    }

    #[test]
    fn unknown_keys_are_warnings_with_their_line() {
        let f = parsed("name = \"a\"\ncolour = \"blue\"\n");
        assert_eq!(f.unknown, vec![("colour".to_owned(), 2)]);
        assert_eq!(f.warnings(), vec!["/c/config.toml:2: unknown key `colour` (ignored)"]);
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_key() {
        let e = failed("name = \"a\"\nresume_window = \"soon\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("resume_window")), "{e}");
        assert!(e.to_string().starts_with("/c/config.toml:2: key `resume_window`: "), "{e}");
        let e = failed("name = \"a\"\nlisten = \n");
        assert_eq!(e.line, Some(2), "{e}");
        let e = failed("directory = 5\n");
        assert_eq!(e.key.as_deref(), Some("directory"), "{e}");
        assert_eq!(
            e.message, "invalid type: integer `5`, expected a URL string or a list of URL strings",
            "{e}"
        );
        let e = failed("directory = [\"http://a:1\", 2]\n");
        assert_eq!(e.key.as_deref(), Some("directory"), "{e}");
        assert!(e.message.starts_with("invalid type: integer `2`, expected a string"), "{e}");
        let f = parsed("listen = \"x\"\n");
        let e = f.error(1, "listen", "not an address");
        assert_eq!(e.to_string(), "/c/config.toml:1: key `listen`: not an address");
    }

    #[test]
    fn a_missing_file_is_no_file() {
        assert_eq!(load(Path::new("/nonexistent/peerchat/config.toml")), Ok(None));
        assert_eq!(
            default_path(Some(Path::new("/home/a/.config"))),
            Some(PathBuf::from("/home/a/.config/peerchat/config.toml"))
        );
    }

    #[test]
    fn only_a_regular_file_of_bounded_size_is_read() {
        let dir = std::env::temp_dir();
        let e = load(&dir).expect_err("a directory");
        assert_eq!(e.message, "not a regular file", "{e}");
        let e = load(Path::new("/dev/zero")).expect_err("a device that never ends");
        assert_eq!(e.message, "not a regular file", "{e}");
    }
}
