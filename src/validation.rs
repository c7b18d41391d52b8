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
