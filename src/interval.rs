//! Means with 95% confidence intervals, for paired shadow comparisons and A/B reports.
//!
//! [`MeanVar`] is Welford's running mean and sum of squared deviations (Welford 1962, "Note on a
//! method for calculating corrected sums of squares and products"): one pass, numerically
//! stable, and small enough to keep per (class, model, shadow model). Intervals use Student's t
//! with n - 1 degrees of freedom for one mean, and Welch's interval (Welch-Satterthwaite degrees
//! of freedom) for the difference of two independent means.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// Running count, mean and sum of squared deviations of a sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MeanVar {
    pub n: u64,
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
}

/// A mean (or a difference of means) with its 95% interval; `lo == hi == mean` below 2
/// observations, where no spread is known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Interval {
    pub n: u64,
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Interval {
    fn around(n: u64, mean: f64, half_width: f64) -> Interval {
        let h = if half_width.is_finite() {
            half_width
        } else {
            0.0
        };
        Interval {
            n,
            mean,
            lo: mean - h,
            hi: mean + h,
        }
    }
}

/// The 97.5% quantile of Student's t with `df` degrees of freedom (1.96 when it cannot be
/// computed, e.g. df not positive).
pub fn t975(df: f64) -> f64 {
    StudentsT::new(0.0, 1.0, df)
        .map(|t| t.inverse_cdf(0.975))
        .unwrap_or(1.96)
}

impl MeanVar {
    /// Adds one observation (Welford's update); a non-finite value is ignored.
    pub fn push(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    /// The sample of `xs`.
    pub fn of(xs: impl IntoIterator<Item = f64>) -> MeanVar {
        let mut m = MeanVar::default();
        for x in xs {
            m.push(x);
        }
        m
    }

    /// Unbiased sample variance (0 below 2 observations).
    pub fn variance(&self) -> f64 {
        if self.n < 2 {
            0.0
        } else {
            (self.m2 / (self.n - 1) as f64).max(0.0)
        }
    }

    /// The mean with its 95% t interval.
    pub fn interval(&self) -> Interval {
        if self.n < 2 {
            return Interval::around(self.n, self.mean, 0.0);
        }
        let se = (self.variance() / self.n as f64).sqrt();
        Interval::around(self.n, self.mean, t975((self.n - 1) as f64) * se)
    }

    /// `self`'s mean minus `other`'s, independent samples, with Welch's 95% interval; `n` is the
    /// smaller sample.
    pub fn minus(&self, other: &MeanVar) -> Interval {
        let n = self.n.min(other.n);
        let mean = self.mean - other.mean;
        if n < 2 {
            return Interval::around(n, mean, 0.0);
        }
        let (va, vb) = (
            self.variance() / self.n as f64,
            other.variance() / other.n as f64,
        );
        let se2 = va + vb;
        let df = if se2 > 0.0 {
            se2 * se2
                / (va * va / (self.n - 1) as f64 + vb * vb / (other.n - 1) as f64)
                    .max(f64::MIN_POSITIVE)
        } else {
            (self.n + other.n - 2) as f64
        };
        Interval::around(n, mean, t975(df) * se2.sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welford_matches_the_two_pass_formulas() {
        let xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        let m = MeanVar::of(xs);
        let mean = xs.iter().sum::<f64>() / 8.0;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 7.0;
        assert!((m.mean - mean).abs() < 1e-12 && (m.variance() - var).abs() < 1e-12);
        let i = m.interval();
        let half = t975(7.0) * (var / 8.0).sqrt();
        assert!((i.hi - i.mean - half).abs() < 1e-12);
        // t with 7 df: 2.365 (tables).
        assert!((t975(7.0) - 2.3646).abs() < 1e-3);
    }

    #[test]
    fn welch_difference_of_equal_samples_straddles_zero() {
        let a = MeanVar::of([1.0, 2.0, 3.0, 4.0]);
        let b = MeanVar::of([1.0, 2.0, 3.0, 4.0]);
        let d = a.minus(&b);
        assert_eq!(d.mean, 0.0);
        assert!(d.lo < 0.0 && d.hi > 0.0);
        let c = MeanVar::of([11.0, 12.0, 13.0, 14.0]);
        let d = c.minus(&a);
        assert!((d.mean - 10.0).abs() < 1e-12 && d.lo > 0.0);
        assert_eq!(MeanVar::of([1.0]).interval().lo, 1.0);
    }
}
