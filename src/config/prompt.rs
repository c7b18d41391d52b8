//! The per-model `tokenizer` key and the per-class `max_output_tokens = { default, cap }` table:
//! how Route counts a prompt for a model, and how it governs the length of the answer.

use serde::Deserialize;

use super::{err, ConfigError};
use crate::prompt::tokens::Tokenizer;

/// A class's output-length governance: the `max_output_tokens` Route returns when the request
/// sends none, and the most it returns when the request asks for more. Callers apply the
/// returned value; the budget reservation assumes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimit {
    pub default_tokens: u64,
    pub cap_tokens: u64,
}

impl OutputLimit {
    /// The limit for a request that asked for `asked` tokens (`None`: it did not ask).
    pub fn govern(&self, asked: Option<u64>) -> u64 {
        asked.map_or(self.default_tokens, |a| a.min(self.cap_tokens))
    }
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutputLimit {
    default: i64,
    cap: i64,
}

impl RawOutputLimit {
    pub(super) fn validate(self, key: &str) -> Result<OutputLimit, ConfigError> {
        let max = super::MAX_TOKENS;
        if !(1..=max).contains(&self.cap) {
            return Err(err(
                format!("{key}.max_output_tokens.cap"),
                format!("must be an integer in [1, {max}], got {}", self.cap),
            ));
        }
        if !(1..=self.cap).contains(&self.default) {
            return Err(err(
                format!("{key}.max_output_tokens.default"),
                format!(
                    "must be an integer in [1, cap = {}], got {}",
                    self.cap, self.default
                ),
            ));
        }
        Ok(OutputLimit {
            default_tokens: self.default as u64,
            cap_tokens: self.cap as u64,
        })
    }
}

/// A model's tokenizer: the configured one, else the one its id implies.
pub(super) fn tokenizer(key: &str, id: &str, name: Option<&str>) -> Result<Tokenizer, ConfigError> {
    match name {
        None => Ok(Tokenizer::for_model(id)),
        Some(n) => named_tokenizer(&format!("{key}.tokenizer"), n),
    }
}

/// The tokenizer `name` names, for the config key `key`.
pub(super) fn named_tokenizer(key: &str, name: &str) -> Result<Tokenizer, ConfigError> {
    Tokenizer::parse(name).ok_or_else(|| {
        err(
            key,
            format!(
                "unknown tokenizer {}; expected one of: {}",
                crate::validation::echo(name),
                Tokenizer::ALL.map(Tokenizer::as_str).join(", ")
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn governance_defaults_and_caps() {
        let l = RawOutputLimit {
            default: 256,
            cap: 1024,
        }
        .validate("task_classes.qa")
        .unwrap();
        assert_eq!(l.govern(None), 256);
        assert_eq!(l.govern(Some(100)), 100);
        assert_eq!(l.govern(Some(5000)), 1024);
        let e = RawOutputLimit {
            default: 2000,
            cap: 1024,
        }
        .validate("task_classes.qa")
        .unwrap_err();
        assert_eq!(e.key, "task_classes.qa.max_output_tokens.default");
    }
}
