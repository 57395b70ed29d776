//! What the daemon logs: `RUST_LOG` in its `target=level,...` form (e.g.
//! `debug` or `info,peerchat_peerd::link=trace`), else `info`.
//!
//! A `Targets` filter, not an `EnvFilter`: no span or field matching, and no
//! regex engine in the daemon (half a megabyte of code, most of it paged in
//! at start-up, when idle memory is mostly code pages).

use tracing_subscriber::filter::Targets;

/// The filter for `spec` (the value of `RUST_LOG`, if set). A spec that
/// does not parse gives the default and the reason, for a warning.
pub fn filter(spec: Option<&str>) -> (Targets, Option<String>) {
    let default = Targets::new().with_default(tracing::Level::INFO);
    match spec.map(str::trim) {
        Some(spec) if !spec.is_empty() => match spec.parse() {
            Ok(targets) => (targets, None),
            Err(e) => (default, Some(format!("ignoring RUST_LOG={spec:?}: {e}"))),
        },
        _ => (default, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn info_unless_told_otherwise() {
        for spec in [None, Some(""), Some("  ")] {
            let (f, warning) = filter(spec);
            assert!(f.would_enable("peerchat_peerd::driver", &Level::INFO), "{spec:?}");
            assert!(!f.would_enable("peerchat_peerd::driver", &Level::DEBUG), "{spec:?}");
            assert_eq!(warning, None);
        }
    }

    #[test]
    fn reads_levels_per_target() {
        let (f, warning) = filter(Some("warn,peerchat_peerd::link=trace"));
        assert_eq!(warning, None);
        assert!(f.would_enable("peerchat_peerd::link::dial", &Level::TRACE));
        assert!(!f.would_enable("peerchat_peerd::driver", &Level::INFO));
        assert!(f.would_enable("peerchat_peerd::driver", &Level::WARN));
    }

    #[test]
    fn a_spec_that_does_not_parse_falls_back_with_a_reason() {
        let (f, warning) = filter(Some("peerchat_peerd=loud"));
        assert!(f.would_enable("peerchat_peerd::driver", &Level::INFO));
        assert!(warning.is_some_and(|w| w.contains("RUST_LOG")));
    }
}
