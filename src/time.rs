//! Time helpers shared by the engine, the server and the tools: Unix milliseconds now, and a Unix-ms
//! instant rendered for people in one place, so every message shows time the same way.

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat};

/// Unix milliseconds now (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
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
