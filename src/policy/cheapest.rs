//! Cheapest: always the arm with the lowest expected cost for this request (posterior mean of
//! ln(cost), which starts at the price table). Deterministic: propensity 1.

use super::{argmax, Candidate, Choice};

pub fn choose(candidates: &[Candidate<'_>]) -> Choice {
    Choice {
        index: argmax(candidates.iter().map(|c| -c.mean_sample().cost_usd)),
        propensity: 1.0,
        reason: "cheapest",
    }
}
