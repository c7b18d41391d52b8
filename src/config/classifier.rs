//! `[classifier]`: the ordered prompt rules and the default class, as written in TOML, validated
//! into a [`Classifier`] (regexes compiled, keyword lists turned into one whole-word pattern,
//! every class checked against `[task_classes]`). `switchyard classify --rules FILE` reads the
//! same table from a file of its own, where the classes need not be configured.
//!
//! `encoding` names what `min_tokens` / `max_tokens` count in (`o200k_base`, `cl100k_base` or
//! `estimate`; default `o200k_base`): one encoding for every rule, since no model is chosen yet
//! when the classifier runs (see [`crate::prompt::classify`]).
//!
//! ```toml
//! [classifier]
//! default = "qa"
//! encoding = "o200k_base"
//! [[classifier.rules]]
//! name = "fenced-code"
//! class = "code"
//! code = true
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{err, ConfigError, TaskClassConfig};
use crate::prompt::classify::{Classifier, Conditions, Pattern, Rule, DEFAULT_ENCODING};

/// Most rules a classifier may hold (matching walks them in order for every prompt).
pub const MAX_CLASSIFIER_RULES: usize = 256;

/// Longest regex source accepted, in bytes (the `regex` crate bounds compiled size too).
pub const MAX_PATTERN_BYTES: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClassifier {
    default: Option<String>,
    encoding: Option<String>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    class: String,
    regex: Option<String>,
    not_regex: Option<String>,
    keywords: Option<Vec<String>>,
    min_chars: Option<i64>,
    max_chars: Option<i64>,
    min_tokens: Option<i64>,
    max_tokens: Option<i64>,
    code: Option<bool>,
    math: Option<bool>,
}

