//! The engine's spend glue: every settled model call enters the spend rollup and the cost anomaly
//! detectors (`crate::spend`), and reports read the rollup. The amount counted is the one the
//! ledger recorded, so the rollup and the ledgers agree to the cent.

use std::collections::BTreeMap;

use crate::spend::report::{self, GroupBy, SpendGroup};
use crate::spend::{Deltas, Settled, SpendState, Spike};

use super::*;

/// One settled call, as the feedback paths describe it.
pub(super) struct SpendOf<'a> {
    pub model: &'a str,
    pub task_class: &'a str,
    pub budget_key: Option<&'a str>,
    pub tags: &'a BTreeMap<String, String>,
    pub usd: f64,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
}

impl Engine {
    /// Counts one settled call in the rollup and the detectors; spikes are kept for
    /// [`Engine::take_spikes`].
    pub(super) fn account_spend(&mut self, s: SpendOf<'_>, now_ms: u64) {
        let provider = self
            .config
            .models
            .get(s.model)
            .map_or("", |m| m.provider.as_str());
        let settled = Settled {
            model: s.model,
            provider,
            task_class: s.task_class,
            budget_key: s.budget_key.unwrap_or(""),
            tags: s.tags,
            usd: s.usd,
            input_tokens: s.input_tokens.unwrap_or(0),
            output_tokens: s.output_tokens.unwrap_or(0),
        };
        let spikes = self.spend.settle(&settled, &self.config.anomaly, now_ms);
        self.spikes.extend(spikes);
    }

    /// Cost anomalies detected since the last call, for the caller to deliver (the engine does no
    /// I/O).
    pub fn take_spikes(&mut self) -> Vec<Spike> {
        std::mem::take(&mut self.spikes)
    }

    /// Cluster mode: from now on settlements are also collected for the shared figures
    /// ([`Engine::take_spend_deltas`]) and the local detectors stay idle.
    pub fn share_spend(&mut self) {
        self.spend.shared.get_or_insert_with(Deltas::default);
    }

    /// What was settled since the last call (cluster mode; empty otherwise).
    pub fn take_spend_deltas(&mut self) -> Deltas {
        self.spend
            .shared
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The spend rollup and anomaly baselines.
    pub fn spend(&self) -> &SpendState {
        &self.spend
    }

    /// Spend of the UTC days `[since_ms, until_ms)` selects, grouped by `by`, over the rows whose
    /// budget key `visible` accepts ("" for calls charged to no budget).
    pub fn spend_report(
        &self,
        since_ms: u64,
        until_ms: u64,
        by: &[GroupBy],
        visible: impl Fn(&str) -> bool,
    ) -> Vec<SpendGroup> {
        let (since, until) = report::day_range(since_ms, until_ms);
        report::group(
            self.spend
                .rollup
                .range(since, until)
                .filter(|(k, _)| visible(&k.budget_key)),
            by,
        )
    }
}
