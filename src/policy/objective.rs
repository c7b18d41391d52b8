//! What a class optimises: today's weighted utility, a utility stated in money, or the least cost
//! at a quality target.
//!
//! # Money-denominated trade-offs
//! A class (or request) may say what things are worth instead of giving dimensionless weights:
//! `value_usd_per_quality` v_q (USD one fully correct answer is worth) and `value_usd_per_second`
//! v_s. An arm's draw then scores
//!
//! ```text
//! U_usd = v_q * success * quality - cost_usd - v_s * latency_s - P * violations
//! ```
//!
//! in USD, with no reference scales: `cost = 0.003` means three tenths of a cent. A broken SLA or
//! cost cap costs P = penalty x (v_q + MAX_NORMALISED_TERM x cost_ref): the penalty's share of a
//! perfect answer plus fifty typical calls, so that, as in the weighted utility, a violation
//! dominates any trade-off between quality and cost.
//!
//! # Least cost at a quality target (`objective = "min_cost"`)
//! Goal: over the class's traffic, minimise mean cost subject to mean quality >= t x q*, with
//! q* the quality (success x quality) of the class's best arm by posterior mean. Over a static
//! mix x (a distribution over arms) this is the linear programme
//!
//! ```text
//! min_x sum_i x_i c_i   s.t.   sum_i x_i q_i >= t q*,   sum_i x_i = 1,
//! ```
//!
//! whose optimum has at most two arms in its support (one equality constraint besides the simplex),
//! which is why a per-request "cheapest arm above the floor" rule cannot reach it. Its Lagrangian
//! is L(x, lambda) = sum_i x_i (c_i - lambda q_i) + lambda t q*, so for a fixed multiplier lambda
//! (USD per unit of quality) the best response is the arm maximising lambda q_i - c_i: exactly the
//! money-denominated utility with v_q = lambda. The method is primal-dual (dual sub-gradient in log
//! space, the same shape as budget pacing):
//!
//! - decide with Thompson (or UCB) over U_usd with v_q = lambda, so exploration and the pool's exact
//!   propensities are unchanged (the decision is still an argmax over a pool of posterior draws);
//! - after each decision at the class's own target, with q_c the chosen arm's expected quality and
//!   q* the best arm's, add the relative shortfall e = (t q* - q_c) / q* to a running sum S and set
//!   ln lambda = ln lambda_0 + eta S.
//!
//! lambda rises while the class delivers less than its target and falls while it delivers more.
//! Because ln lambda is eta times the integral of the shortfall, a bounded lambda implies the
//! average shortfall tends to 0 at rate O(1 / (eta T)): the long-run mix meets the target on
//! average, and at the equilibrium multiplier the two arms adjacent on the lower convex hull of
//! (q, c) tie, so posterior noise and the multiplier's small oscillation split traffic between them
//! in the proportion that meets the target: the LP's least-cost two-model mix. The control signal
//! is the chosen arm's *expected* quality at decision time, not the realised score, which arrives
//! late or never and is noisy; realised scores are summed apart for reporting.
//!
//! lambda_0 = max_i c_i / max(q*, 0.05) (a unit of quality is worth the dearest call: quality
//! first), set at the first decision; the log range is capped at +-[`MAX_LOG_SWING`] around it so
//! a class that cannot reach its target (or exceeds it for free) does not wind up the sum.
//!
//! # Accounting and merging
//! The state is sums (shortfall, expected, best and realised quality, counts) plus the fixed
//! lambda_0, so two replicas' states merge by adding the sums; [`QualityTargetState::merge`]
//! documents it. A request carrying its own `quality_target` is decided with a separate state for
//! that target (the engine keys them by target) and never moves the class's own multiplier.
//! Shadow outcomes must not be passed to [`QualityTargetState::on_feedback`].

use serde::{Deserialize, Serialize};

use super::pool::Columns;
use super::{Arm, Sample, Scoring, MAX_NORMALISED_TERM};

/// Largest |ln lambda - ln lambda_0|: a factor of about 3e6 either way.
pub const MAX_LOG_SWING: f64 = 15.0;

/// Default dual step eta (log units per unit of relative shortfall).
pub const DEFAULT_STEP: f64 = 0.5;

/// Width of the optimistic bound on the best arm's quality ([`best_quality`]).
pub const BEST_Z: f64 = 1.0;

