//! UCB1 (Auer, Cesa-Bianchi & Fischer 2002) on the observed reward in [0, 1]: mean + sqrt(2 ln n / n_i),
//! every arm tried once first. Undecayed, scalar: the textbook baseline. Deterministic: propensity 1.

use super::{argmax, Candidate, Choice};

pub fn choose(candidates: &[Candidate<'_>]) -> Choice {
    let total: f64 = candidates.iter().map(|c| c.arm.reward_n).sum();
    let index = argmax(candidates.iter().map(|c| {
        let n = c.arm.reward_n;
        if n <= 0.0 {
            f64::INFINITY
        } else {
            c.arm.reward_sum / n + (2.0 * total.max(1.0).ln() / n).sqrt()
        }
    }));
    Choice {
        index,
        propensity: 1.0,
        reason: "ucb1",
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::Arm;
    use super::*;

    #[test]
    fn index_matches_formula() {
        let mut a = Arm::new(&prior(0.5, 500.0, 0.001), 0);
        let mut b = a.clone();
        a.reward_sum = 6.0;
        a.reward_n = 10.0;
        b.reward_sum = 1.0;
        b.reward_n = 2.0;
        // a: 0.6 + sqrt(2 ln 12 / 10) = 1.3049; b: 0.5 + sqrt(2 ln 12 / 2) = 2.0764
        let arms = [a, b];
        assert_eq!(choose(&candidates(&arms)).index, 1);
        let c = Arm::new(&prior(0.5, 500.0, 0.001), 0);
        let arms = [arms[0].clone(), arms[1].clone(), c];
        assert_eq!(
            choose(&candidates(&arms)).index,
            2,
            "an untried arm goes first"
        );
    }
}
