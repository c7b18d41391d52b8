//! The `min_propensity` exploration floor, and propensities when the served arm is not the chosen
//! one.
//!
//! # Floor
//! With total floor m in [0, 1) over k eligible arms, a decision takes the policy's choice with
//! probability 1 - m and a uniformly random arm with probability m, so arm i is served with
//! probability p_i = (1 - m) s_i + m / k, where s_i is the policy's own propensity: every eligible
//! arm keeps support of at least m / k, which off-policy estimates of other policies need.
//!
//! # Substitution
//! When a rule after the policy (the budget's "cheapest model that fits") may serve arm g(i)
//! instead of the chosen arm i, the probability of serving arm a is sum over i with g(i) = a of
//! p_i: every pool index (and every arm of the floor's uniform branch) is mapped through g, and
//! the logged propensity is that sum, not 1.
//!
//! The share vector s is exact for pooled Thompson (counted over the pool), for deterministic
//! policies (one-hot) and for uniform; for the others (Monte Carlo Thompson, epsilon-greedy when it
//! explores, the adaptive baseline) the chosen arm's share is the policy's own propensity and the
//! rest is spread evenly, an estimate.

use rand::Rng;

use super::{choose, thompson, Candidate, Choice, PolicyKind, PolicySettings, Utility};

/// p_i = (1 - m) s_i + m / k for every arm (m clamped to [0, 1]).
pub fn floored(shares: &[f64], min_propensity: f64) -> Vec<f64> {
    let m = min_propensity.clamp(0.0, 1.0);
    let k = shares.len() as f64;
    shares.iter().map(|s| (1.0 - m) * s + m / k).collect()
}

/// Probability that arm `served` is served when a choice of arm i (with probability `probs[i]`)
/// is served as `map(i)`.
pub fn served_propensity(probs: &[f64], served: usize, map: impl Fn(usize) -> usize) -> f64 {
    probs
        .iter()
        .enumerate()
        .filter(|&(i, _)| map(i) == served)
        .map(|(_, p)| p)
        .sum()
}

/// A floored decision with the probability of every arm, for [`served_propensity`].
#[derive(Debug, Clone, PartialEq)]
pub struct FlooredChoice {
    pub choice: Choice,
    pub probs: Vec<f64>,
}

/// Decides with the policy in `settings` under the floor `min_propensity` (see the module docs).
/// With one candidate or no floor the choice is the policy's own.
pub fn choose_floored<R: Rng + ?Sized, S: Utility + ?Sized>(
    settings: &PolicySettings,
    candidates: &[Candidate<'_>],
    scoring: &S,
    min_propensity: f64,
    rng: &mut R,
) -> FlooredChoice {
    let k = candidates.len();
    let pooled = match settings.kind {
        PolicyKind::Thompson if k > 1 => thompson::choose_with_shares(candidates, scoring, rng),
        _ => None,
    };
    let (inner, shares) = pooled.unwrap_or_else(|| {
        let inner = choose(settings, candidates, scoring, rng);
        let rest = if k > 1 {
            (1.0 - inner.propensity) / (k - 1) as f64
        } else {
            0.0
        };
        let shares = (0..k)
            .map(|i| {
                if i == inner.index {
                    inner.propensity
                } else {
                    rest
                }
            })
            .collect();
        (inner, shares)
    });
    let m = min_propensity.clamp(0.0, 1.0);
    if k <= 1 || m <= 0.0 {
        return FlooredChoice {
            choice: inner,
            probs: shares,
        };
    }
    let probs = floored(&shares, m);
    let (index, reason) = if rng.random::<f64>() < m {
        (rng.random_range(0..k), "exploration_floor")
    } else {
        (inner.index, inner.reason)
    };
    FlooredChoice {
        choice: Choice {
            index,
            propensity: probs[index],
            reason,
        },
        probs,
    }
}

#[cfg(test)]
mod tests {
    use super::super::pool::DrawPool;
    use super::super::test_support::*;
    use super::super::Arm;
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn settings() -> PolicySettings {
        PolicySettings {
            kind: PolicyKind::Thompson,
            propensity_samples: 64,
            ucb_exploration: 1.0,
            epsilon: 0.1,
        }
    }

    /// Three arms: one clearly best (wins every pool index), two hopeless.
    fn arms() -> Vec<Arm> {
        let mut good = Arm::new(&prior(0.5, 500.0, 0.001), 0);
        good.quality.s = 95.0;
        good.quality.f = 5.0;
        let mut bad = good.clone();
        bad.quality.s = 5.0;
        bad.quality.f = 95.0;
        vec![bad.clone(), good, bad]
    }

    #[test]
    fn floor_gives_every_arm_support_and_frequencies_match() {
        let sc = scoring();
        let arms = arms();
        let mut rng = SmallRng::seed_from_u64(9);
        let pools: Vec<DrawPool> = arms
            .iter()
            .map(|a| {
                let mut p = DrawPool::default();
                p.refresh(a, 64, 0, f64::INFINITY, &mut rng);
                p
            })
            .collect();
        let mut cands = candidates(&arms);
        for (c, p) in cands.iter_mut().zip(&pools) {
            c.pool = p.draws();
        }
        let m = 0.03;
        let n = 30_000;
        let mut picks = [0u32; 3];
        for _ in 0..n {
            let f = choose_floored(&settings(), &cands, &sc, m, &mut rng);
            assert!((f.probs.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            assert_eq!(f.choice.propensity, f.probs[f.choice.index]);
            assert!(f.probs.iter().all(|&p| p >= m / 3.0 - 1e-15));
            picks[f.choice.index] += 1;
        }
        let shares = thompson::pooled_shares(&cands, &sc).unwrap_or_default();
        let want = floored(&shares, m);
        for i in 0..3 {
            let freq = f64::from(picks[i]) / f64::from(n);
            // Binomial standard error <= 0.003 at n = 30 000.
            assert!(
                (freq - want[i]).abs() < 0.012,
                "arm {i}: {freq} vs {}",
                want[i]
            );
        }
        assert!(want[0] < 0.02 && want[0] > 0.0);
    }

    #[test]
    fn substitution_sums_the_probabilities_mapped_to_the_served_arm() {
        // Arms 1 and 2 do not fit the budget; the rule serves arm 0 (the cheapest) instead.
        let probs = [0.2, 0.5, 0.3];
        let rule = |_: usize| 0;
        assert!((served_propensity(&probs, 0, rule) - 1.0).abs() < 1e-12);
        let only_2_substituted = |i: usize| if i == 2 { 0 } else { i };
        assert!((served_propensity(&probs, 0, only_2_substituted) - 0.5).abs() < 1e-12);
        assert_eq!(served_propensity(&probs, 1, only_2_substituted), 0.5);
        assert_eq!(served_propensity(&probs, 2, only_2_substituted), 0.0);
    }

    #[test]
    fn no_floor_keeps_the_policys_choice() {
        let sc = scoring();
        let arms = arms();
        let cands = candidates(&arms);
        let mut s = settings();
        s.kind = PolicyKind::Ucb;
        let mut rng = SmallRng::seed_from_u64(1);
        let f = choose_floored(&s, &cands, &sc, 0.0, &mut rng);
        assert_eq!((f.choice.index, f.choice.propensity), (1, 1.0));
        assert_eq!(f.probs, vec![0.0, 1.0, 0.0]);
    }
}
