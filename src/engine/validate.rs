//! Input validators shared by Route, Feedback and the budget glue; each error names the field.

use crate::config::MAX_ID_LEN;

use super::*;

pub(super) fn non_negative(field: &str, v: f64) -> Result<f64, EngineError> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(invalid(
            field,
            format!("must be a finite number >= 0, got {v}"),
        ))
    }
}

/// A token count: negative is an error, 0 means "not given".
pub(super) fn tokens(field: &str, v: i64) -> Result<Option<u64>, EngineError> {
    match v {
        v if v < 0 => Err(invalid(field, format!("must be >= 0, got {v}"))),
        0 => Ok(None),
        v => Ok(Some(v as u64)),
    }
}

pub(super) fn check_id(field: &str, id: &str) -> Result<(), EngineError> {
    if id.len() > MAX_ID_LEN {
        return Err(invalid(
            field,
            format!("must be at most {MAX_ID_LEN} bytes, got {}", id.len()),
        ));
    }
    Ok(())
}
