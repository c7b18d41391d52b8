//! Pools of posterior draws, which make Thompson propensities exact and cheap.
//!
//! Each arm keeps `size` joint draws of its components (success, quality, cost at the class's typical
//! request size, latency and its p95) from its posterior. A Thompson decision picks one pool index
//! `j` uniformly and chooses the arm whose draw `j` scores best for the request; given the pools,
//! the probability of choosing arm `a` is then exactly the share of indices at which `a` wins,
//! which is the propensity logged for off-policy evaluation: a property of the policy, not a
//! Monte Carlo estimate of it. Scoring `size` draws per arm is arithmetic only, so a decision costs
//! a few microseconds where fresh draws cost microseconds per arm and sample.
//!
//! Pools follow the posterior: each new observation of the arm replaces
//! `ceil(size / REPLACE_DIVISOR)` of its draws (oldest first), so a pool is never more than
//! `REPLACE_DIVISOR` observations behind. Under heavy feedback that is the largest cost of a
//! decision (joint gamma variates, about 2k instructions each, eight per observation), so a pool
//! may fall further behind when that is both small next to the evidence and short in time: when
//! its oldest draw is under `MAX_LAG_MS` old and the arm holds more than `REPLACE_DIVISOR /
//! LAG_SHARE` (800) observations, each observation replaces `size / (LAG_SHARE x evidence)` draws
//! (fractions carried to the next), so that the pool trails by at most 1% of the arm's evidence:
//! an arm with 10,000 observations draws 0.64 per observation rather than 8.
//!
//! Why both bounds: after `L` more observations of a steady arm, a posterior over `N` moves by
//! about `sqrt(L / N)` of its own width (the moves add like a random walk), so a lag of 1% of `N`
//! is a tenth of a width, the same as 8 observations at `N` = 800. But when the arm changes (a
//! price triples), the moves all go one way and a lag of 1% of `N` can be many widths of a narrow
//! posterior; at a few requests a minute it is also many minutes, in which a router that lagged
//! 1% of its evidence kept sending traffic away from a model an hour after its price spike ended
//! (the cost anomaly scenario). Bounding the lag to a second as well keeps the reaction to a
//! change as quick as with eight observations wherever eight observations take more than a
//! second, and saves the draws only where the traffic is heavy enough for them to matter.
//!
//! A reset arm or a resized pool is redrawn whole; and since decay widens a posterior with time
//! alone, a pool older than `half_life / AGE_DIVISOR` is redrawn whole too.

use rand::Rng;

use super::{Arm, ArmSampler, Sample};

/// A pool is never more than this many observations behind its arm (and, for a young arm, each
/// observation replaces this fraction, 1 / divisor, of the pool).
pub const REPLACE_DIVISOR: usize = 8;
/// Past `REPLACE_DIVISOR` observations, a pool may trail its arm by this share of the arm's
/// evidence, while its oldest draw is under [`MAX_LAG_MS`] old.
pub const LAG_SHARE: f64 = 0.01;
/// A pool whose oldest draw is older than this replaces `ceil(size / REPLACE_DIVISOR)` draws per
/// observation, however much evidence its arm holds.
pub const MAX_LAG_MS: u64 = 1_000;
/// A pool is redrawn whole once it is older than the decay half-life over this.
pub const AGE_DIVISOR: f64 = 32.0;

/// A pool's draws a component at a time (draw `j` is `success[j]`, `quality[j]`, ...): scoring a
/// whole pool for one request then reads five contiguous columns, which the compiler turns into
/// packed arithmetic (see [`super::Utility::utilities`]). The columns always have one length.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Columns {
    pub success: Vec<f64>,
    pub quality: Vec<f64>,
    pub cost_usd: Vec<f64>,
    pub latency_ms: Vec<f64>,
    pub latency_p95_ms: Vec<f64>,
}

/// No draws: the pool of a candidate whose caller keeps none.
static EMPTY: Columns = Columns {
    success: Vec::new(),
    quality: Vec::new(),
    cost_usd: Vec::new(),
    latency_ms: Vec::new(),
    latency_p95_ms: Vec::new(),
};

