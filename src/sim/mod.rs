//! The offline simulator: drives the very same [`crate::engine::Engine`] as the service with
//! simulated time over synthetic scenarios, full-information traces and logged traffic, and reports
//! per policy utility, regret, cost, quality, SLA violations, budget overrun and recovery after events.
//!
//! Nothing here copies decision code: every simulated decision is `Engine::route` and every outcome
//! goes back through `Engine::feedback`, with the config built by `Config::from_toml_str`, so policy,
//! decay, breakers and budgets behave as they do in `serve`.
//!
//! # Layout
//! - [`scenario`]: scenario TOML (`[service]` config + `[truth]` + `[traffic]` + `[[events]]`),
//!   validated with errors that name the key and the bad value.
//! - [`trace`]: serde types of the two JSON Lines formats (full-information traces and logged
//!   traffic), readers and writers, the RouterArena importer, the scenario-to-trace generator.
//! - [`truth`]: the simulated world: what each model really does at a given time, the oracle's
//!   per-request expected utilities, and sampled outcomes.
//! - [`run`]: one policy, one seed: requests in simulated time, `route`, outcome, delayed `feedback`.
//! - [`metrics`]: per-run accumulation (utility, regret against oracle and best fixed model, cost,
//!   quality, SLA, failures, overrun, recovery time after each event) and across-seed summaries.
//! - [`offpolicy`]: logged-traffic evaluation: replay (Li et al. 2011), IPS, SNIPS, doubly robust,
//!   each with its effective sample size and a confidence interval.
//! - [`report`]: the terminal table, CSV and JSON; [`plot`]: SVG plots.
//! - [`tune`]: grid search over policy settings, writing a `[policy]` config fragment.
//! - [`anomaly`]: the cost anomaly scenario (a quiet month, then a traffic and a price spike).
//! - [`cli`]: the `simulate`, `tune` and `trace` subcommands.

pub mod anomaly;
pub mod cli;
pub mod frontier;
pub mod metrics;
pub mod offpolicy;
pub mod plot;
pub mod report;
pub mod run;
pub mod scenario;
pub mod trace;
pub mod truth;
pub mod tune;

/// Simulated time starts here: 2026-01-01T00:00:00Z in Unix milliseconds, so daily and monthly
/// budget periods begin with the simulation.
pub const SIM_EPOCH_MS: u64 = 1_767_225_600_000;

/// A simulator error: what is wrong and where (a key path, a file and line, a policy).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{context}: {message}")]
pub struct SimError {
    pub context: String,
    pub message: String,
}

impl SimError {
    pub fn new(context: impl Into<String>, message: impl Into<String>) -> Self {
        SimError {
            context: context.into(),
            message: message.into(),
        }
    }
}

impl From<crate::config::ConfigError> for SimError {
    fn from(e: crate::config::ConfigError) -> Self {
        SimError::new(e.key, e.message)
    }
}

/// Mixes a base seed with stream numbers (splitmix64 finaliser), so every (seed, run, model, request)
/// gets its own independent RNG stream whatever the thread count.
pub fn mix_seed(base: u64, parts: &[u64]) -> u64 {
    let mut x = base ^ 0x9E37_79B9_7F4A_7C15;
    for &p in parts {
        x = x
            .wrapping_add(p.wrapping_mul(0xBF58_476D_1CE4_E5B9))
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
    }
    x
}
