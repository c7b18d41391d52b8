//! Mergeable evidence: an arm's statistics as additive sums, so replicas can publish what they
//! learned as deltas and add up everyone's (see `crate::cluster::evidence`).
//!
//! # The statistics
//! Every posterior of an [`Arm`] is a function of weighted sums over its observations `x_i` with
//! weights `w_i`:
//! - Beta (success, quality): `S = sum w_i x_i` and `F = sum w_i (1 - x_i)` ([`BetaPosterior`]'s
//!   `s` and `f`);
//! - Normal-Gamma (ln latency, ln cost): the power sums `W = sum w_i`, `W1 = sum w_i (x_i - c)` and
//!   `W2 = sum w_i (x_i - c)^2`, centred on the prior's mean `c` (the same on every replica, since
//!   replicas share one config) so that `W2 - W1^2 / W` does not lose the variance to cancellation.
//!   [`NormalGamma`] keeps the equivalent count, mean and sum of squared deviations (Welford):
//!   `n = W`, `mean = c + W1 / W`, `m2 = W2 - W1^2 / W`.
//!
//! Sums add, so the evidence of several replicas is the sum of their evidence, and a replica's
//! contribution since its last publication is the difference of two snapshots ([`Evidence::minus`]).
//!
//! # Forward decay
//! The engine fades evidence with a half-life `h`: at time `t` an observation made at `t_i` weighs
//! `g(t - t_i) = 2^(-(t - t_i) / h)`. Multiplying stored sums by `g` ("backward" decay) does not
//! commute with merging: two replicas that decayed at different moments hold sums in different
//! units. Forward decay (Cormode, Shkapenyuk, Srivastava and Xu, "Forward decay: a practical time
//! decay model for streaming systems", ICDE 2009) fixes the units instead: an observation enters
//! with the weight `v(t_i) = 2^((t_i - L) / h)`, growing with time from a fixed origin `L`, and the
//! decayed sum at time `t` is `sum v(t_i) x_i / v(t)`, because `v(t_i) / v(t) = g(t - t_i)`. Sums in
//! forward units never change once written, so they add and subtract across replicas in any order,
//! and decay is applied only when reading, by dividing by `v(t)`.
//!
//! A replica's local arm holds decayed sums as of `t`; [`Evidence::to_forward`] multiplies by `v(t)`
//! and [`Evidence::from_forward`] divides. The weights grow by a factor of 2 per half-life, so the
//! origin is moved forward ("rebased") before they leave the range of an f64: moving `L` by `k`
//! half-lives divides every stored sum by `2^k`, the same for every sum, which Redis does in one
//! script ([`REBASE_AFTER_HALF_LIVES`]). Without decay (`h` infinite) every weight is 1.
//!
//! The counts (pulls, successes, failures, quality reports) are never decayed and merge as plain
//! sums.

use super::{decay_factor, Arm};

/// Rebase the forward-decay origin once it lies this many half-lives in the past: weights reach
/// 2^64, far inside an f64's range (2^1023) yet small enough that a sum still resolves a single
/// fresh observation against everything stored (52 bits of mantissa cover the decayed-away part).
pub const REBASE_AFTER_HALF_LIVES: f64 = 32.0;

/// The number of decayed fields at the start of [`Evidence::fields`].
pub const DECAYED_FIELDS: usize = 10;

/// The names of [`Evidence::fields`], in order (Redis hash fields).
pub const FIELD_NAMES: [&str; 14] = [
    "ss", "sf", "qs", "qf", "lw", "lx", "lx2", "cw", "cx", "cx2", "pulls", "succ", "fail", "qrep",
];

/// Weighted power sums of one Normal-Gamma statistic, centred on the prior mean.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PowerSums {
    /// Sum of weights.
    pub w: f64,
    /// Sum of w (x - c).
    pub wx: f64,
    /// Sum of w (x - c)^2.
    pub wx2: f64,
}

/// One arm's evidence as additive sums (decayed units at some time, or forward units).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Evidence {
    pub success: (f64, f64),
    pub quality: (f64, f64),
    pub latency: PowerSums,
    pub cost: PowerSums,
    /// pulls, successes, failures, quality reports (never decayed).
    pub counts: [f64; 4],
}

impl Evidence {
    /// The arm's evidence as its statistics hold it (decayed as of `arm.decayed_at_ms`).
    pub fn of(arm: &Arm) -> Self {
        Evidence {
            success: (arm.success.s, arm.success.f),
            quality: (arm.quality.s, arm.quality.f),
            latency: power_sums(
                arm.latency.n,
                arm.latency.mean,
                arm.latency.m2,
                arm.latency.prior_mu,
            ),
            cost: power_sums(arm.cost.n, arm.cost.mean, arm.cost.m2, arm.cost.prior_mu),
            counts: [
                arm.pulls as f64,
                arm.successes as f64,
                arm.failures as f64,
                arm.quality_reports as f64,
            ],
        }
    }