impl Columns {
    /// No draws.
    pub fn empty() -> &'static Columns {
        &EMPTY
    }

    /// Draw `j` (`j < len()`).
    pub fn sample(&self, j: usize) -> Sample {
        Sample {
            success: self.success[j],
            quality: self.quality[j],
            cost_usd: self.cost_usd[j],
            latency_ms: self.latency_ms[j],
            latency_p95_ms: self.latency_p95_ms[j],
        }
    }

    /// How many draws.
    pub fn len(&self) -> usize {
        self.success.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.success.is_empty()
    }

    fn clear(&mut self) {
        self.success.clear();
        self.quality.clear();
        self.cost_usd.clear();
        self.latency_ms.clear();
        self.latency_p95_ms.clear();
    }

    fn push(&mut self, s: &Sample) {
        self.success.push(s.success);
        self.quality.push(s.quality);
        self.cost_usd.push(s.cost_usd);
        self.latency_ms.push(s.latency_ms);
        self.latency_p95_ms.push(s.latency_p95_ms);
    }

    fn set(&mut self, j: usize, s: &Sample) {
        self.success[j] = s.success;
        self.quality[j] = s.quality;
        self.cost_usd[j] = s.cost_usd;
        self.latency_ms[j] = s.latency_ms;
        self.latency_p95_ms[j] = s.latency_p95_ms;
    }
}

impl FromIterator<Sample> for Columns {
    fn from_iter<I: IntoIterator<Item = Sample>>(draws: I) -> Columns {
        let mut c = Columns::default();
        for d in draws {
            c.push(&d);
        }
        c
    }
}

/// One arm's pool of posterior draws.
#[derive(Debug, Clone, Default)]
pub struct DrawPool {
    draws: Columns,
    /// Next draw to replace (oldest first).
    next: usize,
    /// The arm's observation count the pool reflects.
    seen: u64,
    /// When the pool was last redrawn whole (Unix ms).
    full_at_ms: u64,
    /// Replacements owed but not yet made (a fraction of one draw), carried to the next refresh.
    owed: f64,
    /// When each draw was made (Unix ms), so oldest first from `next`.
    drawn_at: Vec<u64>,
}

impl DrawPool {
    /// The draws by component (none before the first refresh).
    pub fn draws(&self) -> &Columns {
        &self.draws
    }

    /// Brings the pool up to date with `arm` at `now_ms`: redraws it whole when its size differs
    /// from `size`, the arm was reset, or it is older than `half_life_secs / AGE_DIVISOR`;
    /// otherwise replaces draws for the observations since the last refresh (see the module doc).
    /// Returns how many draws were made.
    pub fn refresh<R: Rng + ?Sized>(
        &mut self,
        arm: &Arm,
        size: usize,
        now_ms: u64,
        half_life_secs: f64,
        rng: &mut R,
    ) -> usize {
        let observed = arm.observations();
        let max_age_ms = half_life_secs * 1000.0 / AGE_DIVISOR;
        let age_ms = now_ms.saturating_sub(self.full_at_ms) as f64;
        if self.draws.len() != size || observed < self.seen || age_ms > max_age_ms {
            let sampler = ArmSampler::new(arm, 1.0, 1.0);
            self.draws.clear();
            for _ in 0..size {
                self.draws.push(&sampler.sample(rng));
            }
            self.next = 0;
            self.seen = observed;
            self.full_at_ms = now_ms;
            self.owed = 0.0;
            self.drawn_at.clear();
            self.drawn_at.resize(size, now_ms);
            return size;
        }
        let new = usize::try_from(observed - self.seen).unwrap_or(usize::MAX);
        self.seen = observed;
        if new == 0 || size == 0 {
            return 0;
        }
        let evidence = arm.success.evidence() + arm.quality.evidence();
        let n = self.replacements(new, size, evidence, now_ms);
        let sampler = ArmSampler::new(arm, 1.0, 1.0);
        for _ in 0..n {
            self.draws.set(self.next, &sampler.sample(rng));
            self.drawn_at[self.next] = now_ms;
            self.next = (self.next + 1) % size;
        }
        n
    }

