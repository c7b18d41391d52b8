//! SimHash codes: 256 sign bits of random-hyperplane projections, whose Hamming distance
//! estimates the angle between two vectors (Charikar, "Similarity estimation techniques from
//! rounding algorithms", STOC 2002).
//!
//! For a hyperplane through the origin with a Gaussian normal, two vectors at angle θ fall on
//! different sides with probability θ/π. With [`BITS`] independent hyperplanes the Hamming distance
//! of their codes is Binomial([`BITS`], θ/π), so a cosine threshold `s` becomes a bound on the
//! Hamming distance that a pair at cosine `s` or above exceeds only with a vanishing probability
//! ([`hamming_bound`]). The index (`index.rs`) compares a query's code with every entry's
//! (32 bytes each instead of a 1 KB vector) and rescores only the entries within that bound.
//!
//! The signs of the raw coordinates would not do: the built-in lexical embedding can be mostly
//! non-negative, and then most of its bits would be the same for every prompt.
//!
//! # State
//! The hyperplanes are drawn from a fixed seed, so every replica and every restart draws the same
//! ones; the codes are never persisted or shared (each replica computes them from the vectors it
//! holds, when it stores or restores an entry), so a change of seed or of this scheme needs no
//! migration.

use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::StandardNormal;

use super::embed::dot;

/// Bits in a code: 256 separate a pair at the default threshold (cosine 0.95, ~26 bits apart on
/// average) from an unrelated one (~128 bits apart) by more than ten standard deviations, and four
/// words per entry keep the scan of 100,000 codes at 3.2 MB.
pub const BITS: usize = 256;

/// A code: bit `i` is set when the vector lies on the positive side of hyperplane `i`.
pub type Code = [u64; BITS / 64];

/// Seed of the hyperplanes (any fixed value: replicas and restarts must agree on it).
const SEED: u64 = 0x5157_4a5c_0de5_1a6e;

/// Standard deviations of margin above the expected Hamming distance at the threshold: a pair
/// exactly at the threshold lands beyond the bound with probability below 1e-6 (normal
/// approximation of the binomial), a pair above the threshold less often still.
const MARGIN_SIGMAS: f64 = 5.0;

/// [`BITS`] Gaussian hyperplanes for vectors of one dimension, stored as [`BITS`] rows.
#[derive(Debug, Clone)]
pub struct Hyperplanes {
    dim: usize,
    normals: Vec<f32>,
}

impl Hyperplanes {
    /// The hyperplanes for `dim`-dimensional vectors, drawn from [`SEED`] (the same for every
    /// process that uses the same `rand` release, as the lock file pins it).
    pub fn new(dim: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(SEED ^ dim as u64);
        let normals = (0..BITS * dim)
            .map(|_| rng.sample::<f32, _>(StandardNormal))
            .collect();
        Hyperplanes { dim, normals }
    }

    /// Bytes held by the hyperplanes.
    pub fn bytes(&self) -> u64 {
        (self.normals.len() * std::mem::size_of::<f32>()) as u64
    }

    /// The code of `v` (which has `dim` values; a zero vector gets the all-zero code).
    #[inline(always)]
    pub fn code(&self, v: &[f32]) -> Code {
        debug_assert_eq!(v.len(), self.dim);
        let mut code = [0_u64; BITS / 64];
        if self.dim == 0 {
            return code;
        }
        for (i, normal) in self.normals.chunks_exact(self.dim).enumerate() {
            if dot(normal, v) > 0.0 {
                code[i / 64] |= 1 << (i % 64);
            }
        }
        code
    }
}

/// Hamming distance of two codes.
#[inline(always)]
pub fn hamming(a: &Code, b: &Code) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// The largest Hamming distance a pair at cosine `min_similarity` or above can be expected to
/// have: the binomial's mean at the threshold's angle, `BITS * acos(s) / pi`, plus
/// [`MARGIN_SIGMAS`] of its standard deviations, rounded up.
pub fn hamming_bound(min_similarity: f32) -> u32 {
    let p = f64::from(min_similarity).clamp(-1.0, 1.0).acos() / std::f64::consts::PI;
    let n = BITS as f64;
    let bound = n * p + MARGIN_SIGMAS * (n * p * (1.0 - p)).sqrt();
    bound.ceil().min(n) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::embed::normalise;

    fn unit(rng: &mut StdRng, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim).map(|_| rng.sample(StandardNormal)).collect();
        normalise(&mut v);
        v
    }

    #[test]
    fn hamming_fraction_estimates_the_angle() {
        // Pairs at a known cosine: the mean Hamming distance over many pairs is BITS * acos(c)/pi.
        let mut rng = StdRng::seed_from_u64(7);
        let planes = Hyperplanes::new(64);
        for cosine in [0.99_f32, 0.95, 0.8, 0.0] {
            let pairs = 400;
            let mut total = 0_u64;
            for _ in 0..pairs {
                let a = unit(&mut rng, 64);
                // b = c * a + sqrt(1 - c^2) * (a unit vector orthogonal to a).
                let mut o = unit(&mut rng, 64);
                let along = dot(&o, &a);
                o.iter_mut().zip(&a).for_each(|(x, y)| *x -= along * y);
                normalise(&mut o);
                let s = (1.0 - cosine * cosine).sqrt();
                let b: Vec<f32> = a.iter().zip(&o).map(|(x, y)| cosine * x + s * y).collect();
                total += u64::from(hamming(&planes.code(&a), &planes.code(&b)));
            }
            let mean = total as f64 / f64::from(pairs);
            let expected = BITS as f64 * f64::from(cosine).acos() / std::f64::consts::PI;
            // The mean of 400 binomials has a standard deviation below 0.4 bits.
            assert!(
                (mean - expected).abs() < 2.0,
                "cosine {cosine}: mean {mean}, expected {expected}"
            );
        }
    }

    #[test]
    fn bound_grows_as_the_threshold_falls_and_keeps_identical_vectors() {
        assert_eq!(hamming_bound(1.0), 0);
        let b95 = hamming_bound(0.95);
        // Mean 25.9 bits, standard deviation 4.8: 5 of them above.
        assert_eq!(b95, 50);
        assert!(hamming_bound(0.8) > b95);
        assert_eq!(hamming_bound(-1.0), BITS as u32);
        let planes = Hyperplanes::new(8);
        let v = [0.5_f32, -0.5, 0.5, -0.5, 0.0, 0.0, 0.0, 0.0];
        assert_eq!(hamming(&planes.code(&v), &planes.code(&v)), 0);
        assert_eq!(planes.code(&[0.0; 8]), [0; 4]);
    }

    #[test]
    fn the_same_seed_draws_the_same_hyperplanes() {
        let v: Vec<f32> = (0..16).map(|i| (i as f32 - 7.5) / 10.0).collect();
        assert_eq!(Hyperplanes::new(16).code(&v), Hyperplanes::new(16).code(&v));
        assert_eq!(Hyperplanes::new(16).bytes(), 16 * 256 * 4);
    }
}