    /// Writes this evidence (decayed units) into the arm's statistics; priors stay.
    pub fn apply(&self, arm: &mut Arm) {
        arm.success.s = self.success.0.max(0.0);
        arm.success.f = self.success.1.max(0.0);
        arm.quality.s = self.quality.0.max(0.0);
        arm.quality.f = self.quality.1.max(0.0);
        (arm.latency.n, arm.latency.mean, arm.latency.m2) =
            welford(self.latency, arm.latency.prior_mu);
        (arm.cost.n, arm.cost.mean, arm.cost.m2) = welford(self.cost, arm.cost.prior_mu);
        let count = |x: f64| x.max(0.0).round() as u64;
        arm.pulls = count(self.counts[0]);
        arm.successes = count(self.counts[1]);
        arm.failures = count(self.counts[2]);
        arm.quality_reports = count(self.counts[3]);
    }

    /// The fields in [`FIELD_NAMES`] order.
    pub fn fields(&self) -> [f64; 14] {
        let (l, c, k) = (self.latency, self.cost, self.counts);
        [
            self.success.0,
            self.success.1,
            self.quality.0,
            self.quality.1,
            l.w,
            l.wx,
            l.wx2,
            c.w,
            c.wx,
            c.wx2,
            k[0],
            k[1],
            k[2],
            k[3],
        ]
    }

    /// The inverse of [`Evidence::fields`].
    pub fn from_fields(f: &[f64; 14]) -> Self {
        Evidence {
            success: (f[0], f[1]),
            quality: (f[2], f[3]),
            latency: PowerSums {
                w: f[4],
                wx: f[5],
                wx2: f[6],
            },
            cost: PowerSums {
                w: f[7],
                wx: f[8],
                wx2: f[9],
            },
            counts: [f[10], f[11], f[12], f[13]],
        }
    }

    fn map2(&self, other: &Evidence, f: impl Fn(usize, f64, f64) -> f64) -> Evidence {
        let (a, b) = (self.fields(), other.fields());
        let mut out = [0.0; 14];
        for i in 0..14 {
            out[i] = f(i, a[i], b[i]);
        }
        Evidence::from_fields(&out)
    }

    pub fn plus(&self, other: &Evidence) -> Evidence {
        self.map2(other, |_, a, b| a + b)
    }

    pub fn minus(&self, other: &Evidence) -> Evidence {
        self.map2(other, |_, a, b| a - b)
    }

    /// The decayed fields times `k`, counts unchanged.
    pub fn scale_decayed(&self, k: f64) -> Evidence {
        self.map2(self, |i, a, _| if i < DECAYED_FIELDS { a * k } else { a })
    }

    /// Decayed units as of `from_ms` -> as of `to_ms` (>= `from_ms`).
    pub fn decayed(&self, from_ms: u64, to_ms: u64, half_life_secs: Option<f64>) -> Evidence {
        let dt = to_ms.saturating_sub(from_ms) as f64 / 1000.0;
        self.scale_decayed(decay_factor(dt, half_life_secs))
    }

    /// Decayed units at `now_ms` -> forward units relative to `origin_ms`.
    pub fn to_forward(&self, now_ms: u64, origin_ms: u64, half_life_secs: Option<f64>) -> Evidence {
        self.scale_decayed(forward_weight(now_ms, origin_ms, half_life_secs))
    }

    /// Forward units relative to `origin_ms` -> decayed units at `now_ms`.
    pub fn from_forward(
        &self,
        now_ms: u64,
        origin_ms: u64,
        half_life_secs: Option<f64>,
    ) -> Evidence {
        self.scale_decayed(1.0 / forward_weight(now_ms, origin_ms, half_life_secs))
    }

    /// Whether every field is zero (nothing to publish).
    pub fn is_zero(&self) -> bool {
        self.fields().iter().all(|x| *x == 0.0)
    }
}

/// The forward-decay weight `v(t) = 2^((t - L) / h)` of time `now_ms` for origin `L = origin_ms`
/// (1 without decay). Times before the origin get weights below 1.
pub fn forward_weight(now_ms: u64, origin_ms: u64, half_life_secs: Option<f64>) -> f64 {
    match half_life_secs {
        Some(h) if h > 0.0 && h.is_finite() => {
            let dt = (now_ms as f64 - origin_ms as f64) / 1000.0;
            2f64.powf(dt / h)
        }
        _ => 1.0,
    }
}

fn power_sums(n: f64, mean: f64, m2: f64, centre: f64) -> PowerSums {
    if n <= 0.0 {
        return PowerSums::default();
    }
    let d = mean - centre;
    PowerSums {
        w: n,
        wx: n * d,
        wx2: m2 + n * d * d,
    }
}

