//! Input validators shared by Route, Feedback and the budget glue; each error names the field, the
//! value (echoed at most [`crate::validation::MAX_ECHO_CHARS`] characters) and the allowed range.
//!
//! Every number is bounded, not only finite: a finite 1e200 cost becomes `inf` once summed or
//! squared inside an arm, and `inf` is neither a valid decision estimate nor storable state. The
//! bounds ([`MAX_LATENCY_MS`], [`MAX_TOKENS`], `limits.max_cost_usd_per_call`) are far above any
//! real call and keep every sum, mean and product of accepted values representable.

use crate::config::{MAX_ID_LEN, MAX_LATENCY_MS, MAX_TOKENS};
use crate::validation::echo_number;

use super::*;

/// A number in `[0, max]`; `what` says what the bound is, for the message.
pub(super) fn bounded(field: &str, v: f64, max: f64, what: &str) -> Result<f64, EngineError> {
    if v.is_finite() && (0.0..=max).contains(&v) {
        Ok(v)
    } else {
        Err(invalid(
            field,
            format!(
                "must be a finite number in [0, {}] ({what}), got {}",
                echo_number(max),
                echo_number(v)
            ),
        ))
    }
}

/// A latency in `[0, MAX_LATENCY_MS]`.
pub(super) fn latency(field: &str, v: f64) -> Result<f64, EngineError> {
    bounded(
        field,
        v,
        MAX_LATENCY_MS,
        "one day; a slower call is a TIMEOUT",
    )
}

/// A token count in `[0, MAX_TOKENS]`: 0 means "not given".
pub(super) fn tokens(field: &str, v: i64) -> Result<Option<u64>, EngineError> {
    match v {
        v if !(0..=MAX_TOKENS).contains(&v) => Err(invalid(
            field,
            format!("must be an integer in [0, {MAX_TOKENS}], got {v}"),
        )),
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

/// A Feedback's reported cost (bounded by `limits.max_cost_usd_per_call`) and token counts,
/// checked once for both the live and the late (tombstone) settlement paths.
pub(super) struct Reported {
    pub cost: Option<f64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
}

pub(super) fn reported(input: &FeedbackInput, max_cost: f64) -> Result<Reported, EngineError> {
    let count = |field: &str, v: Option<i64>| -> Result<Option<u64>, EngineError> {
        Ok(v.map(|v| tokens(field, v)).transpose()?.flatten())
    };
    Ok(Reported {
        cost: input
            .cost_usd
            .map(|v| bounded("cost_usd", v, max_cost, "limits.max_cost_usd_per_call"))
            .transpose()?,
        input_tokens: count("input_tokens", input.input_tokens)?,
        output_tokens: count("output_tokens", input.output_tokens)?,
    })
}
