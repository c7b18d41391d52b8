//! Static best: the arm whose configured priors (benchmark quality, typical latency, list price)
//! score best, never revised by feedback: what a team that hard-codes one model runs.
//! Deterministic: propensity 1.

use super::{argmax, Candidate, Choice};

pub fn choose(candidates: &[Candidate<'_>]) -> Choice {
    Choice {
        index: argmax(candidates.iter().map(|c| c.prior_utility)),
        propensity: 1.0,
        reason: "static_best",
    }
}
