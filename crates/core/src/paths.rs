//! Where peerd keeps its files by default. Pure functions of the
//! environment's answers, so they can be tested without touching it.

use std::path::{Path, PathBuf};

/// The default control socket: `$XDG_RUNTIME_DIR/peerchat/peerd.sock`, or
/// `/tmp/peerchat-$UID/peerd.sock` where there is no runtime dir.
pub fn default_socket(runtime_dir: Option<&Path>, uid: u32) -> PathBuf {
    match runtime_dir {
        Some(dir) => dir.join("peerchat").join("peerd.sock"),
        None => PathBuf::from(format!("/tmp/peerchat-{uid}")).join("peerd.sock"),
    }
}

/// The default data dir of the peer `name_key` (a case-folded name):
/// `<user data dir>/peerchat/<name>`, or beside the socket's folder when
/// the platform has no data dir.
pub fn default_data_dir(data_dir: Option<&Path>, uid: u32, name_key: &str) -> PathBuf {
    match data_dir {
        Some(dir) => dir.join("peerchat").join(name_key),
        None => PathBuf::from(format!("/tmp/peerchat-{uid}")).join("data").join(name_key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_prefers_the_runtime_dir() {
        assert_eq!(
            default_socket(Some(Path::new("/run/user/1000")), 1000),
            Path::new("/run/user/1000/peerchat/peerd.sock")
        );
        assert_eq!(default_socket(None, 1000), Path::new("/tmp/peerchat-1000/peerd.sock"));
    }

    #[test]
    fn data_dir_is_per_name() {
        assert_eq!(
            default_data_dir(Some(Path::new("/home/a/.local/share")), 1, "bob"),
            Path::new("/home/a/.local/share/peerchat/bob")
        );
    }
}
