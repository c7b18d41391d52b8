//! `switchyard tune`: a grid search over policy settings (decay half-life, prior strength,
//! exploration) on a scenario or trace, every candidate over the same seeds (common random numbers),
//! scored by mean total utility. The best is written as a `[policy]` config fragment that
//! `switchyard serve --config base.toml --config tuned.toml` layers over the base config.

use std::fmt::Write as _;

use serde::Serialize;

use super::metrics::Summary;
use super::run::{run_many, PolicySpec, Source};
use super::SimError;
use crate::policy::PolicyKind;

/// The grid to search.
#[derive(Debug, Clone, PartialEq)]
pub struct TuneSpace {
    pub kind: PolicyKind,
    /// `f64::INFINITY` = no decay.
    pub half_life_secs: Vec<f64>,
    pub prior_strength: Vec<f64>,
    /// `ucb_exploration` for ucb, `epsilon` for epsilon_greedy; ignored by other policies.
    pub exploration: Vec<f64>,
}

impl TuneSpace {
    /// The setting `exploration` maps to for this kind, if any.
    pub fn exploration_setting(&self) -> Option<&'static str> {
        match self.kind {
            PolicyKind::Ucb => Some("ucb_exploration"),
            PolicyKind::EpsilonGreedy => Some("epsilon"),
            _ => None,
        }
    }

    /// Every combination, as policy specs, in grid order.
    pub fn candidates(&self) -> Vec<PolicySpec> {
        let exploration: Vec<Option<f64>> = match self.exploration_setting() {
            Some(_) if !self.exploration.is_empty() => {
                self.exploration.iter().copied().map(Some).collect()
            }
            _ => vec![None],
        };
        let mut out = Vec::new();
        for &h in &self.half_life_secs {
            for &p in &self.prior_strength {
                for &e in &exploration {
                    let mut overrides = vec![
                        ("half_life_secs".to_string(), h),
                        ("prior_strength".to_string(), p),
                    ];
                    if let (Some(name), Some(v)) = (self.exploration_setting(), e) {
                        overrides.push((name.to_string(), v));
                    }
                    let label = format!(
                        "{}:{}",
                        self.kind.as_str(),
                        overrides
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(":")
                    );
                    out.push(PolicySpec::Engine {
                        label,
                        kind: self.kind,
                        overrides,
                        objective: None,
                    });
                }
            }
        }
        out
    }
}

/// One candidate's score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TuneCandidate {
    pub policy: String,
    pub overrides: Vec<(String, f64)>,
    pub total_utility: Summary,
    pub regret_oracle: Summary,
}

/// The search's result, best first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TuneResult {
    pub source: String,
    pub kind: String,
    pub seeds: usize,
    pub ranked: Vec<TuneCandidate>,
}

/// Scores every candidate of `space` over `seeds` seeds on `threads` threads.
pub fn tune(
    source: &Source,
    space: &TuneSpace,
    seeds: usize,
    base_seed: u64,
    threads: usize,
    progress: &(dyn Fn() + Sync),
) -> Result<TuneResult, SimError> {
    let candidates = space.candidates();
    if candidates.is_empty() {
        return Err(SimError::new(
            "tune",
            "the grid is empty: give at least one value per setting",
        ));
    }
    let runs = run_many(source, &candidates, seeds, base_seed, threads, progress)?;
    let mut ranked: Vec<TuneCandidate> = candidates
        .iter()
        .zip(&runs)
        .map(|(spec, r)| {
            let overrides = match spec {
                PolicySpec::Engine { overrides, .. } => overrides.clone(),
                PolicySpec::Oracle => Vec::new(),
            };
            TuneCandidate {
                policy: spec.label().to_string(),
                overrides,
                total_utility: Summary::of(&r.iter().map(|m| m.total_utility).collect::<Vec<_>>()),
                regret_oracle: Summary::of(&r.iter().map(|m| m.regret_oracle).collect::<Vec<_>>()),
            }
        })
        .collect();
    // Stable sort: ties keep grid order, so the result is deterministic.
    ranked.sort_by(|a, b| b.total_utility.mean.total_cmp(&a.total_utility.mean));
    Ok(TuneResult {
        source: source.name(),
        kind: space.kind.as_str().to_string(),
        seeds,
        ranked,
    })
}

impl TuneResult {
    /// The best setting as a config fragment (`[policy]` keys only).
    pub fn fragment(&self) -> String {
        let mut out = String::new();
        let Some(best) = self.ranked.first() else {
            return out;
        };
        let _ = writeln!(
            out,
            "# Written by `switchyard tune` on {:?}: best of {} settings over {} seeds,\n# mean total utility {:.4} ± {:.4}, regret vs oracle {:.4} ± {:.4}.\n# Load it over a base config: switchyard serve --config base.toml --config this.toml",
            self.source,
            self.ranked.len(),
            self.seeds,
            best.total_utility.mean,
            best.total_utility.ci95,
            best.regret_oracle.mean,
            best.regret_oracle.ci95
        );
        out.push_str("[policy]\n");
        let _ = writeln!(out, "kind = \"{}\"", self.kind);
        for (k, v) in &best.overrides {
            if v.is_infinite() {
                let _ = writeln!(out, "{k} = inf");
            } else if v.fract() == 0.0 {
                let _ = writeln!(out, "{k} = {v:.1}");
            } else {
                let _ = writeln!(out, "{k} = {v}");
            }
        }
        out
    }

    /// A table of the candidates, best first.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{}: {} candidates x {} seeds, best first\n",
            self.source,
            self.ranked.len(),
            self.seeds
        );
        for c in &self.ranked {
            let _ = writeln!(
                out,
                "{:60} utility {:>10.4} ± {:<8.4} regret {:>10.4} ± {:.4}",
                c.policy,
                c.total_utility.mean,
                c.total_utility.ci95,
                c.regret_oracle.mean,
                c.regret_oracle.ci95
            );
        }
        out
    }
}