/// Smallest best-arm quality the shortfall is divided by.
const MIN_BEST_QUALITY: f64 = 0.05;

/// Scores one draw of an arm; the policies are generic over it, so the weighted [`Scoring`] and the
/// money-denominated [`RequestScoring`] drive the same Thompson, UCB and greedy code.
pub trait Utility {
    fn utility(&self, s: &Sample) -> f64;

    /// The utility of each draw of `columns` scaled to one candidate (quality x `health`, cost x
    /// `cost_scale`, as [`super::Candidate::scale`]), into `out[j]` for the first `out.len()`
    /// draws (the columns hold at least that many): bit for bit what [`Utility::utility`] gives
    /// each scaled draw, except that a NaN's sign bit may differ where the loop is compiled for
    /// wider vectors (as [`super::thompson`]'s winners are; no comparison sees it). Each
    /// implementation reads the columns in one loop of its `utility`'s arithmetic, which the
    /// compiler runs on packed doubles (a pool is most of a Route's work).
    fn utilities(&self, columns: &Columns, health: f64, cost_scale: f64, out: &mut [f64]);
}

impl Utility for Scoring {
    fn utility(&self, s: &Sample) -> f64 {
        Scoring::utility(self, s)
    }

    #[inline(always)]
    fn utilities(&self, columns: &Columns, health: f64, cost_scale: f64, out: &mut [f64]) {
        let n = out.len();
        let c = Prefix::of(columns, n);
        let w = self.weights;
        let (sla, cap) = self.limits();
        for (j, out) in out.iter_mut().enumerate() {
            let quality = c.quality[j] * health;
            let cost = c.cost_usd[j] * cost_scale;
            // The expression of `Scoring::utility`, term for term and in its order.
            let mut u = w.quality * c.success[j] * quality
                - w.cost * capped(cost / self.cost_ref_usd)
                - w.latency * capped(c.latency_ms[j] / self.latency_ref_ms);
            u -= self.violation_penalty * violations(c.latency_p95_ms[j], sla, cost, cap);
            *out = u;
        }
    }
}

/// The first `n` draws of each column (so that the loops index without bounds checks).
struct Prefix<'a> {
    success: &'a [f64],
    quality: &'a [f64],
    cost_usd: &'a [f64],
    latency_ms: &'a [f64],
    latency_p95_ms: &'a [f64],
}

impl<'a> Prefix<'a> {
    #[inline(always)]
    fn of(c: &'a Columns, n: usize) -> Prefix<'a> {
        Prefix {
            success: &c.success[..n],
            quality: &c.quality[..n],
            cost_usd: &c.cost_usd[..n],
            latency_ms: &c.latency_ms[..n],
            latency_p95_ms: &c.latency_p95_ms[..n],
        }
    }
}

/// [`Scoring::violations`] as a number (0.0, 1.0 or 2.0, the values `f64::from` gives the count),
/// with the limits from [`Scoring::limits`]; selects rather than integer counts, so that it stays
/// in packed doubles.
#[inline(always)]
fn violations(p95: f64, sla: f64, cost: f64, cap: f64) -> f64 {
    let one = |broken: bool| if broken { 1.0 } else { 0.0 };
    one(p95 > sla) + one(cost > cap)
}

/// `x.min(MAX_NORMALISED_TERM)` for every x, NaN included (which gives the cap, as `min` does),
/// as one compare: what a packed `min` instruction does, where `f64::min`'s handling of a NaN on
/// either side takes several.
#[inline(always)]
fn capped(x: f64) -> f64 {
    if x < MAX_NORMALISED_TERM {
        x
    } else {
        MAX_NORMALISED_TERM
    }
}

/// How a request's draws are valued.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Valuation {
    /// The dimensionless weights of [`Scoring`].
    Weights,
    /// USD per unit of quality and per second of latency.
    Money {
        usd_per_quality: f64,
        usd_per_second: f64,
    },
}

/// A request's scoring: constraints and references from [`Scoring`], values from [`Valuation`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestScoring {
    pub scoring: Scoring,
    pub valuation: Valuation,
}

impl RequestScoring {
    /// USD a broken constraint costs (see the module docs).
    pub fn penalty_usd(&self, usd_per_quality: f64) -> f64 {
        self.scoring.violation_penalty
            * (usd_per_quality + MAX_NORMALISED_TERM * self.scoring.cost_ref_usd)
    }
}

