//! Message text limits: 1 to 65,536 bytes of UTF-8.
//!
//! The same check runs in chatctl (to fail fast with a clear message), in
//! peerd's control service (for any other client) and on every frame from a
//! peer (which is untrusted).

/// The largest message text, in bytes.
pub const MAX_TEXT_BYTES: usize = 65_536;

/// Why a text cannot be sent. The messages contain the words scripts match
/// on: `empty`, `too long`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("empty message: there is nothing to send")]
    Empty,
    #[error("message too long: {len} bytes, the limit is {MAX_TEXT_BYTES} bytes")]
    TooLong { len: usize },
}

/// Checks a message text. (`&str` is UTF-8 already; the wire decoder
/// rejects invalid UTF-8 before it gets here.)
pub fn check_text(text: &str) -> Result<(), TextError> {
    match text.len() {
        0 => Err(TextError::Empty),
        len if len > MAX_TEXT_BYTES => Err(TextError::TooLong { len }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive_in_bytes() {
        assert_eq!(check_text(""), Err(TextError::Empty));
        assert!(check_text("x").is_ok());
        assert!(check_text(&"x".repeat(MAX_TEXT_BYTES)).is_ok());
        let err = check_text(&"x".repeat(MAX_TEXT_BYTES + 1)).expect_err("too long");
        assert!(err.to_string().contains("too long"));
        assert!(err.to_string().contains("65536"));
        // Multi-byte characters count by bytes: 16,385 four-byte chars are too long.
        assert!(check_text(&"🦀".repeat(16_385)).is_err());
        assert!(check_text(&"🦀".repeat(16_384)).is_ok());
    }
}