impl RawClassifier {
    /// Validates the table; with `classes`, every class named must be configured.
    pub(super) fn validate(
        self,
        classes: Option<&BTreeMap<String, std::sync::Arc<TaskClassConfig>>>,
    ) -> Result<Classifier, ConfigError> {
        let known = |key: &str, class: &str| -> Result<(), ConfigError> {
            match classes {
                Some(c) if !c.contains_key(class) => Err(err(
                    key,
                    format!(
                        "unknown task class {class:?}; configured classes: {}",
                        c.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )),
                _ => Ok(()),
            }
        };
        let default_class = self.default.ok_or_else(|| {
            err(
                "classifier.default",
                "is required: the task class of a prompt no rule matches, e.g. default = \"qa\"",
            )
        })?;
        known("classifier.default", &default_class)?;
        let encoding = match &self.encoding {
            Some(name) => super::prompt::named_tokenizer("classifier.encoding", name)?,
            None => DEFAULT_ENCODING,
        };
        if self.rules.len() > MAX_CLASSIFIER_RULES {
            return Err(err(
                "classifier.rules",
                format!(
                    "at most {MAX_CLASSIFIER_RULES} rules, got {}",
                    self.rules.len()
                ),
            ));
        }
        let mut rules: Vec<Rule> = Vec::with_capacity(self.rules.len());
        for (i, r) in self.rules.into_iter().enumerate() {
            let key = format!("classifier.rules[{i}]");
            if r.name.is_empty() || r.name.len() > 128 {
                return Err(err(format!("{key}.name"), "must be 1-128 characters"));
            }
            if rules.iter().any(|x| x.name == r.name) {
                return Err(err(
                    format!("{key}.name"),
                    format!("rule name {:?} is used twice; names must be unique", r.name),
                ));
            }
            known(&format!("{key}.class"), &r.class)?;
            let rule = r.validate(&key)?;
            rules.push(rule);
        }
        Ok(Classifier {
            rules,
            default_class,
            encoding,
        })
    }
}

impl RawRule {
    fn validate(self, key: &str) -> Result<Rule, ConfigError> {
        let pattern =
            |field: &str, source: Option<String>| -> Result<Option<Pattern>, ConfigError> {
                let Some(source) = source else {
                    return Ok(None);
                };
                if source.len() > MAX_PATTERN_BYTES {
                    return Err(err(
                        format!("{key}.{field}"),
                        format!("at most {MAX_PATTERN_BYTES} bytes, got {}", source.len()),
                    ));
                }
                Pattern::new(&source).map(Some).map_err(|e| {
                    err(
                        format!("{key}.{field}"),
                        format!("is not a valid regex (Rust `regex` syntax): {e}"),
                    )
                })
            };
        let count = |field: &str, v: Option<i64>| -> Result<Option<u64>, ConfigError> {
            match v {
                None => Ok(None),
                Some(v) if v >= 0 => Ok(Some(v as u64)),
                Some(v) => Err(err(
                    format!("{key}.{field}"),
                    format!("must be an integer >= 0, got {v}"),
                )),
            }
        };
        let keywords =
            match self.keywords {
                None => None,
                Some(k) if k.is_empty() || k.iter().any(|w| w.trim().is_empty()) => {
                    return Err(err(
                        format!("{key}.keywords"),
                        "must list at least one keyword, none of them empty",
                    ))
                }
                Some(k) => Some(Pattern::keywords(&k).map_err(|e| {
                    err(format!("{key}.keywords"), format!("cannot be matched: {e}"))
                })?),
            };
        let when = Conditions {
            regex: pattern("regex", self.regex)?,
            not_regex: pattern("not_regex", self.not_regex)?,
            keywords,
            min_chars: count("min_chars", self.min_chars)?,
            max_chars: count("max_chars", self.max_chars)?,
            min_tokens: count("min_tokens", self.min_tokens)?,
            max_tokens: count("max_tokens", self.max_tokens)?,
            code: self.code,
            math: self.math,
        };
        for (field, min, max) in [
            ("chars", when.min_chars, when.max_chars),
            ("tokens", when.min_tokens, when.max_tokens),
        ] {
            if let (Some(lo), Some(hi)) = (min, max) {
                if lo > hi {
                    return Err(err(
                        format!("{key}.min_{field}"),
                        format!("must be <= max_{field} ({hi}), got {lo}"),
                    ));
                }
            }
        }
        if when.is_empty() {
            return Err(err(
                key,
                "a rule needs at least one condition (regex, not_regex, keywords, min_chars, \
                 max_chars, min_tokens, max_tokens, code or math); the default class catches \
                 what no rule matches",
            ));
        }
        Ok(Rule {
            name: self.name,
            class: self.class,
            when,
        })
    }
}

/// A rules file for `switchyard classify`: a TOML file with a `[classifier]` table (a whole
/// config file works too: its other tables are ignored), validated without checking classes.
pub fn rules_from_toml(text: &str) -> Result<Classifier, ConfigError> {
    let table: toml::Table =
        toml::from_str(text).map_err(|e| err("rules", format!("is not valid TOML: {e}")))?;
    let Some(section) = table.get("classifier") else {
        return Err(err(
            "classifier",
            "the rules file has no [classifier] table (default class and [[classifier.rules]])",
        ));
    };
    let raw: RawClassifier = section
        .clone()
        .try_into()
        .map_err(|e| err("classifier", e.to_string()))?;
    raw.validate(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rules_file_parses_and_classifies() {
        let c = rules_from_toml(
            r#"
            [classifier]
            default = "qa"
            [[classifier.rules]]
            name = "sql"
            class = "code"
            regex = "(?i)\\bselect\\b.+\\bfrom\\b"
            [[classifier.rules]]
            name = "tiny"
            class = "chat"
            max_chars = 10
            "#,
        )
        .unwrap();
        assert_eq!(c.classes(), vec!["code", "chat", "qa"]);
        let class = |t: &str| c.classify(t, || 0, |_| true).map(|x| x.class);
        assert_eq!(class("select a from b"), Some("code"));
        assert_eq!(class("hi"), Some("chat"));
        assert_eq!(class("What is the tallest mountain?"), Some("qa"));
    }

    #[test]
    fn errors_name_the_rule_key_and_what_is_right() {
        let e = |text: &str| rules_from_toml(text).unwrap_err().to_string();
        let bad_regex = e(r#"
            [classifier]
            default = "qa"
            [[classifier.rules]]
            name = "x"
            class = "qa"
            regex = "(unclosed"
            "#);
        assert!(
            bad_regex.starts_with("classifier.rules[0].regex: is not a valid regex"),
            "{bad_regex}"
        );
        let empty = e(r#"
            [classifier]
            default = "qa"
            [[classifier.rules]]
            name = "x"
            class = "qa"
            "#);
        assert!(empty.contains("at least one condition"), "{empty}");
        let no_default = e("[classifier]\nrules = []\n");
        assert!(
            no_default.starts_with("classifier.default: is required"),
            "{no_default}"
        );
        let inverted = e(r#"
            [classifier]
            default = "qa"
            [[classifier.rules]]
            name = "x"
            class = "qa"
            min_tokens = 10
            max_tokens = 5
            "#);
        assert!(
            inverted.contains("min_tokens: must be <= max_tokens (5)"),
            "{inverted}"
        );
    }

    #[test]
    fn the_encoding_defaults_to_o200k_base_and_unknown_names_are_refused() {
        let rules = |encoding: &str| {
            rules_from_toml(&format!(
                "[classifier]\ndefault = \"qa\"\n{encoding}\n[[classifier.rules]]\n\
                 name = \"long\"\nclass = \"long\"\nmin_tokens = 10\n"
            ))
        };
        assert_eq!(rules("").unwrap().encoding.as_str(), "o200k_base");
        for name in ["o200k_base", "cl100k_base", "estimate"] {
            let c = rules(&format!("encoding = \"{name}\"")).unwrap();
            assert_eq!(c.encoding.as_str(), name);
        }
        let e = rules("encoding = \"p50k_base\"").unwrap_err().to_string();
        assert_eq!(
            e,
            "classifier.encoding: unknown tokenizer \"p50k_base\"; expected one of: \
             o200k_base, cl100k_base, estimate"
        );
    }
}
