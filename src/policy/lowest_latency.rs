//! Lowest latency, as LiteLLM's latency-based routing does it: the mean of each deployment's last 10
//! latencies per output token, greedy, with untried deployments at 0 so they are tried first.
//! Deterministic: propensity 1.

use super::{argmax, Candidate, Choice};

pub fn choose(candidates: &[Candidate<'_>]) -> Choice {
    Choice {
        index: argmax(candidates.iter().map(|c| -c.arm.moving_latency())),
        propensity: 1.0,
        reason: "lowest_latency",
    }
}
