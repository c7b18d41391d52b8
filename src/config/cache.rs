//! `[task_classes.NAME] cache = { ... }`: a task class's response cache (see [`crate::cache`]),
//! as written in TOML and validated into [`CacheConfig`].

use serde::Deserialize;

use super::{err, ConfigError};

/// Cosine similarity a semantic hit needs by default: stricter than the 0.92 often quoted, because
/// a negated paraphrase ("enable 2FA" / "disable 2FA") scores high on most embeddings.
pub const DEFAULT_CACHE_SIMILARITY: f64 = 0.95;

/// Default lifetime of an entry: an hour keeps answers to time-sensitive questions from going
/// stale for long while still catching the bursts of repeats that make a cache pay.
pub const DEFAULT_CACHE_TTL_SECS: f64 = 3600.0;

/// Default bound on a class's entries: 10,000 entries of a few KiB each stay in tens of MiB.
pub const DEFAULT_CACHE_MAX_ENTRIES: u64 = 10_000;

/// Largest `max_entries`: the similarity index is searched exhaustively, measured fast up to here.
pub const MAX_CACHE_ENTRIES: u64 = 1_000_000;

/// Default bound on one stored response: 64 KiB holds a long answer; a larger one is not cached
/// (the caller can store a handle instead of the text).
pub const DEFAULT_CACHE_MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// Largest caller embedding dimension accepted (the widest common embedding models use 3072).
pub const MAX_EMBEDDING_DIMENSIONS: u64 = 4096;

/// How a class's cache matches a request to a stored response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// The same normalised prompt and request parameters.
    Exact,
    /// Cosine similarity of embeddings at or above `similarity`.
    Semantic,
}

impl CacheMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheMode::Exact => "exact",
            CacheMode::Semantic => "semantic",
        }
    }
}

/// A task class's response cache settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    pub mode: CacheMode,
    /// Entries expire this long after they were stored.
    pub ttl_secs: f64,
    /// Cosine similarity a semantic hit needs, in (0, 1].
    pub similarity: f64,
    /// Quality a response needs to be stored; `None` = a successful call suffices.
    pub min_quality: Option<f64>,
    /// Bound on entries; the least recently used goes first.
    pub max_entries: u64,
    /// Dimension of caller-sent embeddings; `None` = only the built-in lexical embedding.
    pub dimensions: Option<u64>,
    /// Largest response stored, in bytes.
    pub max_response_bytes: u64,
}

/// `cache = { ... }` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    mode: String,
    ttl_secs: Option<f64>,
    similarity: Option<f64>,
    min_quality: Option<f64>,
    max_entries: Option<i64>,
    dimensions: Option<i64>,
    max_response_bytes: Option<i64>,
}

impl RawCache {
    /// Validates the `cache` table of the task class at key path `class_key`, when there is one.
    pub(super) fn validate_in(
        raw: Option<RawCache>,
        class_key: &str,
    ) -> Result<Option<CacheConfig>, ConfigError> {
        raw.map(|c| c.validate(&format!("{class_key}.cache")))
            .transpose()
    }

    /// Validates the table at key path `key` (`task_classes.qa.cache`).
    pub(super) fn validate(self, key: &str) -> Result<CacheConfig, ConfigError> {
        let mode = match self.mode.as_str() {
            "exact" => CacheMode::Exact,
            "semantic" => CacheMode::Semantic,
            other => {
                return Err(err(
                    format!("{key}.mode"),
                    format!("must be \"exact\" or \"semantic\", got {other:?}"),
                ))
            }
        };
        let ttl_secs = self.ttl_secs.unwrap_or(DEFAULT_CACHE_TTL_SECS);
        if !(ttl_secs.is_finite() && ttl_secs > 0.0 && ttl_secs <= 365.0 * 86_400.0) {
            return Err(err(
                format!("{key}.ttl_secs"),
                format!("must be a number of seconds in (0, 31536000], got {ttl_secs}"),
            ));
        }
        let similarity = self.similarity.unwrap_or(DEFAULT_CACHE_SIMILARITY);
        if !(similarity.is_finite() && similarity > 0.0 && similarity <= 1.0) {
            return Err(err(
                format!("{key}.similarity"),
                format!("must be a cosine similarity in (0, 1] (e.g. 0.95), got {similarity}"),
            ));
        }
        if let Some(q) = self.min_quality {
            if !(q.is_finite() && (0.0..=1.0).contains(&q)) {
                return Err(err(
                    format!("{key}.min_quality"),
                    format!("must be a quality score in [0, 1], got {q}"),
                ));
            }
        }
        let bounded = |name: &str, v: Option<i64>, default: u64, max: u64| {
            let v = v.unwrap_or(default as i64);
            if v >= 1 && v as u64 <= max {
                Ok(v as u64)
            } else {
                Err(err(
                    format!("{key}.{name}"),
                    format!("must be an integer in [1, {max}], got {v}"),
                ))
            }
        };
        let max_entries = bounded(
            "max_entries",
            self.max_entries,
            DEFAULT_CACHE_MAX_ENTRIES,
            MAX_CACHE_ENTRIES,
        )?;
        let max_response_bytes = bounded(
            "max_response_bytes",
            self.max_response_bytes,
            DEFAULT_CACHE_MAX_RESPONSE_BYTES,
            16 * 1024 * 1024,
        )?;
        let dimensions = match self.dimensions {
            None => None,
            Some(d) => Some(bounded("dimensions", Some(d), 1, MAX_EMBEDDING_DIMENSIONS)?),
        };
        if mode == CacheMode::Exact && dimensions.is_some() {
            return Err(err(
                format!("{key}.dimensions"),
                "applies to mode = \"semantic\" only (an exact cache compares prompts, not \
                 embeddings); remove it or set mode = \"semantic\"",
            ));
        }
        Ok(CacheConfig {
            mode,
            ttl_secs,
            similarity,
            min_quality: self.min_quality,
            max_entries,
            dimensions,
            max_response_bytes,
        })
    }
}