    /// How many of `size` draws `new` observations replace at `now_ms`, for an arm holding
    /// `evidence` (decayed observations): `ceil(size / REPLACE_DIVISOR)` each while the arm is
    /// young or the oldest draw is `MAX_LAG_MS` old, else enough that no draw is older than
    /// `LAG_SHARE x evidence` observations. A fraction of a draw is owed to the next refresh, so
    /// over many observations the pool turns over exactly once per lag.
    fn replacements(&mut self, new: usize, size: usize, evidence: f64, now_ms: u64) -> usize {
        let lag = LAG_SHARE * evidence;
        let oldest_ms = self.drawn_at.get(self.next).copied().unwrap_or(0);
        let stale = now_ms.saturating_sub(oldest_ms) >= MAX_LAG_MS;
        // Also a NaN evidence: replace at the young arm's rate.
        if stale || lag.is_nan() || lag <= REPLACE_DIVISOR as f64 {
            self.owed = 0.0;
            return new.saturating_mul(size.div_ceil(REPLACE_DIVISOR)).min(size);
        }
        let owed = self.owed + new as f64 * size as f64 / lag;
        if owed >= size as f64 {
            self.owed = 0.0;
            return size;
        }
        let n = owed.floor();
        self.owed = owed - n;
        // In [0, size): the cast is exact.
        n as usize
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn arm() -> Arm {
        Arm::new(&prior(0.6, 800.0, 0.002), 0)
    }

    #[test]
    fn first_refresh_fills_then_unchanged_arm_draws_nothing() {
        let mut rng = SmallRng::seed_from_u64(1);
        let a = arm();
        let mut p = DrawPool::default();
        assert_eq!(p.refresh(&a, 64, 0, 86_400.0, &mut rng), 64);
        assert_eq!(p.draws().len(), 64);
        let before = p.draws().clone();
        assert_eq!(p.refresh(&a, 64, 1_000, 86_400.0, &mut rng), 0);
        assert_eq!(p.draws(), &before);
    }

    /// The indices at which two pools' draws differ (in any component, NaN-safe).
    fn changed(now: &Columns, before: &Columns) -> Vec<usize> {
        let bits = |s: Sample| {
            [
                s.success,
                s.quality,
                s.cost_usd,
                s.latency_ms,
                s.latency_p95_ms,
            ]
            .map(f64::to_bits)
        };
        (0..now.len())
            .filter(|&j| bits(now.sample(j)) != bits(before.sample(j)))
            .collect()
    }

    /// Every column has the pool's length.
    fn aligned(p: &DrawPool, n: usize) {
        let c = p.draws();
        let lens = [
            c.success.len(),
            c.quality.len(),
            c.cost_usd.len(),
            c.latency_ms.len(),
            c.latency_p95_ms.len(),
        ];
        assert_eq!(lens, [n; 5]);
    }

    #[test]
    fn each_observation_replaces_an_eighth_oldest_first() {
        let mut rng = SmallRng::seed_from_u64(2);
        let mut a = arm();
        let mut p = DrawPool::default();
        p.refresh(&a, 64, 0, 86_400.0, &mut rng);
        let before = p.draws().clone();
        a.observe_quality(0.9, 0);
        assert_eq!(p.refresh(&a, 64, 0, 86_400.0, &mut rng), 8);
        assert_eq!(changed(p.draws(), &before), (0..8).collect::<Vec<_>>());
        aligned(&p, 64);
        // Two more observations: the next 16, not the first 8 again.
        a.observe_quality(0.9, 0);
        a.observe_quality(0.9, 0);
        let mid = p.draws().clone();
        assert_eq!(p.refresh(&a, 64, 0, 86_400.0, &mut rng), 16);
        assert_eq!(changed(p.draws(), &mid), (8..24).collect::<Vec<_>>());
        aligned(&p, 64);
        // Many observations: at most the whole pool.
        for _ in 0..20 {
            a.observe_quality(0.9, 0);
        }
        assert_eq!(p.refresh(&a, 64, 0, 86_400.0, &mut rng), 64);
        aligned(&p, 64);
        // Resized: redrawn whole, every column.
        assert_eq!(p.refresh(&a, 16, 0, 86_400.0, &mut rng), 16);
        aligned(&p, 16);
    }

    #[test]
    fn reset_resize_and_age_redraw_whole() {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut a = arm();
        for _ in 0..5 {
            a.observe_quality(0.9, 0);
        }
        let mut p = DrawPool::default();
        p.refresh(&a, 64, 0, 86_400.0, &mut rng);
        // Reset: the observation count went back.
        assert_eq!(p.refresh(&arm(), 64, 0, 86_400.0, &mut rng), 64);
        // Resize.
        assert_eq!(p.refresh(&arm(), 32, 0, 86_400.0, &mut rng), 32);
        // Age: a day's half-life allows 45 min.
        assert_eq!(p.refresh(&arm(), 32, 2_000_000, 86_400.0, &mut rng), 0);
        assert_eq!(p.refresh(&arm(), 32, 2_800_000, 86_400.0, &mut rng), 32);
        // No decay: never too old.
        assert_eq!(
            p.refresh(&arm(), 32, u64::MAX / 2, f64::INFINITY, &mut rng),
            0
        );
    }

    /// An arm holding `evidence` observations of success (and none of quality).
    fn seasoned(evidence: f64) -> Arm {
        let mut a = arm();
        a.success.s = evidence * 0.99;
        a.success.f = evidence * 0.01;
        a
    }

    #[test]
    fn a_seasoned_arm_turns_its_pool_over_once_per_lag_oldest_first() {
        let mut rng = SmallRng::seed_from_u64(5);
        // 10,000 observations: the lag is 100, so each observation replaces 0.64 draws.
        let mut a = seasoned(10_000.0);
        let mut p = DrawPool::default();
        p.refresh(&a, 64, 0, f64::INFINITY, &mut rng);
        let before = p.draws().clone();
        let mut made = Vec::new();
        for _ in 0..100 {
            a.observe_quality(0.9, 0);
            made.push(p.refresh(&a, 64, 0, f64::INFINITY, &mut rng));
        }
        let total: usize = made.iter().sum();
        // The evidence grows to 10,100 on the way (the lag to 101): 63.7 draws are owed.
        assert_eq!(total, 63, "{made:?}");
        assert!(made.iter().all(|&n| n <= 1), "{made:?}");
        assert_eq!(changed(p.draws(), &before), (0..63).collect::<Vec<_>>());
        aligned(&p, 64);
        // Ten observations at once owe 6.3 draws (plus what was carried).
        for _ in 0..10 {
            a.observe_quality(0.9, 0);
        }
        let n = p.refresh(&a, 64, 0, f64::INFINITY, &mut rng);
        assert!((6..=7).contains(&n), "{n}");
        // A redraw whole forgets what was owed.
        assert_eq!(p.refresh(&a, 32, 0, f64::INFINITY, &mut rng), 32);
        a.observe_quality(0.9, 0);
        assert_eq!(p.refresh(&a, 32, 0, f64::INFINITY, &mut rng), 0);
    }

    #[test]
    fn a_seasoned_pool_whose_oldest_draw_is_a_second_old_replaces_an_eighth_per_observation() {
        let mut rng = SmallRng::seed_from_u64(8);
        let mut a = seasoned(10_000.0);
        let mut p = DrawPool::default();
        p.refresh(&a, 64, 0, f64::INFINITY, &mut rng);
        // 999 ms on: the evidence's rate (0.64 a draw, none made yet).
        a.observe_quality(0.9, 0);
        assert_eq!(p.refresh(&a, 64, 999, f64::INFINITY, &mut rng), 0);
        // A second on, the oldest draw is stale: eight per observation until none is.
        let mut made = Vec::new();
        for _ in 0..9 {
            a.observe_quality(0.9, 0);
            made.push(p.refresh(&a, 64, 1_000, f64::INFINITY, &mut rng));
        }
        assert_eq!(made, [8, 8, 8, 8, 8, 8, 8, 8, 0]);
        // Each observation after that owes 0.64 again: two make one draw.
        a.observe_quality(0.9, 0);
        a.observe_quality(0.9, 0);
        assert_eq!(p.refresh(&a, 64, 1_500, f64::INFINITY, &mut rng), 1);
    }

    #[test]
    fn below_the_lag_floor_or_without_finite_evidence_an_observation_replaces_an_eighth() {
        let mut rng = SmallRng::seed_from_u64(6);
        // 790 observations (plus the quality report below): 1% of it is under 8.
        for evidence in [790.0, f64::NAN, -5.0] {
            let mut a = seasoned(evidence);
            let mut p = DrawPool::default();
            p.refresh(&a, 64, 0, f64::INFINITY, &mut rng);
            a.observe_quality(0.9, 0);
            assert_eq!(
                p.refresh(&a, 64, 0, f64::INFINITY, &mut rng),
                8,
                "{evidence}"
            );
        }
        // Past 800 the rate falls: 1,600 observations make the lag 16, half a draw each... 4.
        let mut a = seasoned(1_599.0);
        let mut p = DrawPool::default();
        p.refresh(&a, 64, 0, f64::INFINITY, &mut rng);
        a.observe_quality(0.9, 0);
        assert_eq!(p.refresh(&a, 64, 0, f64::INFINITY, &mut rng), 4);
        // A huge evidence owes less than a draw, but never a NaN: the owed fraction stays finite.
        let mut a = seasoned(1e300);
        p.refresh(&a, 64, 0, f64::INFINITY, &mut rng);
        a.observe_quality(0.9, 0);
        assert_eq!(p.refresh(&a, 64, 0, f64::INFINITY, &mut rng), 0);
        assert!(p.owed.is_finite() && p.owed >= 0.0, "{}", p.owed);
    }

    #[test]
    fn a_seasoned_pool_follows_a_shifting_posterior_at_a_seventh_of_the_draws() {
        // 4,000 observations of quality 0.9, then 4,000 of 0.5: the posterior mean moves from
        // 0.9 to 0.7, 0.45 posterior widths per 100 observations at the end. The pool's mean
        // quality stays within 0.01 of it (its own noise: a width / 8, about 0.001), while making
        // a seventh of the draws of eight per observation.
        let mut rng = SmallRng::seed_from_u64(7);
        let mut a = arm();
        for _ in 0..4_000 {
            a.observe_quality(0.9, 0);
        }
        let mut p = DrawPool::default();
        p.refresh(&a, 64, 0, f64::INFINITY, &mut rng);
        let mut made = 0;
        let mut worst: f64 = 0.0;
        for i in 0..4_000 {
            a.observe_quality(0.5, 0);
            made += p.refresh(&a, 64, 0, f64::INFINITY, &mut rng);
            if i % 100 == 99 {
                let mean = p.draws().quality.iter().sum::<f64>() / 64.0;
                worst = worst.max((mean - a.quality.mean()).abs());
            }
        }
        assert!(
            worst < 0.01,
            "the pool strayed {worst} from the posterior mean"
        );
        assert!(
            (0.69..0.71).contains(&a.quality.mean()),
            "{}",
            a.quality.mean()
        );
        // The lag grows from 40 to 80 observations: 64 x 100 x ln 2 = 4,436 draws in all, where
        // eight per observation would be 32,000.
        assert!((4_380..=4_440).contains(&made), "{made} draws");
    }

    #[test]
    fn pooled_draws_follow_the_posterior() {
        // The pool's mean quality tracks the posterior mean once it is refreshed after updates.
        let mut rng = SmallRng::seed_from_u64(4);
        let mut a = arm();
        let mut p = DrawPool::default();
        for _ in 0..200 {
            a.observe_quality(0.95, 0);
            p.refresh(&a, 256, 0, f64::INFINITY, &mut rng);
        }
        let mean = p.draws().quality.iter().sum::<f64>() / 256.0;
        let want = a.quality.mean();
        assert!((mean - want).abs() < 0.02, "{mean} vs {want}");
    }
}
