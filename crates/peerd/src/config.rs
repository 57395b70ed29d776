//! The daemon's resolved configuration: flags plus defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use peerchat_core::{Name, paths};

use crate::cli::StartArgs;
use crate::error::Error;

/// Everything `run` needs to know, with every default filled in.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: Name,
    pub directory: String,
    /// The directory's key fingerprint, for `https://` directories.
    pub directory_key: Option<String>,
    pub listen: SocketAddr,
    pub advertise: Option<SocketAddr>,
    pub socket: PathBuf,
    pub data_dir: PathBuf,
    /// How long a lost link may take to come back.
    pub resume_window: std::time::Duration,
}

impl Config {
    /// Resolves the flags of `peerd start`.
    pub fn from_args(args: &StartArgs) -> Result<Config, Error> {
        let raw_name = match &args.name {
            Some(n) => n.clone(),
            None => login_name(),
        };
        let name = Name::parse(&raw_name)?;
        if !(args.directory.starts_with("http://") || args.directory.starts_with("https://")) {
            return Err(Error::Usage(format!(
                "--directory {:?} must be a URL such as http://127.0.0.1:7300",
                args.directory
            )));
        }
        let data_dir = match &args.data_dir {
            Some(d) => d.clone(),
            None => paths::default_data_dir(dirs::data_dir().as_deref(), uid(), &name.key()),
        };
        Ok(Config {
            directory: args.directory.clone(),
            directory_key: args.directory_key.clone(),
            listen: args.listen,
            advertise: args.advertise,
            socket: socket_path(args.socket.as_deref()),
            resume_window: std::time::Duration::from_secs(args.resume_window),
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
