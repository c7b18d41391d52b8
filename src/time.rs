//! Time helpers shared by the engine, the server and the tools: Unix milliseconds now, and a Unix-ms
//! instant rendered for people in one place, so every message shows time the same way.
//!
//! Every server-side "now" (periods, ttls, tombstones, breakers, the decision log's age) is
//! [`now_ms`]. A build with the `test-clock` feature (only the crate's own test builds: Cargo.toml
//! enables it through a dev-dependency on the crate itself, so `cargo build` never has it) shifts
//! it by an offset a test sets: see [`TEST_CLOCK_ENV`]. That is how the binary tests move a budget
//! period or a pending ttl past its end without sleeping. The offset is not state: a restart reads
//! the file again.

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat};

/// Unix milliseconds now (0 if the clock is before 1970); in a `test-clock` build, shifted by the
/// test clock's offset.
pub fn now_ms() -> u64 {
    let real = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    shifted(real)
}

#[cfg(feature = "test-clock")]
fn shifted(ms: u64) -> u64 {
    ms.saturating_add_signed(test_clock::offset_ms())
}

#[cfg(not(feature = "test-clock"))]
fn shifted(ms: u64) -> u64 {
    ms
}

/// `test-clock` builds only: the environment variable naming a file whose content is the clock's
/// offset in milliseconds (a signed integer). Read at every [`now_ms`] (a test moves the clock by
/// rewriting it, and the next call sees the new offset); an unreadable or unparsable file keeps
/// the last offset read (0 at first).
#[cfg(feature = "test-clock")]
pub const TEST_CLOCK_ENV: &str = "SWITCHYARD_TEST_CLOCK_FILE";

#[cfg(feature = "test-clock")]
mod test_clock {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::OnceLock;

    static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();
    static LAST: AtomicI64 = AtomicI64::new(0);

    /// The offset the test set, 0 without [`super::TEST_CLOCK_ENV`].
    pub fn offset_ms() -> i64 {
        let file = FILE.get_or_init(|| {
            let file = std::env::var_os(super::TEST_CLOCK_ENV).map(PathBuf::from);
            if let Some(f) = &file {
                tracing::warn!(file = %f.display(), "test clock: now is shifted by the offset in this file");
            }
            file
        });
        let Some(path) = file else { return 0 };
        match std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse::<i64>().ok())
        {
            Some(v) => {
                LAST.store(v, Ordering::Relaxed);
                v
            }
            None => LAST.load(Ordering::Relaxed),
        }
    }
}

/// Unix ms as RFC 3339 UTC, for messages.
pub fn format_ms(ms: u64) -> String {
    DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// Unix ms as RFC 3339 UTC to whole seconds, for instants that fall on a second (budget period
/// bounds); an instant past what a calendar can show (an open-ended period's `u64::MAX` end)
/// reads "never".
pub fn format_secs(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .map_or_else(
            || "never".to_string(),
            |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
        )
}
