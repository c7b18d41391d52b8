//! Pacing: how strongly the router should weigh cost so that spend follows a straight line to
//! the end of the period. Its defaults live here with the reasons for their values.

use super::{period_bounds, BudgetConfig, Ledger};

/// Default upper bound of the pacing multiplier: at 8x the cost weight
/// already pushes nearly all traffic to the cheapest models; a larger value
/// only makes routing jumpy without saving more.
pub const DEFAULT_PACING_MAX_MULTIPLIER: f64 = 8.0;

/// Default lower bound of the pacing multiplier: 1.0, so falling behind plan
/// never makes cost weigh less than the operator configured (an underspent
/// budget is not a reason to pick pricier models).
pub const DEFAULT_PACING_MIN_MULTIPLIER: f64 = 1.0;

/// Default pacing exponent: with 2, spending 1.5x the plan gives a 2.25x cost
/// weight, so the correction grows faster than the deviation and pulls spend
/// back to the line before the period runs out.
pub const DEFAULT_PACING_GAIN: f64 = 2.0;

/// Default warmup: no pacing in the first 2% of a period (about half an hour
/// of a day, 14 hours of a month), when a single request is a large fraction
/// of the straight line and the ratio would be meaningless.
pub const DEFAULT_PACING_WARMUP_FRACTION: f64 = 0.02;

impl Ledger {
    /// Committed spend (spent + reserved, USD) and elapsed fraction of the
    /// period as of `now_ms`, seeing a period that has ended as the fresh, empty one
    /// that the next mutating call will open.
    pub(super) fn view(&self, cfg: &BudgetConfig, now_ms: u64) -> (f64, f64) {
        let (start, end, committed) = if now_ms >= self.period_end_ms {
            let (s, e) = period_bounds(cfg.period, cfg.time_zone, now_ms);
            (s, e, 0.0)
        } else {
            (
                self.period_start_ms,
                self.period_end_ms,
                self.spent_usd + self.reserved_usd(),
            )
        };
        let elapsed = now_ms.saturating_sub(start) as f64;
        let length = end.saturating_sub(start).max(1) as f64;
        (committed, elapsed / length)
    }

    /// Factor by which the router should multiply the cost weight:
    /// `clamp(max(s / t, (1 - t) / (1 - s)) ^ gain, min, max)`, where
    /// s = (spent + reserved) / limit and t = elapsed / period length.
    /// Both ratios are 1 on the straight line to the period end. The first
    /// (spend ahead of time) leads early in the period; the second (time left
    /// per budget left) grows without bound as the budget nears its cap with
    /// time still to go, so a proportional rule's steady lag ahead of the line
    /// cannot carry spend into the cap late in the period. Above 1 when spend
    /// runs ahead, `pacing_min_multiplier` (1 by default) when it is behind,
    /// exactly 1 during the warmup fraction of the period. Pure: a period that
    /// has ended counts as the new, empty one. Invalid settings yield 1.
    pub fn pacing_multiplier(&self, cfg: &BudgetConfig, now_ms: u64) -> f64 {
        let (committed, _) = self.view(cfg, now_ms);
        self.pacing_multiplier_of(cfg, now_ms, committed)
    }

    /// [`Ledger::pacing_multiplier`] with the committed spend (spent + reserved, USD) of the
    /// period that contains `now_ms` given by the caller: in cluster mode the cluster-wide figure,
    /// so that N replicas pace one budget as one would.
    pub fn pacing_multiplier_of(&self, cfg: &BudgetConfig, now_ms: u64, committed: f64) -> f64 {
        let (_, time_fraction) = self.view(cfg, now_ms);
        // False for a NaN warmup setting, which then disables pacing.
        let past_warmup = time_fraction >= cfg.pacing_warmup_fraction;
        if !past_warmup || time_fraction <= 0.0 {
            return 1.0;
        }
        let spend_fraction = committed / cfg.limit_usd;
        let ahead = spend_fraction / time_fraction;
        let left = if spend_fraction < 1.0 {
            (1.0 - time_fraction).max(0.0) / (1.0 - spend_fraction)
        } else {
            f64::INFINITY
        };
        let m = ahead.max(left).powf(cfg.pacing_gain);
        let m = m
            .max(cfg.pacing_min_multiplier)
            .min(cfg.pacing_max_multiplier);
        if m.is_finite() && m > 0.0 {
            m
        } else {
            1.0
        }
    }
}
