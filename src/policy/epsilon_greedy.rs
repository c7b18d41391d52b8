//! Epsilon-greedy (Sutton & Barto, ch. 2): with probability epsilon a uniformly random arm, otherwise
//! the arm with the best posterior-mean utility. The propensity is exact:
//! (1 - epsilon) [greedy] + epsilon / K.

use rand::Rng;

use super::{argmax, Candidate, Choice, Utility};

pub fn choose<R: Rng + ?Sized, S: Utility + ?Sized>(
    candidates: &[Candidate<'_>],
    scoring: &S,
    epsilon: f64,
    rng: &mut R,
) -> Choice {
    let k = candidates.len() as f64;
    let greedy = argmax(candidates.iter().map(|c| scoring.utility(&c.mean_sample())));
    let explore = rng.random::<f64>() < epsilon;
    let index = if explore {
        rng.random_range(0..candidates.len())
    } else {
        greedy
    };
    let propensity = if index == greedy {
        1.0 - epsilon + epsilon / k
    } else {
        epsilon / k
    };
    Choice {
        index,
        propensity,
        reason: if explore { "explore" } else { "exploit" },
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::Arm;
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn frequencies_match_exact_propensities() {
        let sc = scoring();
        let good = Arm::new(&prior(0.9, 500.0, 0.001), 0);
        let bad = Arm::new(&prior(0.3, 500.0, 0.001), 0);
        let arms = [bad.clone(), good, bad];
        let cands = candidates(&arms);
        let mut rng = SmallRng::seed_from_u64(11);
        let n = 20_000;
        let mut counts = [0u32; 3];
        for _ in 0..n {
            let c = choose(&cands, &sc, 0.3, &mut rng);
            counts[c.index] += 1;
            let expected = if c.index == 1 { 0.8 } else { 0.1 };
            assert!((c.propensity - expected).abs() < 1e-12);
        }
        let f = f64::from(counts[1]) / f64::from(n);
        assert!((f - 0.8).abs() < 0.01, "{f}");
    }
}
