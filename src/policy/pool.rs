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
//! `REPLACE_DIVISOR` observations behind; a reset arm or a resized pool is redrawn whole; and since
//! decay widens a posterior with time alone, a pool older than `half_life / AGE_DIVISOR` is redrawn
//! whole too.

use rand::Rng;

use super::{Arm, ArmSampler, Sample};

/// Each observation replaces this fraction (1 / divisor) of an arm's pool.
pub const REPLACE_DIVISOR: usize = 8;
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
}

impl DrawPool {
    /// The draws by component (none before the first refresh).
    pub fn draws(&self) -> &Columns {
        &self.draws
    }

    /// Brings the pool up to date with `arm` at `now_ms`: redraws it whole when its size differs
    /// from `size`, the arm was reset, or it is older than `half_life_secs / AGE_DIVISOR`;
    /// otherwise replaces `ceil(size / REPLACE_DIVISOR)` draws per observation since the last
    /// refresh. Returns how many draws were made.
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
            return size;
        }
        let new = usize::try_from(observed - self.seen).unwrap_or(usize::MAX);
        self.seen = observed;
        if new == 0 || size == 0 {
            return 0;
        }
        let n = new.saturating_mul(size.div_ceil(REPLACE_DIVISOR)).min(size);
        let sampler = ArmSampler::new(arm, 1.0, 1.0);
        for _ in 0..n {
            self.draws.set(self.next, &sampler.sample(rng));
            self.next = (self.next + 1) % size;
        }
        n
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