impl Utility for RequestScoring {
    fn utility(&self, s: &Sample) -> f64 {
        match self.valuation {
            Valuation::Weights => self.scoring.utility(s),
            Valuation::Money {
                usd_per_quality,
                usd_per_second,
            } => {
                usd_per_quality * s.success * s.quality
                    - s.cost_usd
                    - usd_per_second * s.latency_ms / 1000.0
                    - self.penalty_usd(usd_per_quality) * f64::from(self.scoring.violations(s))
            }
        }
    }

    #[inline(always)]
    fn utilities(&self, columns: &Columns, health: f64, cost_scale: f64, out: &mut [f64]) {
        let Valuation::Money {
            usd_per_quality,
            usd_per_second,
        } = self.valuation
        else {
            return self.scoring.utilities(columns, health, cost_scale, out);
        };
        let n = out.len();
        let c = Prefix::of(columns, n);
        let penalty = self.penalty_usd(usd_per_quality);
        let (sla, cap) = self.scoring.limits();
        for (j, out) in out.iter_mut().enumerate() {
            let quality = c.quality[j] * health;
            let cost = c.cost_usd[j] * cost_scale;
            // The expression of the scalar `utility` above, term for term and in its order.
            *out = usd_per_quality * c.success[j] * quality
                - cost
                - usd_per_second * c.latency_ms[j] / 1000.0
                - penalty * violations(c.latency_p95_ms[j], sla, cost, cap);
        }
    }
}

/// A class's objective.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "objective")]
pub enum Objective {
    /// Maximise the utility (weights or money), today's behaviour.
    Utility,
    /// Least expected cost with mean quality >= `quality_target` x the best arm's, `quality_target`
    /// in (0, 1].
    MinCost { quality_target: f64 },
}

/// The primal-dual state of one (class, quality target): see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QualityTargetState {
    /// ln lambda_0, set at the first decision (None before).
    pub base_log_lambda: Option<f64>,
    /// Sum of relative shortfalls (t q* - q_c) / q* over decisions, kept within the swing cap.
    pub shortfall_sum: f64,
    /// Decisions counted, and the sums of the chosen arm's and the best arm's expected quality.
    pub decisions: u64,
    pub expected_quality_sum: f64,
    pub best_quality_sum: f64,
    /// Realised quality scores (0 for a failure) reported for those decisions.
    pub realised_quality_sum: f64,
    pub realised: u64,
    /// Last update (Unix ms).
    pub updated_at_ms: u64,
}

/// What one eligible arm is expected to deliver: success x quality, its posterior sd, and cost
/// (USD) of a call.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ArmValue {
    pub quality: f64,
    pub quality_sd: f64,
    pub cost_usd: f64,
}

impl ArmValue {
    /// The arm's posterior-mean value for a request at `cost_scale`.
    pub fn of(arm: &Arm, cost_scale: f64) -> ArmValue {
        ArmValue::from_means(arm, arm.means(cost_scale))
    }

    /// [`ArmValue::of`] from the arm's means already taken (`arm.means(cost_scale)`).
    pub fn from_means(arm: &Arm, m: crate::policy::Means) -> ArmValue {
        ArmValue {
            quality: m.success * m.quality,
            quality_sd: m.success * arm.quality.variance().sqrt(),
            cost_usd: m.cost_usd,
        }
    }
}

/// The best arm's quality q* the target is relative to: the largest upper bound
/// quality + [`BEST_Z`] x sd. Optimism matters: with the posterior mean, an expensive arm that
/// the (cost-minded) policy rarely tries keeps a low mean, q* stays low and the target is met
/// against the wrong best; the bound makes an unexplored arm's promise raise the target (and the
/// multiplier) until the arm has been tried enough to tell.
pub fn best_quality(arms: &[ArmValue]) -> f64 {
    arms.iter()
        .map(|a| (a.quality + BEST_Z * a.quality_sd).min(1.0))
        .fold(0.0, f64::max)
}

