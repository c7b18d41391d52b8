//! The error a settings type's own `validate` returns: which field is wrong and why, as data, so
//! the configuration loader can put the field under its key path (`breaker.cooldown_secs`,
//! `budgets.team.limit_usd`) without reading the message.

/// One setting that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {message}")]
pub struct FieldError {
    /// The field's path inside the settings being checked, e.g. `cooldown_secs` or
    /// `alert_thresholds[2]`.
    pub field: String,
    /// What is wrong and what would be right, with the offending value.
    pub message: String,
}

impl FieldError {
    /// An error for `field` saying `message`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// How many characters of a caller's input an error message or log line echoes.
pub const MAX_ECHO_CHARS: usize = 200;

/// A caller's string as an error message or log line echoes it: quoted and escaped like `{:?}`,
/// cut to [`MAX_ECHO_CHARS`] characters with the full length noted, so that a huge input cannot
/// make a huge grpc-message (which clients refuse as oversized metadata) or flood the log.
pub fn echo(s: &str) -> String {
    match s.char_indices().nth(MAX_ECHO_CHARS) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes in all)", &s[..cut], s.len()),
    }
}

/// A caller's number as an error message echoes it: `{}` of a large f64 prints every digit
/// (1e300 is 301 characters), so it goes through [`echo`]'s cut without the quotes.
pub fn echo_number(v: f64) -> String {
    let s = v.to_string();
    match s.char_indices().nth(MAX_ECHO_CHARS) {
        None => s,
        Some(_) => format!("{v:e}"),
    }
}
