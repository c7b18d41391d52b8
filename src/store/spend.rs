//! The `spend` tree: the spend rollup's rows and the cost anomaly baselines, written in the
//! writer's cycle with the ledgers their settlement changed, read back at start-up and by
//! `switchyard report spend --data-dir`. Independent of the decision log: trimming the log never
//! touches it (the rollup trims itself after `spend::rollup::RETENTION_DAYS`).
//!
//! Keys: `r` + UTC day (4 bytes, big-endian, so rows sort and range by day) + the JSON of the
//! row's other dimensions; `a` + the JSON of (scope, name). Values are JSON.

use crate::spend::rollup::{Rollup, SpendKey, SpendTotals};
use crate::spend::{Baseline, Detectors, Scope, SpendChanges, SpendState};

use super::{Store, StoreError};

const ROW: u8 = b'r';
const BASELINE: u8 = b'a';

fn row_key(k: &SpendKey) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = vec![ROW];
    out.extend_from_slice(&k.day.to_be_bytes());
    out.extend(k.dims_json()?);
    Ok(out)
}

fn parse_row_key(k: &[u8]) -> Result<SpendKey, String> {
    let day = k
        .get(1..5)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or("row key shorter than its day")?;
    SpendKey::from_dims(day, &k[5..])
}

impl Store {
    /// Encodes changed rows (removing trimmed ones) and baselines.
    pub(super) fn encode_spend(&self, c: &SpendChanges) -> Result<super::Part, StoreError> {
        let mut b = super::Part::default();
        let bad = |what: &str, e: serde_json::Error| StoreError::Io {
            path: self.path.display().to_string(),
            detail: format!("cannot encode {what}: {e}"),
        };
        for (k, v) in &c.rows {
            let key = row_key(k).map_err(|e| bad("spend row key", e))?;
            match v {
                Some(t) => b.insert(key, serde_json::to_vec(t).map_err(|e| bad("spend row", e))?),
                None => b.remove(key),
            }
        }
        for ((scope, name), base) in &c.baselines {
            let mut key = vec![BASELINE];
            key.extend(serde_json::to_vec(&(scope, name)).map_err(|e| bad("baseline key", e))?);
            b.insert(
                key,
                serde_json::to_vec(base).map_err(|e| bad("baseline", e))?,
            );
        }
        Ok(b)
    }

    /// Rollup rows of the UTC days `[since_day, until_day)`.
    pub fn spend_rows(
        &self,
        since_day: u32,
        until_day: u32,
    ) -> Result<Vec<(SpendKey, SpendTotals)>, StoreError> {
        let bound = |d: u32| {
            let mut k = vec![ROW];
            k.extend_from_slice(&d.to_be_bytes());
            k
        };
        let mut out = Vec::new();
        let hi = if until_day == u32::MAX {
            vec![ROW + 1]
        } else {
            bound(until_day)
        };
        for kv in self.spend.range(bound(since_day)..hi) {
            let (k, v) = kv.map_err(|e| self.io(e))?;
            let key = parse_row_key(&k).map_err(|e| self.corrupt("spend", &k, e))?;
            let t = serde_json::from_slice(&v).map_err(|e| self.corrupt("spend", &k, e))?;
            out.push((key, t));
        }
        Ok(out)
    }

    /// The engine's spend state as persisted.
    pub(super) fn load_spend(&self) -> Result<SpendState, StoreError> {
        let rows = self.spend_rows(0, u32::MAX)?;
        let mut baselines = Vec::new();
        for kv in self.spend.scan_prefix([BASELINE]) {
            let (k, v) = kv.map_err(|e| self.io(e))?;
            let id: (Scope, String) =
                serde_json::from_slice(&k[1..]).map_err(|e| self.corrupt("spend", &k, e))?;
            let b: Baseline =
                serde_json::from_slice(&v).map_err(|e| self.corrupt("spend", &k, e))?;
            baselines.push((id, b));
        }
        Ok(SpendState {
            rollup: Rollup::restore(rows),
            detectors: Detectors::restore(baselines),
            shared: None,
        })
    }
}
