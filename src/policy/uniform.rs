//! Uniform shuffle: every eligible arm with the same probability, 1/K (LiteLLM's "simple-shuffle"
//! without weights). The floor any learning policy must beat.

use rand::Rng;

use super::{Candidate, Choice};

pub fn choose<R: Rng + ?Sized>(candidates: &[Candidate<'_>], rng: &mut R) -> Choice {
    Choice {
        index: rng.random_range(0..candidates.len()),
        propensity: 1.0 / candidates.len() as f64,
        reason: "uniform",
    }
}
