//! Upper confidence bounds over the same components as Thompson sampling: each component takes its
//! optimistic bound, mean + z_t * sd for success and quality, mean - z_t * sd (log scale) for latency
//! and cost, with z_t = exploration * sqrt(2 ln(1 + t)) and t the class's decayed evidence (the
//! Gaussian form of Bayes-UCB, Kaufmann, Cappé & Garivier 2012). Deterministic: propensity is 1.

use super::{argmax, Candidate, Choice, Sample, Utility, Z95};

/// The optimistic sample of one arm at confidence width `z`.
pub fn optimistic(c: &Candidate<'_>, z: f64) -> Sample {
    let arm = c.arm;
    let success = (arm.success.mean() + z * arm.success.variance().sqrt()).min(1.0);
    let quality = (arm.quality.mean() + z * arm.quality.variance().sqrt()).min(1.0) * c.health;
    let lat = arm.latency.params();
    let lat_sigma = (lat.beta / lat.alpha).sqrt();
    let lat_mu = lat.mu - z * arm.latency.mu_sd();
    let cost = arm.cost.params();
    let cost_mu = cost.mu - z * arm.cost.mu_sd();
    Sample {
        success,
        quality,
        cost_usd: arm.expected_cost(success, (cost_mu + 0.5 * cost.beta / cost.alpha).exp())
            * c.cost_scale,
        latency_ms: (lat_mu + 0.5 * lat_sigma * lat_sigma).exp(),
        latency_p95_ms: (lat_mu + Z95 * lat_sigma).exp(),
    }
}

/// Confidence width z_t for a class with total decayed evidence `t`.
pub fn width(exploration: f64, t: f64) -> f64 {
    exploration * (2.0 * (1.0 + t.max(0.0)).ln()).sqrt()
}

/// Picks the arm with the highest optimistic utility.
pub fn choose<S: Utility + ?Sized>(
    candidates: &[Candidate<'_>],
    scoring: &S,
    exploration: f64,
) -> Choice {
    let t: f64 = candidates.iter().map(|c| c.arm.success.evidence()).sum();
    let z = width(exploration, t);
    let index = argmax(
        candidates
            .iter()
            .map(|c| scoring.utility(&optimistic(c, z))),
    );
    Choice {
        index,
        propensity: 1.0,
        reason: "ucb",
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::Arm;
    use super::*;

    #[test]
    fn bounds_are_optimistic_and_shrink_with_evidence() {
        let sc = scoring();
        let mut arm = Arm::new(&prior(0.6, 800.0, 0.001), 0);
        let c = candidates(std::slice::from_ref(&arm))[0];
        let wide = optimistic(&c, 2.0);
        let mean = c.mean_sample();
        assert!(wide.quality > mean.quality);
        assert!(wide.latency_ms < mean.latency_ms);
        assert!(wide.cost_usd < mean.cost_usd);
        for _ in 0..200 {
            arm.observe_outcome(&success(0.6, 800.0, 0.001), &sc, 0);
            arm.observe_quality(0.6, 0);
        }
        let c = candidates(std::slice::from_ref(&arm))[0];
        let narrow = optimistic(&c, 2.0);
        assert!(narrow.quality - c.mean_sample().quality < wide.quality - mean.quality);
    }

    #[test]
    fn width_grows_like_sqrt_log() {
        assert_eq!(width(1.0, 0.0), 0.0);
        assert!((width(1.0, std::f64::consts::E - 1.0) - 2f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn untried_arm_is_explored_then_the_better_one_wins() {
        let sc = scoring();
        let mut tried = Arm::new(&prior(0.5, 500.0, 0.001), 0);
        for _ in 0..100 {
            tried.observe_outcome(&success(0.5, 500.0, 0.001), &sc, 0);
            tried.observe_quality(0.5, 0);
        }
        let fresh = Arm::new(&prior(0.5, 500.0, 0.001), 0);
        let arms = [tried, fresh];
        assert_eq!(choose(&candidates(&arms), &sc, 1.0).index, 1);
    }
}
