//! Tags: free-form labels a Route or Feedback carries (`user`, `feature`, `team`), stored on the
//! decision record and used by spend reports to group by any of them ("cost per user").
//!
//! Bounded because every distinct tag set is its own rollup row per day: a handful of short labels
//! keeps the rollup small; an unbounded map would let one caller grow it without limit.

use std::collections::BTreeMap;

use crate::validation::echo;

/// Most tags one decision carries (after a Feedback's tags are merged into the Route's).
pub const MAX_TAGS: usize = 8;
/// Longest tag name, characters: names are identifiers (`user`, `feature`), not data.
pub const MAX_TAG_KEY_CHARS: usize = 64;
/// Longest tag value, characters: enough for a user id, an email or a feature path.
pub const MAX_TAG_VALUE_CHARS: usize = 128;

/// Why a tag map was refused: the message names the tag and says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagError(pub String);

/// Checks a tag map against the limits.
pub fn check(tags: &BTreeMap<String, String>) -> Result<(), TagError> {
    if tags.len() > MAX_TAGS {
        return Err(TagError(format!(
            "has {} tags; at most {MAX_TAGS} are allowed (after merging a Feedback's tags into the \
             Route's)",
            tags.len()
        )));
    }
    for (k, v) in tags {
        let key_ok = !k.is_empty()
            && k.chars().count() <= MAX_TAG_KEY_CHARS
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !key_ok {
            return Err(TagError(format!(
                "tag name {} is invalid: use 1-{MAX_TAG_KEY_CHARS} characters of letters, digits \
                 and _-.",
                echo(k)
            )));
        }
        if v.chars().count() > MAX_TAG_VALUE_CHARS || v.chars().any(char::is_control) {
            return Err(TagError(format!(
                "tag {k:?} has value {}: use at most {MAX_TAG_VALUE_CHARS} characters, no control \
                 characters",
                echo(v)
            )));
        }
    }
    Ok(())
}

/// The decision's tags with a Feedback's merged in (the Feedback's value wins for a name both
/// carry), checked against the limits.
pub fn merged(
    decided: &BTreeMap<String, String>,
    reported: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, TagError> {
    let mut out = decided.clone();
    out.extend(reported.iter().map(|(k, v)| (k.clone(), v.clone())));
    check(&out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn limits_are_enforced_with_messages_that_say_what_is_allowed() {
        assert!(check(&map(&[("user", "u-1"), ("feature", "chat/summary")])).is_ok());
        let many: BTreeMap<String, String> = (0..=MAX_TAGS)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        assert!(check(&many).unwrap_err().0.contains("at most 8"));
        assert!(check(&map(&[("bad key", "v")]))
            .unwrap_err()
            .0
            .contains("letters, digits"));
        assert!(check(&map(&[("", "v")])).is_err());
        let long = "x".repeat(MAX_TAG_VALUE_CHARS + 1);
        assert!(check(&map(&[("user", &long)]))
            .unwrap_err()
            .0
            .contains("at most 128"));
        assert!(check(&map(&[("user", "a\nb")])).is_err());
        let long_key = "k".repeat(MAX_TAG_KEY_CHARS + 1);
        assert!(check(&map(&[(&long_key, "v")])).is_err());
    }

    #[test]
    fn feedback_tags_override_and_extend_the_routes() {
        let m = merged(
            &map(&[("user", "a"), ("team", "x")]),
            &map(&[("user", "b"), ("f", "y")]),
        )
        .unwrap();
        assert_eq!(m, map(&[("f", "y"), ("team", "x"), ("user", "b")]));
        let full: BTreeMap<String, String> = (0..MAX_TAGS)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        assert!(merged(&full, &map(&[("extra", "v")])).is_err());
    }
}