impl QualityTargetState {
    /// Sets lambda_0 from the eligible arms' expected values, if not set yet.
    pub fn start(&mut self, arms: &[ArmValue], now_ms: u64) {
        if self.base_log_lambda.is_some() || arms.is_empty() {
            return;
        }
        let best = best_quality(arms);
        let dearest = arms.iter().map(|a| a.cost_usd).fold(0.0, f64::max);
        let lambda0 = (dearest / best.max(MIN_BEST_QUALITY)).max(1e-12);
        self.base_log_lambda = Some(lambda0.ln());
        self.updated_at_ms = self.updated_at_ms.max(now_ms);
    }

    /// The current multiplier lambda (USD per unit of quality); None before [`Self::start`].
    pub fn lambda(&self, step: f64) -> Option<f64> {
        self.base_log_lambda
            .map(|b| (b + (step * self.shortfall_sum).clamp(-MAX_LOG_SWING, MAX_LOG_SWING)).exp())
    }

    /// The valuation to decide under: money with v_q = lambda and the class's v_s.
    pub fn valuation(&self, step: f64, usd_per_second: f64) -> Option<Valuation> {
        self.lambda(step).map(|l| Valuation::Money {
            usd_per_quality: l,
            usd_per_second,
        })
    }

    /// Counts one decision at `target`: the chosen arm's and the best arm's expected quality.
    pub fn on_decision(
        &mut self,
        target: f64,
        chosen_quality: f64,
        best_quality: f64,
        step: f64,
        now_ms: u64,
    ) {
        let e = (target * best_quality - chosen_quality) / best_quality.max(MIN_BEST_QUALITY);
        let cap = if step > 0.0 {
            MAX_LOG_SWING / step
        } else {
            f64::INFINITY
        };
        self.shortfall_sum = (self.shortfall_sum + e).clamp(-cap, cap);
        self.decisions += 1;
        self.expected_quality_sum += chosen_quality;
        self.best_quality_sum += best_quality;
        self.updated_at_ms = self.updated_at_ms.max(now_ms);
    }

    /// Counts a realised quality score (0 for a failure) of a decision made under this state.
    pub fn on_feedback(&mut self, quality: f64, now_ms: u64) {
        self.realised_quality_sum += quality;
        self.realised += 1;
        self.updated_at_ms = self.updated_at_ms.max(now_ms);
    }

    /// Mean expected quality delivered over the best arm's (the share the target is about).
    pub fn achieved_share(&self) -> Option<f64> {
        (self.best_quality_sum > 0.0).then(|| self.expected_quality_sum / self.best_quality_sum)
    }

    /// Mean realised quality score.
    pub fn realised_quality(&self) -> Option<f64> {
        (self.realised > 0).then(|| self.realised_quality_sum / self.realised as f64)
    }

    /// Adds another replica's increments since both started from the same lambda_0: sums add
    /// (the shortfall re-capped), lambda_0 is kept (or taken from `other` if unset here).
    pub fn merge(&mut self, other: &QualityTargetState, step: f64) {
        if self.base_log_lambda.is_none() {
            self.base_log_lambda = other.base_log_lambda;
        }
        let cap = if step > 0.0 {
            MAX_LOG_SWING / step
        } else {
            f64::INFINITY
        };
        self.shortfall_sum = (self.shortfall_sum + other.shortfall_sum).clamp(-cap, cap);
        self.decisions += other.decisions;
        self.expected_quality_sum += other.expected_quality_sum;
        self.best_quality_sum += other.best_quality_sum;
        self.realised_quality_sum += other.realised_quality_sum;
        self.realised += other.realised;
        self.updated_at_ms = self.updated_at_ms.max(other.updated_at_ms);
    }
}

