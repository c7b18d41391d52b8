//! The adaptive-router baseline, after LiteLLM's: Beta Thompson sampling on one scalar reward,
//! 0.7 quality + 0.3 (1 - normalised cost), evidence capped at 200 observations, no latency term and
//! no time decay. Propensity by Monte Carlo, as for Thompson sampling.

use rand::Rng;

use super::{argmax, Candidate, Choice};

pub fn choose<R: Rng + ?Sized>(candidates: &[Candidate<'_>], samples: u32, rng: &mut R) -> Choice {
    let draw = |rng: &mut R| argmax(candidates.iter().map(|c| c.arm.adaptive.sample(&mut *rng)));
    let index = draw(rng);
    let samples = samples.max(1);
    let wins = 1 + (1..samples).filter(|_| draw(rng) == index).count() as u32;
    Choice {
        index,
        propensity: f64::from(wins) / f64::from(samples),
        reason: "adaptive_sampled",
    }
}
