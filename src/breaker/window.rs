//! The sliding failure-rate window: a fixed ring of time buckets, so memory stays bounded however
//! many calls a model takes.

use serde::{Deserialize, Serialize};

use super::{secs_to_ms, BreakerConfig};

/// Number of time buckets the failure-rate window is split into. The window
/// slides one bucket (`window_secs / WINDOW_BUCKETS`) at a time, so it covers
/// between 90% and 100% of `window_secs`, with memory fixed at ten buckets.
pub const WINDOW_BUCKETS: usize = 10;

/// One time bucket of the failure-rate window.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
struct Bucket {
    /// Absolute bucket number (`now_ms / bucket_ms`) this bucket holds.
    epoch: u64,
    /// Calls recorded in the bucket.
    calls: u32,
    /// Sum of failure weights recorded in the bucket.
    failures: f64,
}

/// Sliding failure-rate window made of [`WINDOW_BUCKETS`] time buckets.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub(super) struct Window {
    /// Width of one bucket in ms (0 until the first record).
    bucket_ms: u64,
    /// Latest bucket number seen; time going backwards is treated as this.
    head_epoch: u64,
    /// Ring of buckets, indexed by `epoch % WINDOW_BUCKETS`.
    buckets: [Bucket; WINDOW_BUCKETS],
}

impl Window {
    fn bucket_ms_for(cfg: &BreakerConfig) -> u64 {
        secs_to_ms(cfg.window_secs)
            .div_ceil(WINDOW_BUCKETS as u64)
            .max(1)
    }

    pub(super) fn record(&mut self, now_ms: u64, weight: f64, cfg: &BreakerConfig) {
        let bucket_ms = Self::bucket_ms_for(cfg);
        if self.bucket_ms != bucket_ms {
            // First use, or the window length changed: old buckets are in
            // other units, start afresh.
            *self = Window {
                bucket_ms,
                ..Window::default()
            };
        }
        let epoch = (now_ms / bucket_ms).max(self.head_epoch);
        self.head_epoch = epoch;
        let bucket = &mut self.buckets[(epoch % WINDOW_BUCKETS as u64) as usize];
        if bucket.epoch != epoch {
            *bucket = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        bucket.calls = bucket.calls.saturating_add(1);
        bucket.failures += weight;
    }

    /// (calls, weighted failures) in the window ending at `now_ms`.
    pub(super) fn totals(&self, now_ms: u64, cfg: &BreakerConfig) -> (u64, f64) {
        if self.bucket_ms == 0 || self.bucket_ms != Self::bucket_ms_for(cfg) {
            return (0, 0.0);
        }
        let current = (now_ms / self.bucket_ms).max(self.head_epoch);
        self.buckets
            .iter()
            .filter(|b| b.epoch.saturating_add(WINDOW_BUCKETS as u64) > current)
            .fold((0, 0.0), |(calls, failures), b| {
                (calls + u64::from(b.calls), failures + b.failures)
            })
    }

    pub(super) fn clear(&mut self) {
        self.buckets = Default::default();
    }
}