/// The least-cost static mix over `arms` with mean quality >= `floor`: the lower convex hull of
/// (quality, cost) read at `floor`. Returns (cost, mix as (arm, share) pairs, at most two), or None
/// when no arm reaches `floor`. Used by the simulator's hindsight frontier and by tests.
pub fn least_cost_mix(arms: &[ArmValue], floor: f64) -> Option<(f64, Vec<(usize, f64)>)> {
    let mut best: Option<(f64, Vec<(usize, f64)>)> = None;
    let mut consider = |cost: f64, mix: Vec<(usize, f64)>| {
        if best.as_ref().is_none_or(|(c, _)| cost < *c) {
            best = Some((cost, mix));
        }
    };
    for (i, a) in arms.iter().enumerate() {
        if a.quality >= floor {
            consider(a.cost_usd, vec![(i, 1.0)]);
        }
    }
    for (i, lo) in arms.iter().enumerate() {
        if lo.quality >= floor {
            continue;
        }
        for (j, hi) in arms.iter().enumerate() {
            if hi.quality <= floor {
                continue;
            }
            // x hi + (1 - x) lo has quality exactly `floor`.
            let x = (floor - lo.quality) / (hi.quality - lo.quality);
            let cost = x * hi.cost_usd + (1.0 - x) * lo.cost_usd;
            consider(cost, vec![(i, 1.0 - x), (j, x)]);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    fn sample(quality: f64, cost_usd: f64, latency_ms: f64) -> Sample {
        Sample {
            success: 1.0,
            quality,
            cost_usd,
            latency_ms,
            latency_p95_ms: latency_ms * 2.0,
        }
    }

    #[test]
    fn money_utility_is_in_usd() {
        let mut rs = RequestScoring {
            scoring: scoring(),
            valuation: Valuation::Money {
                usd_per_quality: 0.01,
                usd_per_second: 0.001,
            },
        };
        let s = sample(0.8, 0.003, 2000.0);
        let want = 0.01 * 0.8 - 0.003 - 0.001 * 2.0;
        assert!((rs.utility(&s) - want).abs() < 1e-15);
        rs.scoring.max_latency_ms = Some(1000.0);
        let p = 1.0 * (0.01 + MAX_NORMALISED_TERM * 0.001);
        assert!((rs.utility(&s) - (want - p)).abs() < 1e-15);
        rs.valuation = Valuation::Weights;
        assert_eq!(rs.utility(&s), rs.scoring.utility(&s));
    }

    #[test]
    fn least_cost_mix_is_two_models_on_the_hull() {
        let arms = [
            ArmValue {
                quality: 0.5,
                cost_usd: 1.0,
                ..Default::default()
            },
            ArmValue {
                quality: 0.7,
                cost_usd: 4.0,
                ..Default::default()
            },
            ArmValue {
                quality: 0.9,
                cost_usd: 10.0,
                ..Default::default()
            },
            ArmValue {
                quality: 0.6,
                cost_usd: 8.0,
                ..Default::default()
            },
        ];
        let (cost, mix) = least_cost_mix(&arms, 0.8).unwrap_or_default();
        // Between arm 1 and arm 2 (half each) = 7; arm 0 with arm 2 = 3/4 x 10 + 1/4 = 7.75.
        assert!((cost - 7.0).abs() < 1e-12, "{cost} {mix:?}");
        assert_eq!(mix.len(), 2);
        assert_eq!(least_cost_mix(&arms, 0.5).map(|m| m.0), Some(1.0));
        assert_eq!(least_cost_mix(&arms, 0.95), None);
    }

    #[test]
    fn multiplier_rises_below_target_and_falls_above() {
        let mut st = QualityTargetState::default();
        let arms = [
            ArmValue {
                quality: 0.9,
                cost_usd: 0.01,
                ..Default::default()
            },
            ArmValue {
                quality: 0.6,
                cost_usd: 0.001,
                ..Default::default()
            },
        ];
        st.start(&arms, 5);
        let l0 = st.lambda(DEFAULT_STEP).unwrap_or(0.0);
        assert!((l0 - 0.01 / 0.9).abs() < 1e-12);
        st.on_decision(0.95, 0.6, 0.9, DEFAULT_STEP, 6);
        let up = st.lambda(DEFAULT_STEP).unwrap_or(0.0);
        assert!(up > l0);
        st.on_decision(0.95, 0.9, 0.9, DEFAULT_STEP, 7);
        st.on_decision(0.95, 0.9, 0.9, DEFAULT_STEP, 7);
        assert!(st.lambda(DEFAULT_STEP).unwrap_or(f64::MAX) < up);
        // Wind-up is capped.
        for _ in 0..10_000 {
            st.on_decision(1.0, 0.0, 0.9, DEFAULT_STEP, 8);
        }
        let top = st.lambda(DEFAULT_STEP).unwrap_or(0.0);
        assert!((top.ln() - (l0.ln() + MAX_LOG_SWING)).abs() < 1e-9);
        // Merge adds sums.
        let mut a = QualityTargetState::default();
        a.start(&arms, 0);
        let mut b = a.clone();
        a.on_decision(0.95, 0.6, 0.9, DEFAULT_STEP, 1);
        b.on_decision(0.95, 0.9, 0.9, DEFAULT_STEP, 2);
        b.on_feedback(1.0, 3);
        a.merge(&b, DEFAULT_STEP);
        assert_eq!((a.decisions, a.realised, a.updated_at_ms), (2, 1, 3));
        assert!((a.achieved_share().unwrap_or(0.0) - 1.5 / 1.8).abs() < 1e-12);
    }

    /// Runs the primal-dual min-cost policy (pooled Thompson, agnostic quality priors) on six arms
    /// with Bernoulli correctness and fixed costs; returns (mean realised quality, mean cost).
    fn run_min_cost(seed: u64, target: f64, truth: &[ArmValue], steps: usize) -> (f64, f64) {
        use super::super::pool::DrawPool;
        use super::super::{thompson, Arm, Candidate};
        use rand::rngs::SmallRng;
        use rand::{Rng, SeedableRng};
        let mut rng = SmallRng::seed_from_u64(seed);
        let sc = scoring();
        let mut arms: Vec<Arm> = truth
            .iter()
            .map(|t| Arm::new(&prior(0.5, 500.0, t.cost_usd), 0))
            .collect();
        let mut pools = vec![DrawPool::default(); arms.len()];
        let mut st = QualityTargetState::default();
        let (mut q_sum, mut c_sum) = (0.0, 0.0);
        for t in 0..steps {
            let now = t as u64 * 1000;
            for (p, a) in pools.iter_mut().zip(&arms) {
                p.refresh(a, 64, now, f64::INFINITY, &mut rng);
            }
            let values: Vec<ArmValue> = arms.iter().map(|a| ArmValue::of(a, 1.0)).collect();
            st.start(&values, now);
            let rs = RequestScoring {
                scoring: sc,
                valuation: st
                    .valuation(DEFAULT_STEP, 0.0)
                    .unwrap_or(Valuation::Weights),
            };
            let cands: Vec<Candidate<'_>> = arms
                .iter()
                .zip(&pools)
                .map(|(arm, p)| Candidate {
                    arm,
                    cost_scale: 1.0,
                    health: 1.0,
                    prior_utility: 0.0,
                    pool: p.draws(),
                })
                .collect();
            let i = thompson::choose(&cands, &rs, 64, &mut rng).index;
            arms[i].record_pull(now);
            let best = best_quality(&values);
            st.on_decision(target, values[i].quality, best, DEFAULT_STEP, now);
            let q = if rng.random::<f64>() < truth[i].quality {
                1.0
            } else {
                0.0
            };
            let c = truth[i].cost_usd;
            arms[i].observe_outcome(&success(q, 500.0, c), &sc, now);
            arms[i].observe_quality(q, now);
            st.on_feedback(q, now);
            q_sum += q;
            c_sum += c;
        }
        (q_sum / steps as f64, c_sum / steps as f64)
    }

    fn six_arms() -> Vec<ArmValue> {
        [
            (0.55, 0.0002),
            (0.68, 0.0006),
            (0.78, 0.0015),
            (0.85, 0.004),
            (0.88, 0.009),
            (0.90, 0.02),
        ]
        .into_iter()
        .map(|(quality, cost_usd)| ArmValue {
            quality,
            cost_usd,
            ..Default::default()
        })
        .collect()
    }

    #[test]
    fn min_cost_meets_the_target_near_the_hindsight_frontier() {
        let truth = six_arms();
        let best = 0.90;
        for target in [0.9, 0.95] {
            let seeds = 5;
            let (mut q, mut c) = (0.0, 0.0);
            for seed in 0..seeds {
                let (sq, sc) = run_min_cost(seed, target, &truth, 6000);
                q += sq / seeds as f64;
                c += sc / seeds as f64;
            }
            let frontier = least_cost_mix(&truth, q.min(best)).map_or(f64::NAN, |m| m.0);
            eprintln!(
                "target {target}: quality share {:.3}, cost share {:.3}, vs frontier at that quality {:.2}x",
                q / best,
                c / 0.02,
                c / frontier
            );
            assert!(q / best >= target - 0.01, "target {target}: quality {q}");
            assert!(
                c <= 1.5 * frontier,
                "target {target}: cost {c} vs {frontier}"
            );
        }
    }
}
