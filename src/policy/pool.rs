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

/// A pool's draws a component at a time (draw `j` is `success[j]`, `quality[j]`, ...), kept in
/// step with [`DrawPool::draws`]: scoring a whole pool for one request then reads five contiguous
/// columns, which the compiler turns into packed arithmetic (see [`super::Utility::utilities`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Columns {
    pub success: Vec<f64>,
    pub quality: Vec<f64>,
    pub cost_usd: Vec<f64>,
    pub latency_ms: Vec<f64>,
    pub latency_p95_ms: Vec<f64>,
}

impl Columns {
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

/// One arm's pool of posterior draws.
#[derive(Debug, Clone, Default)]
pub struct DrawPool {
    draws: Vec<Sample>,
    /// The same draws by component.
    columns: Columns,
    /// Next draw to replace (oldest first).
    next: usize,
    /// The arm's observation count the pool reflects.
    seen: u64,
    /// When the pool was last redrawn whole (Unix ms).
    full_at_ms: u64,
}

impl DrawPool {
    /// The draws (empty before the first refresh).
    pub fn draws(&self) -> &[Sample] {
        &self.draws
    }

    /// The draws by component (the same draws as [`DrawPool::draws`]).
    pub fn columns(&self) -> &Columns {
        &self.columns
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
            self.draws.extend((0..size).map(|_| sampler.sample(rng)));
            self.columns.clear();
            for d in &self.draws {
                self.columns.push(d);
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
            let d = sampler.sample(rng);
            self.draws[self.next] = d;
            self.columns.set(self.next, &d);
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
        let before = p.draws().to_vec();
        assert_eq!(p.refresh(&a, 64, 1_000, 86_400.0, &mut rng), 0);
        assert_eq!(p.draws(), &before[..]);
    }

    /// The pool's columns hold its draws, component by component.
    fn columns_match(p: &DrawPool) {
        let c = p.columns();
        assert_eq!(c.len(), p.draws().len());
        for (j, d) in p.draws().iter().enumerate() {
            let got = [
                c.success[j],
                c.quality[j],
                c.cost_usd[j],
                c.latency_ms[j],
                c.latency_p95_ms[j],
            ];
            let want = [
                d.success,
                d.quality,
                d.cost_usd,
                d.latency_ms,
                d.latency_p95_ms,
            ];
            assert_eq!(got.map(f64::to_bits), want.map(f64::to_bits), "draw {j}");
        }
    }

    #[test]
    fn each_observation_replaces_an_eighth_oldest_first() {
        let mut rng = SmallRng::seed_from_u64(2);
        let mut a = arm();
        let mut p = DrawPool::default();
        p.refresh(&a, 64, 0, 86_400.0, &mut rng);
        let before = p.draws().to_vec();
        a.observe_quality(0.9, 0);
        assert_eq!(p.refresh(&a, 64, 0, 86_400.0, &mut rng), 8);
        let changed: Vec<usize> = (0..64).filter(|&i| p.draws()[i] != before[i]).collect();
        assert_eq!(changed, (0..8).collect::<Vec<_>>());
        columns_match(&p);
        // Two more observations: the next 16, not the first 8 again.
        a.observe_quality(0.9, 0);
        a.observe_quality(0.9, 0);
        let mid = p.draws().to_vec();
        assert_eq!(p.refresh(&a, 64, 0, 86_400.0, &mut rng), 16);
        let changed: Vec<usize> = (0..64).filter(|&i| p.draws()[i] != mid[i]).collect();
        assert_eq!(changed, (8..24).collect::<Vec<_>>());
        columns_match(&p);
        // Many observations: at most the whole pool.
        for _ in 0..20 {
            a.observe_quality(0.9, 0);
        }
        assert_eq!(p.refresh(&a, 64, 0, 86_400.0, &mut rng), 64);
        columns_match(&p);
        // Resized: redrawn whole, the columns too.
        assert_eq!(p.refresh(&a, 16, 0, 86_400.0, &mut rng), 16);
        columns_match(&p);
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
        let mean = p.draws().iter().map(|s| s.quality).sum::<f64>() / 256.0;
        let want = a.quality.mean();
        assert!((mean - want).abs() < 0.02, "{mean} vs {want}");
    }
}
