//! The daemon's resolved configuration: flags plus defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use peerchat_core::{Name, paths};
use tonic::transport::Uri;

use crate::cli::StartArgs;
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
    pub resume_window: std::time::Duration,
    /// Who may open a conversation without asking the user.
    pub accept: Policy,
}

impl Config {
    /// Resolves the flags of `peerd start`.
    pub fn from_args(args: &StartArgs) -> Result<Config, Error> {
        let raw_name = match &args.name {
            Some(n) => n.clone(),
            None => login_name(),
        };
        let name = Name::parse(&raw_name)?;
        let directories = directory_urls(&args.directory)?;
        let data_dir = match &args.data_dir {
            Some(d) => d.clone(),
            None => paths::default_data_dir(dirs::data_dir().as_deref(), uid(), &name.key()),
        };
        Ok(Config {
            directories,
            directory_key: args.directory_key.clone(),
            listen: args.listen,
            advertise: args.advertise,
            socket: socket_path(args.socket.as_deref()),
            resume_window: std::time::Duration::from_secs(args.resume_window),
            accept: args.accept,
            data_dir,
            name,
        })
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

/// The URLs of `--directory URL[,URL...]`: comma-separated, each trimmed,
/// each `http://` or `https://` with a host. Checked here rather than when
/// the channels are built so that a typo is a usage error (exit 2) naming
/// the entry, not a failed start.
pub fn directory_urls(raw: &str) -> Result<Vec<String>, Error> {
    let example = "a URL such as http://127.0.0.1:7300";
    let mut urls = Vec::new();
    for (i, entry) in raw.split(',').enumerate() {
        let url = entry.trim();
        let which = i + 1;
        if url.is_empty() {
            return Err(Error::Usage(format!(
                "--directory {raw:?}: entry {which} is empty; give {example}, or several \
                 separated by commas"
            )));
        }
        let bad = |why: &str| {
            Error::Usage(format!("--directory entry {which} {url:?} must be {example} ({why})"))
        };
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
