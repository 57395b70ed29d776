//! Peer names: who may call themselves what.
//!
//! A name is 1 to 32 ASCII letters, digits, `_`, `-` or `.`, starting with a
//! letter or digit. Names compare case-insensitively ("Bob" and "bob" are the
//! same peer), but a peer is shown with the case it registered with. Because
//! of these rules a valid name is also a safe file name (no `/`, never `.` or
//! `..`), which the history store relies on.

use std::fmt;
use std::sync::Arc;

/// The longest valid name, in bytes (and characters: names are ASCII).
pub const MAX_NAME_LEN: usize = 32;

/// Why a string is not a valid name. Every message contains `invalid name`,
/// the words scripts match on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("invalid name: a name cannot be empty")]
    Empty,
    #[error("invalid name: {len} characters is longer than the limit of {MAX_NAME_LEN}")]
    TooLong { len: usize },
    #[error("invalid name {name:?}: it must start with an ASCII letter or digit")]
    BadStart { name: String },
    #[error(
        "invalid name {name:?}: only ASCII letters, digits, '_', '-' and '.' are allowed, not {bad:?}"
    )]
    BadChar { name: String, bad: char },
}

/// A valid peer name, keeping the case it was written with. Shared, not
/// copied: every message, receipt and history line names its peer, and a
/// clone is a reference count, not an allocation.
#[derive(Debug, Clone, Eq)]
pub struct Name(Arc<str>);

impl Name {
    /// Checks `s` against the name rules.
    pub fn parse(s: &str) -> Result<Name, NameError> {
        let len = s.chars().count();
        if len == 0 {
            return Err(NameError::Empty);
        }
        if len > MAX_NAME_LEN {
            return Err(NameError::TooLong { len });
        }
        let mut chars = s.chars();
        if !chars.next().is_some_and(|c| c.is_ascii_alphanumeric()) {
            return Err(NameError::BadStart { name: s.to_owned() });
        }
        if let Some(bad) =
            chars.find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            return Err(NameError::BadChar { name: s.to_owned(), bad });
        }
        Ok(Name(Arc::from(s)))
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The case-folded form: the key for maps, file names and comparisons.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }

    /// True when `other` names the same peer.
    pub fn matches(&self, other: &str) -> bool {
        self.0.eq_ignore_ascii_case(other)
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }
}

impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for b in self.0.bytes() {
            state.write_u8(b.to_ascii_lowercase());
        }
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Name, NameError> {
        Name::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in ["a", "Bob", "alice_2", "x-y.z", "9lives", &"a".repeat(32)] {
            assert!(Name::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else_with_invalid_name() {
        let cases =
            ["", &"a".repeat(33), "_bob", ".", "..", "-x", "bob smith", "bob/..", "bøb", "a\0"];
        for bad in cases {
            let err = Name::parse(bad).expect_err(bad);
            assert!(err.to_string().contains("invalid name"), "{err}");
        }
    }

    #[test]
    fn compares_case_insensitively_but_keeps_case() {
        let a = Name::parse("Bob").expect("valid");
        let b = Name::parse("bOB").expect("valid");
        assert_eq!(a, b);
        assert_eq!(a.key(), "bob");
        assert_eq!(a.to_string(), "Bob");
        assert!(a.matches("BOB"));
    }
}
