//! The spend rollup: settled spend summed per UTC day x model x provider x task class x budget key
//! x tag set. Amounts are integer nano-USD, so a sum does not depend on the order rows are added or
//! grouped in and a report is exact to the cent against the ledgers (which record the same
//! settlements) for any grouping.
//!
//! Days are UTC days (a budget's period may follow a time zone; a report by month groups UTC days).
//! Rows older than [`RETENTION_DAYS`] are trimmed; the event log's own trimming never touches them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::Settled;

/// Days the rollup keeps: more than a year, so a month-end report and a year-on-year comparison
/// of the same month both work.
pub const RETENTION_DAYS: u32 = 400;
pub const DAY_MS: u64 = 86_400_000;
/// Nano-USD per USD: the rollup's unit (a per-call cost far below a cent stays exact enough, and a
/// u64 holds 18 billion USD).
pub const NANOS_PER_USD: f64 = 1e9;

/// The UTC day (days since the Unix epoch) of `ms`.
pub fn day_of(ms: u64) -> u32 {
    u32::try_from(ms / DAY_MS).unwrap_or(u32::MAX)
}

/// USD as nano-USD (negative or non-finite amounts count 0: a ledger never records them).
pub fn nanos(usd: f64) -> u64 {
    if usd.is_finite() && usd > 0.0 {
        (usd * NANOS_PER_USD).round() as u64
    } else {
        0
    }
}

/// One row's key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SpendKey {
    /// UTC day, days since the Unix epoch (first, so rows sort and trim by day).
    pub day: u32,
    pub model: String,
    pub provider: String,
    pub task_class: String,
    /// "" for calls charged to no budget.
    pub budget_key: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// The dimensions of a row after its day, in key order: how the store and the cluster's shared
/// rollup name a row.
type Dims = (String, String, String, String, BTreeMap<String, String>);

impl SpendKey {
    /// The row's dimensions after its day, as JSON.
    pub fn dims_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let dims: (&str, &str, &str, &str, &_) = (
            &self.model,
            &self.provider,
            &self.task_class,
            &self.budget_key,
            &self.tags,
        );
        serde_json::to_vec(&dims)
    }

    /// The key of day `day` and the dimensions [`SpendKey::dims_json`] wrote.
    pub fn from_dims(day: u32, json: &[u8]) -> Result<SpendKey, String> {
        let (model, provider, task_class, budget_key, tags): Dims =
            serde_json::from_slice(json).map_err(|e| e.to_string())?;
        Ok(SpendKey {
            day,
            model,
            provider,
            task_class,
            budget_key,
            tags,
        })
    }
}

/// One row's sums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendTotals {
    /// Settled spend, nano-USD.
    pub spend_nusd: u64,
    /// Settled model calls (first outcome of each model under a decision).
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl SpendTotals {
    pub fn add(&mut self, o: &SpendTotals) {
        self.spend_nusd = self.spend_nusd.saturating_add(o.spend_nusd);
        self.requests = self.requests.saturating_add(o.requests);
        self.input_tokens = self.input_tokens.saturating_add(o.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(o.output_tokens);
    }

    pub fn spend_usd(&self) -> f64 {
        self.spend_nusd as f64 / NANOS_PER_USD
    }

    /// Mean cost per settled call, USD (0 without calls).
    pub fn mean_cost_usd(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.spend_usd() / self.requests as f64
        }
    }
}

/// The row one settled call at `now_ms` adds to.
pub fn row_of(s: &Settled<'_>, now_ms: u64) -> (SpendKey, SpendTotals) {
    let key = SpendKey {
        day: day_of(now_ms),
        model: s.model.to_string(),
        provider: s.provider.to_string(),
        task_class: s.task_class.to_string(),
        budget_key: s.budget_key.to_string(),
        tags: s.tags.clone(),
    };
    let totals = SpendTotals {
        spend_nusd: nanos(s.usd),
        requests: 1,
        input_tokens: s.input_tokens,
        output_tokens: s.output_tokens,
    };
    (key, totals)
}

