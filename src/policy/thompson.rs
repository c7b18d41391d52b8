//! Thompson sampling over the weighted utility (Thompson 1933; Chapelle & Li 2011): draw every
//! component of every arm from its posterior, score the draw, pick the best.
//!
//! When every candidate carries a pool of posterior draws (see [`super::pool`]), the decision
//! scores pool index `j`, drawn uniformly, and the propensity is exactly the share of indices the
//! chosen arm wins. Without pools, the propensity is a Monte Carlo estimate: the decision is the
//! first of `samples` independent draws, and the propensity is the share of all draws that the
//! chosen arm wins; that estimate is never 0 (the decision's own draw counts) and its standard
//! error is at most 0.5 / sqrt(samples).

use rand::Rng;

use super::{argmax, Candidate, Choice, Utility};

/// Picks the winner of one Thompson draw and estimates its propensity from `samples` draws.
pub fn choose<R: Rng + ?Sized, S: Utility + ?Sized>(
    candidates: &[Candidate<'_>],
    scoring: &S,
    samples: u32,
    rng: &mut R,
) -> Choice {
    if let Some(k) = pool_size(candidates) {
        return choose_pooled(candidates, scoring, k, rng);
    }
    let samplers: Vec<_> = candidates.iter().map(|c| c.sampler()).collect();
    let draw = |rng: &mut R| -> usize {
        argmax(
            samplers
                .iter()
                .map(|s| scoring.utility(&s.sample(&mut *rng))),
        )
    };
    let index = draw(rng);
    let samples = samples.max(1);
    let mut wins = 1u32;
    for _ in 1..samples {
        if draw(rng) == index {
            wins += 1;
        }
    }
    Choice {
        index,
        propensity: f64::from(wins) / f64::from(samples),
        reason: "sampled",
    }
}

/// Thompson over equal-size pools: score index `j ~ U{0..k}`; the propensity is the exact share
/// of indices the winner at `j` wins (ties to the earliest candidate, as [`argmax`]).
fn choose_pooled<R: Rng + ?Sized, S: Utility + ?Sized>(
    candidates: &[Candidate<'_>],
    scoring: &S,
    k: usize,
    rng: &mut R,
) -> Choice {
    let winners = winners(candidates, scoring, k);
    pick(&winners, &shares(&winners, candidates.len()), rng)
}

/// The pooled decision and every candidate's share together, from one pass over the pools (the
/// `min_propensity` floor needs both; scoring the pools once halves the cost of a decision), or
/// None without equal-size pools. Draws from `rng` exactly as [`choose`] does.
pub fn choose_with_shares<R: Rng + ?Sized, S: Utility + ?Sized>(
    candidates: &[Candidate<'_>],
    scoring: &S,
    rng: &mut R,
) -> Option<(Choice, Vec<f64>)> {
    let k = pool_size(candidates)?;
    let winners = winners(candidates, scoring, k);
    let shares = shares(&winners, candidates.len());
    Some((pick(&winners, &shares, rng), shares))
}

/// Every candidate's exact pooled propensity (the share of pool indices it wins, ties to the
/// earliest), or None when the candidates do not all carry pools of one size.
pub fn pooled_shares<S: Utility + ?Sized>(
    candidates: &[Candidate<'_>],
    scoring: &S,
) -> Option<Vec<f64>> {
    let k = pool_size(candidates)?;
    Some(shares(&winners(candidates, scoring, k), candidates.len()))
}

/// The common pool size of the candidates, if they all carry one (non-empty).
fn pool_size(candidates: &[Candidate<'_>]) -> Option<usize> {
    let k = candidates.first().map_or(0, |c| c.pool.len());
    (k > 0 && candidates.iter().all(|c| c.pool.len() == k)).then_some(k)
}

/// The winning candidate at each of the `k` pool indices (every candidate's pool holds `k`
/// draws): [`argmax`] at each index, ties to the earliest candidate, a NaN never winning.
///
/// Scored a candidate at a time over its whole pool, a column at a time
/// ([`Utility::utilities`], packed arithmetic): k x candidates utilities per decision, the
/// largest part of a Route's engine work. Run through `pulp`'s dispatch, so that the loops are
/// compiled for the widest vectors the CPU has (AVX2 on x86-64 where present: four doubles an
/// instruction instead of SSE2's two). The arithmetic is the same IEEE operations in the same
/// order either way (Rust never fuses a multiply and an add), so every utility is the same number
/// on every CPU. Only a NaN's sign bit may differ between the two compilations (LLVM does not
/// keep it), and no comparison sees it: a NaN never wins either way. So the winners and the
/// propensities are the same.
fn winners<S: Utility + ?Sized>(candidates: &[Candidate<'_>], scoring: &S, k: usize) -> Vec<usize> {
    pulp::Arch::new().dispatch(Winners {
        candidates,
        scoring,
        k,
    })
}

/// [`winners`] as a `pulp` operation: only code inlined into its `with_simd` is compiled with
/// the detected features, hence the `inline(always)` here and on the `utilities` it calls.
struct Winners<'a, 'c, S: ?Sized> {
    candidates: &'a [Candidate<'c>],
    scoring: &'a S,
    k: usize,
}

impl<S: Utility + ?Sized> pulp::WithSimd for Winners<'_, '_, S> {
    type Output = Vec<usize>;

    #[inline(always)]
    fn with_simd<V: pulp::Simd>(self, _: V) -> Vec<usize> {
        scored_winners(self.candidates, self.scoring, self.k)
    }
}

#[inline(always)]
fn scored_winners<S: Utility + ?Sized>(
    candidates: &[Candidate<'_>],
    scoring: &S,
    k: usize,
) -> Vec<usize> {
    let mut best = vec![0usize; k];
    let mut best_value = vec![f64::NEG_INFINITY; k];
    let mut utility = vec![0.0; k];
    for (i, c) in candidates.iter().enumerate() {
        // Every pool holds k draws (`pool_size`): the precondition of `utilities`.
        scoring.utilities(c.pool, c.health, c.cost_scale, &mut utility);
        // Both stores unconditional (selects, not branches), so that this loop is packed too.
        let slots = best.iter_mut().zip(best_value.iter_mut()).zip(&utility);
        for ((b, v), &u) in slots {
            let wins = u > *v;
            *v = if wins { u } else { *v };
            *b = if wins { i } else { *b };
        }
    }
    best
}

/// Each of `n` candidates' share of the pool indices it wins.
fn shares(winners: &[usize], n: usize) -> Vec<f64> {
    let mut wins = vec![0usize; n];
    for &w in winners {
        wins[w] += 1;
    }
    let k = winners.len().max(1) as f64;
    wins.into_iter().map(|w| w as f64 / k).collect()
}

/// The winner at a uniformly drawn pool index, with its share as the propensity.
fn pick<R: Rng + ?Sized>(winners: &[usize], shares: &[f64], rng: &mut R) -> Choice {
    let index = winners[rng.random_range(0..winners.len())];
    Choice {
        index,
        propensity: shares[index],
        reason: "sampled",
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::Arm;
    use super::super::Sample;
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    /// Two arms with overlapping quality posteriors: Beta(6, 4) vs Beta(5, 5), equal cost/latency.
    fn overlapping_arms() -> [Arm; 2] {
        let mut a = Arm::new(&prior(0.5, 500.0, 0.001), 0);
        let mut b = a.clone();
        a.quality.s = 5.0;
        a.quality.f = 3.0;
        b.quality.s = 4.0;
        b.quality.f = 4.0;
        [a, b]
    }

    #[test]
    fn selection_frequency_matches_propensity() {
        let sc = scoring();
        let arms = overlapping_arms();
        let cands = candidates(&arms);
        let mut rng = SmallRng::seed_from_u64(42);
        let n = 4000;
        let mut picks = 0;
        let mut propensity_sum = 0.0;
        for _ in 0..n {
            let c = choose(&cands, &sc, 64, &mut rng);
            if c.index == 0 {
                picks += 1;
                propensity_sum += c.propensity;
            }
        }
        let freq = f64::from(picks) / f64::from(n);
        let mean_propensity = propensity_sum / f64::from(picks);
        assert!(freq > 0.5 && freq < 0.8, "frequency {freq}");
        // The propensity estimates the frequency the arm is chosen with.
        assert!(
            (mean_propensity - freq).abs() < 0.03,
            "{mean_propensity} vs {freq}"
        );
    }

    /// A value for one draw component: ordinary most of the time, else one of the values that
    /// take a different path through the scoring (NaN, infinities, zeros, huge, exactly the
    /// normalisation cap or a limit).
    fn component<R: Rng>(rng: &mut R, ordinary: f64) -> f64 {
        match rng.random_range(0..12) {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => f64::NEG_INFINITY,
            3 => 0.0,
            4 => -0.0,
            5 => 1e300,
            6 => 0.05,   // cost_ref x the cap: lands on MAX_NORMALISED_TERM exactly
            7 => 2000.0, // the SLA below
            _ => ordinary * rng.random::<f64>(),
        }
    }

    /// [`Utility::utilities`] through `pulp`'s dispatch, as [`winners`] calls it.
    struct Dispatched<'a, 'c, S: ?Sized> {
        scoring: &'a S,
        candidate: &'a Candidate<'c>,
        out: &'a mut [f64],
    }

    impl<S: Utility + ?Sized> pulp::WithSimd for Dispatched<'_, '_, S> {
        type Output = ();

        #[inline(always)]
        fn with_simd<V: pulp::Simd>(self, _: V) {
            let c = self.candidate;
            self.scoring
                .utilities(c.pool, c.health, c.cost_scale, self.out);
        }
    }

    #[test]
    fn scoring_a_pool_by_columns_gives_every_draws_utility_bit_for_bit_and_the_same_winners() {
        use super::super::objective::{RequestScoring, Valuation};
        use super::super::pool::Columns;
        let mut rng = SmallRng::seed_from_u64(11);
        let arms = overlapping_arms();
        for round in 0..400 {
            let k = rng.random_range(1..70);
            let n_cands = rng.random_range(1..5);
            let mut pools: Vec<Columns> = Vec::new();
            for _ in 0..n_cands {
                pools.push(
                    (0..k)
                        .map(|_| Sample {
                            success: component(&mut rng, 1.0),
                            quality: component(&mut rng, 1.0),
                            cost_usd: component(&mut rng, 0.01),
                            latency_ms: component(&mut rng, 5000.0),
                            latency_p95_ms: component(&mut rng, 8000.0),
                        })
                        .collect(),
                );
            }
            let mut sc = scoring();
            sc.max_latency_ms = rng.random_bool(0.5).then_some(2000.0);
            sc.max_cost_usd = rng.random_bool(0.5).then(|| rng.random::<f64>() * 0.01);
            let rs = RequestScoring {
                scoring: sc,
                valuation: if round % 2 == 0 {
                    Valuation::Weights
                } else {
                    Valuation::Money {
                        usd_per_quality: 0.5,
                        usd_per_second: 0.01,
                    }
                },
            };
            let cands: Vec<Candidate<'_>> = (0..n_cands)
                .map(|i| {
                    let mut c = candidates(&arms)[i % 2];
                    c.health = if rng.random_bool(0.3) { 0.5 } else { 1.0 };
                    c.cost_scale = [1.0, 0.3, 7.5, 0.0][rng.random_range(0..4)];
                    c.pool = &pools[i];
                    c
                })
                .collect();
            // Each scaled draw scored alone, by the scalar `utility` of each scoring.
            let one = |c: &Candidate<'_>, j: usize| c.scale(&c.pool.sample(j));
            for c in &cands {
                let mut out = vec![0.0; k];
                rs.utilities(c.pool, c.health, c.cost_scale, &mut out);
                let mut plain = vec![0.0; k];
                sc.utilities(c.pool, c.health, c.cost_scale, &mut plain);
                // As `winners` runs it: compiled for the CPU's widest vectors (AVX2 here if it
                // has them).
                let mut wide = vec![0.0; k];
                pulp::Arch::new().dispatch(Dispatched {
                    scoring: &rs,
                    candidate: c,
                    out: &mut wide,
                });
                for j in 0..k {
                    let scaled = one(c, j);
                    assert_eq!(
                        out[j].to_bits(),
                        rs.utility(&scaled).to_bits(),
                        "{scaled:?}"
                    );
                    // The same number, bit for bit; of a NaN, only that it is one (its sign
                    // bit is not kept by the compiler, and no comparison sees it).
                    let want = rs.utility(&scaled);
                    assert!(
                        wide[j].to_bits() == want.to_bits() || wide[j].is_nan() && want.is_nan(),
                        "dispatched: {} against {want} for {scaled:?}",
                        wide[j]
                    );
                    assert_eq!(
                        plain[j].to_bits(),
                        sc.utility(&scaled).to_bits(),
                        "{scaled:?}"
                    );
                }
            }
            let expected: Vec<usize> = (0..k)
                .map(|j| argmax(cands.iter().map(|c| rs.utility(&one(c, j)))))
                .collect();
            assert_eq!(winners(&cands, &rs, k), expected, "round {round}");
        }
    }

    #[test]
    fn a_clearly_better_arm_wins_almost_always() {
        let sc = scoring();
        let mut good = Arm::new(&prior(0.5, 500.0, 0.001), 0);
        let mut bad = good.clone();
        good.quality.s = 90.0;
        good.quality.f = 10.0;
        bad.quality.s = 30.0;
        bad.quality.f = 70.0;
        let arms = [bad, good];
        let cands = candidates(&arms);
        let mut rng = SmallRng::seed_from_u64(7);
        let c = choose(&cands, &sc, 200, &mut rng);
        assert_eq!(c.index, 1);
        assert!(c.propensity > 0.99);
        assert_eq!(c.reason, "sampled");
    }

    #[test]
    fn pooled_choice_frequency_equals_its_exact_propensity() {
        use super::super::pool::DrawPool;
        let sc = scoring();
        let arms = overlapping_arms();
        let mut rng = SmallRng::seed_from_u64(5);
        let mut pa = DrawPool::default();
        let mut pb = DrawPool::default();
        pa.refresh(&arms[0], 64, 0, f64::INFINITY, &mut rng);
        pb.refresh(&arms[1], 64, 0, f64::INFINITY, &mut rng);
        let mut cands = candidates(&arms);
        cands[0].pool = pa.draws();
        cands[1].pool = pb.draws();
        // With fixed pools every decision has the same propensity for each arm; they sum to 1 and
        // the observed frequency converges to them.
        let n = 20_000;
        let mut picks = [0u32; 2];
        let mut propensity = [None::<f64>; 2];
        for _ in 0..n {
            let c = choose(&cands, &sc, 64, &mut rng);
            picks[c.index] += 1;
            if let Some(p) = propensity[c.index] {
                assert_eq!(p, c.propensity);
            }
            propensity[c.index] = Some(c.propensity);
        }
        let p0 = propensity[0].unwrap_or(0.0);
        let p1 = propensity[1].unwrap_or(0.0);
        assert!((p0 + p1 - 1.0).abs() < 1e-12, "{p0} + {p1}");
        let freq = f64::from(picks[0]) / f64::from(n);
        // Binomial standard error at n = 20 000 is <= 0.0036.
        assert!((freq - p0).abs() < 0.015, "{freq} vs {p0}");
        assert!(p0 > 0.5 && p0 < 0.95, "{p0}");
    }

    #[test]
    fn winners_are_the_argmax_at_each_pool_index_ties_to_the_first_and_never_nan() {
        use super::super::pool::{Columns, DrawPool};
        use super::super::Sample;
        let sc = scoring();
        let mut rng = SmallRng::seed_from_u64(11);
        let arms = [
            Arm::new(&prior(0.5, 500.0, 0.001), 0),
            Arm::new(&prior(0.55, 450.0, 0.002), 0),
            Arm::new(&prior(0.6, 700.0, 0.001), 0),
        ];
        let mut draws: Vec<Vec<Sample>> = arms
            .iter()
            .map(|a| {
                let mut p = DrawPool::default();
                p.refresh(a, 64, 0, f64::INFINITY, &mut rng);
                (0..64).map(|j| p.draws().sample(j)).collect()
            })
            .collect();
        // A tie between the last two at index 3 (the earlier wins), a NaN at index 5 (never wins).
        draws[2][3] = draws[1][3];
        draws[1][5].quality = f64::NAN;
        let pools: Vec<Columns> = draws.iter().map(|d| d.iter().copied().collect()).collect();
        let mut cands = candidates(&arms);
        for (c, p) in cands.iter_mut().zip(&pools) {
            c.pool = p;
        }
        let expected: Vec<usize> = (0..64)
            .map(|j| {
                argmax(
                    draws
                        .iter()
                        .zip(&cands)
                        .map(|(d, c)| sc.utility(&c.scale(&d[j]))),
                )
            })
            .collect();
        assert_eq!(winners(&cands, &sc, 64), expected);
        assert_ne!(expected[3], 2, "the tie goes to the earlier candidate");
        assert_ne!(expected[5], 1, "a NaN utility never wins");
        assert!(expected.iter().any(|&w| w != expected[0]), "{expected:?}");
    }
}