/// (n, mean, m2) of power sums; an empty or numerically vanished statistic is (0, 0, 0).
fn welford(p: PowerSums, centre: f64) -> (f64, f64, f64) {
    let usable = p.w > 1e-12 && p.wx.is_finite() && p.wx2.is_finite();
    if !usable {
        return (0.0, 0.0, 0.0);
    }
    let d = p.wx / p.w;
    (p.w, centre + d, (p.wx2 - p.wx * d).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::test_support::{prior, scoring, success};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
    }

    fn assert_close(a: &Evidence, b: &Evidence) {
        for (x, y) in a.fields().iter().zip(b.fields().iter()) {
            assert!(close(*x, *y), "{a:?}\n!=\n{b:?}");
        }
    }

    fn feed(arm: &mut Arm, obs: &[(u64, f64, f64)], h: Option<f64>) {
        let s = scoring();
        for &(t, lat, cost) in obs {
            arm.decay_to(t, h);
            arm.observe_outcome(&success(0.8, lat, cost), &s, t);
            arm.observe_quality(0.6, t);
        }
    }

    #[test]
    fn round_trip_through_sums_keeps_the_posteriors() {
        let mut arm = Arm::new(&prior(0.7, 900.0, 0.01), 0);
        feed(
            &mut arm,
            &[(10, 800.0, 0.01), (20, 1200.0, 0.02), (30, 950.0, 0.015)],
            None,
        );
        let mut copy = Arm::new(&prior(0.7, 900.0, 0.01), 0);
        Evidence::of(&arm).apply(&mut copy);
        assert!(close(copy.latency.mean, arm.latency.mean));
        assert!(close(copy.latency.m2, arm.latency.m2));
        assert!(close(copy.cost.n, arm.cost.n));
        assert_eq!(copy.successes, arm.successes);
        assert_eq!(copy.success, arm.success);
    }

    /// Two replicas observing disjoint halves at interleaved times, each decaying on its own
    /// schedule, merge in forward units to exactly what one arm that saw everything holds.
    #[test]
    fn forward_decay_commutes_with_merging() {
        let h = Some(60.0);
        let origin = 5_000;
        let all: Vec<(u64, f64, f64)> = (0..40)
            .map(|i| {
                (
                    10_000 + i * 3_700,
                    500.0 + 40.0 * (i % 7) as f64,
                    0.01 + 0.001 * (i % 5) as f64,
                )
            })
            .collect();
        let mut one = Arm::new(&prior(0.7, 900.0, 0.01), 0);
        feed(&mut one, &all, h);
        let (mut a, mut b) = (
            Arm::new(&prior(0.7, 900.0, 0.01), 0),
            Arm::new(&prior(0.7, 900.0, 0.01), 0),
        );
        let (even, odd): (Vec<_>, Vec<_>) = all.iter().enumerate().partition(|(i, _)| i % 2 == 0);
        feed(
            &mut a,
            &even.into_iter().map(|(_, o)| *o).collect::<Vec<_>>(),
            h,
        );
        feed(
            &mut b,
            &odd.into_iter().map(|(_, o)| *o).collect::<Vec<_>>(),
            h,
        );
        let end = 10_000 + 40 * 3_700;
        one.decay_to(end, h);
        // Each replica publishes at its own moment; the shared sum is read back at `end`.
        let fa = Evidence::of(&a).to_forward(a.decayed_at_ms, origin, h);
        let fb = Evidence::of(&b).to_forward(b.decayed_at_ms, origin, h);
        let merged = fa.plus(&fb).from_forward(end, origin, h);
        assert_close(&merged, &Evidence::of(&one));
    }

    #[test]
    fn deltas_between_snapshots_add_up_to_the_whole() {
        let h = Some(30.0);
        let mut arm = Arm::new(&prior(0.7, 900.0, 0.01), 0);
        feed(&mut arm, &[(1_000, 800.0, 0.01), (2_000, 700.0, 0.02)], h);
        let first = Evidence::of(&arm).to_forward(arm.decayed_at_ms, 0, h);
        feed(&mut arm, &[(9_000, 1500.0, 0.03)], h);
        let second = Evidence::of(&arm).to_forward(arm.decayed_at_ms, 0, h);
        let delta = second.minus(&first);
        assert_close(&first.plus(&delta), &second);
        assert!(close(delta.counts[1], 1.0));
    }

    #[test]
    fn rebasing_the_origin_scales_every_decayed_sum_alike() {
        let h = Some(10.0);
        let mut arm = Arm::new(&prior(0.7, 900.0, 0.01), 0);
        feed(&mut arm, &[(400_000, 800.0, 0.01)], h);
        let e = Evidence::of(&arm);
        let old = e.to_forward(400_000, 0, h);
        // Moving the origin forward by k half-lives divides the forward sums by 2^k.
        let rebased = old.scale_decayed(0.5f64.powi(30));
        assert_close(&rebased.from_forward(400_000, 300_000, h), &e);
        assert!(forward_weight(400_000, 0, h).is_finite());
    }
}