/// The rows, with the keys changed since the store last took them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rollup {
    rows: BTreeMap<SpendKey, SpendTotals>,
    dirty: BTreeSet<SpendKey>,
}

impl Rollup {
    /// A rollup of rows read back from the store (nothing dirty).
    pub fn restore(rows: impl IntoIterator<Item = (SpendKey, SpendTotals)>) -> Rollup {
        Rollup {
            rows: rows.into_iter().collect(),
            dirty: BTreeSet::new(),
        }
    }

    /// Adds one settled call on the UTC day of `now_ms`.
    pub fn add(&mut self, s: &Settled<'_>, now_ms: u64) {
        let (key, totals) = row_of(s, now_ms);
        self.rows.entry(key.clone()).or_default().add(&totals);
        self.dirty.insert(key);
    }

    /// Drops rows more than [`RETENTION_DAYS`] days before the day of `now_ms`; returns how many.
    pub fn trim(&mut self, now_ms: u64) -> usize {
        let oldest = day_of(now_ms).saturating_sub(RETENTION_DAYS);
        let old: Vec<SpendKey> = self
            .rows
            .keys()
            .take_while(|k| k.day < oldest)
            .cloned()
            .collect();
        for k in &old {
            self.rows.remove(k);
            self.dirty.insert(k.clone());
        }
        old.len()
    }

    /// Rows of days in `[since_day, until_day)`.
    pub fn range(
        &self,
        since_day: u32,
        until_day: u32,
    ) -> impl Iterator<Item = (&SpendKey, &SpendTotals)> {
        self.rows
            .iter()
            .skip_while(move |(k, _)| k.day < since_day)
            .take_while(move |(k, _)| k.day < until_day)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Changed rows since the last call (`None`: trimmed).
    pub fn take_changes(&mut self) -> Vec<(SpendKey, Option<SpendTotals>)> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|k| {
                let v = self.rows.get(&k).copied();
                (k, v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call<'a>(model: &'a str, usd: f64, tags: &'a BTreeMap<String, String>) -> Settled<'a> {
        Settled {
            model,
            provider: "p",
            task_class: "qa",
            budget_key: "team",
            tags,
            usd,
            input_tokens: 10,
            output_tokens: 5,
        }
    }

    #[test]
    fn sums_per_day_and_key_exactly_and_trims_past_the_retention() {
        let none = BTreeMap::new();
        let mut r = Rollup::default();
        // 0.1 + 0.2 is not 0.3 in f64; in nano-USD it is.
        r.add(&call("a", 0.1, &none), 5);
        r.add(&call("a", 0.2, &none), DAY_MS - 1);
        r.add(&call("b", 1.0, &none), DAY_MS);
        let day0: Vec<_> = r.range(0, 1).collect();
        assert_eq!(day0.len(), 1);
        assert_eq!(day0[0].1.spend_nusd, 300_000_000);
        assert_eq!((day0[0].1.requests, day0[0].1.input_tokens), (2, 20));
        let changed = r.take_changes();
        assert_eq!(changed.len(), 2);
        assert!(r.take_changes().is_empty());
        let restored = Rollup::restore(changed.into_iter().filter_map(|(k, v)| Some((k, v?))));
        assert_eq!(restored.rows, r.rows);
        // Day 400 keeps day 0; day 401 trims it.
        assert_eq!(r.trim(u64::from(RETENTION_DAYS) * DAY_MS), 0);
        assert_eq!(r.trim(u64::from(RETENTION_DAYS + 1) * DAY_MS), 1);
        assert_eq!(r.len(), 1);
        let gone = r.take_changes();
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].1, None);
    }

    #[test]
    fn negative_and_non_finite_amounts_count_zero() {
        assert_eq!(nanos(-1.0), 0);
        assert_eq!(nanos(f64::NAN), 0);
        assert_eq!(nanos(0.000_000_001), 1);
    }
}
