//! The similarity index: every vector of one embedding space in one flat array, searched
//! exhaustively, through an 8-bit copy first.
//!
//! Exact search was chosen over an approximate-nearest-neighbour graph because the cache deletes
//! all the time (TTL, LRU eviction, invalidation), which graph indexes handle badly, and because
//! at the cache's sizes (up to ~100,000 entries of ~256 dimensions) a scan over contiguous memory
//! is fast enough once it reads a quarter of the bytes.
//!
//! # Two passes, exact answers
//! Each row is kept twice: as `f32` (the stored vector) and quantised to `i8` codes with one
//! scale per row (`x ≈ scale · code`, `scale = max|x| / 127`), the codes of all rows in one
//! contiguous buffer. A lookup quantises the query the same way and scans the codes: an integer
//! dot product per row, which the compiler vectorises (SSE2 `pmaddwd` on any x86-64), over 1 byte
//! per dimension instead of 4. The quantised dot is within a bound of the exact one: writing
//! `q = q' + δq` and `r = r' + δr` (`q'`, `r'` the dequantised codes),
//! `|q·r − q'·r'| ≤ ‖δq‖·‖r‖ + ‖q'‖·‖δr‖`, and both error norms are computed when a vector is
//! quantised. Only rows whose quantised score plus that bound reaches the threshold (and the best
//! similarity found so far) are rescored in `f32`; a row the `f32` scan would return is never
//! skipped, so a hit still means `cosine >= similarity` on the stored vector and the answer is the
//! one the plain `f32` scan gives (the tests check this on a seeded random set). At a threshold of
//! 0.9 or more, a few rows per lookup reach the rescoring pass.
//!
//! A removed row is filled by the last row, so the arrays never have holes. Memory: `5 · dim + 28`
//! bytes per row (README, "Response cache", has the measured lookup times).

use super::embed::dot;

/// Slack added to the quantisation bound for `f32` rounding in either score (the exact dot of
/// 4,096 unit-vector products rounds by well under this).
const ROUNDING_SLACK: f32 = 1e-4;

/// Largest code magnitude: symmetric, so `-128` never occurs.
const CODE_MAX: f32 = 127.0;

/// Lanes of the integer dot product (16 `i32` accumulators: four SSE2 registers, two AVX2).
const LANES: usize = 16;

/// One embedding space: rows of `dim` floats (unit length in the cache), each with its `i8` codes,
/// the scope it may match in and the cache slot that owns it.
#[derive(Debug, Clone, Default)]
pub struct VectorSpace {
    dim: usize,
    rows: Vec<f32>,
    /// Per row, `dim` codes: the row quantised (see the module doc).
    codes: Vec<i8>,
    /// Per row: the value of one code step.
    scales: Vec<f32>,
    /// Per row: its norm and the norm of its quantisation error (both rounded up).
    norms: Vec<f32>,
    errors: Vec<f32>,
    /// Per row: the scope hash (tenant, system prompt, parameters) a query must share.
    scopes: Vec<u64>,
    /// Per row: the owning entry's slot.
    owners: Vec<usize>,
}

/// The best row of a search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nearest {
    pub owner: usize,
    pub similarity: f32,
}

/// A vector quantised: its codes, the step, its norm and the norm of what the codes lose.
struct Quantised {
    codes: Vec<i8>,
    scale: f32,
    norm: f32,
    error: f32,
}

/// `v` as `i8` codes with one scale, and the norms that bound the error of a quantised dot.
fn quantise(v: &[f32]) -> Quantised {
    let max = v.iter().fold(0.0_f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 && max.is_finite() {
        max / CODE_MAX
    } else {
        0.0
    };
    let mut codes = Vec::with_capacity(v.len());
    let (mut norm, mut error) = (0.0_f64, 0.0_f64);
    for &x in v {
        let c = if scale > 0.0 {
            (x / scale).round().clamp(-CODE_MAX, CODE_MAX)
        } else {
            0.0
        };
        codes.push(c as i8);
        let d = f64::from(x) - f64::from(scale) * f64::from(c);
        norm += f64::from(x) * f64::from(x);
        error += d * d;
    }
    // Rounded up, so the bound stays a bound after the conversion to f32.
    let up = |x: f64| (x.sqrt() * (1.0 + 1e-6)) as f32 + f32::MIN_POSITIVE;
    Quantised {
        codes,
        scale,
        norm: up(norm),
        error: up(error),
    }
}

/// Integer dot product of the query's codes (widened to `i16` once per lookup) and a row's, in
/// [`LANES`] independent sums so the compiler vectorises it. Exact: `|code| <= 127` and at most
/// 4,096 dimensions keep every lane far inside `i32`, so the wrapping operations never wrap; they
/// only spare the overflow checks of builds with debug assertions, which would stop the
/// vectorisation.
fn dot_codes(q: &[i16], r: &[i8]) -> i32 {
    let mul = |x: i16, y: i8| i32::from(x).wrapping_mul(i32::from(y));
    let mut acc = [0_i32; LANES];
    let (cq, cr) = (q.chunks_exact(LANES), r.chunks_exact(LANES));
    let tail = cq
        .remainder()
        .iter()
        .zip(cr.remainder())
        .fold(0_i32, |s, (&x, &y)| s.wrapping_add(mul(x, y)));
    for (x, y) in cq.zip(cr) {
        for i in 0..LANES {
            acc[i] = acc[i].wrapping_add(mul(x[i], y[i]));
        }
    }
    acc.iter().fold(tail, |s, &a| s.wrapping_add(a))
}

impl VectorSpace {
    pub fn new(dim: usize) -> Self {
        VectorSpace {
            dim,
            ..VectorSpace::default()
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.owners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// Bytes the rows take (vectors, codes and per-row fields), for the cache's size report.
    pub fn bytes(&self) -> u64 {
        let per_row = self.dim * (4 + 1) + 4 * 3 + 8 + std::mem::size_of::<usize>();
        (self.len() * per_row) as u64
    }

    /// Appends a row for `owner`; returns its index. `v` must have `dim` values.
    pub fn push(&mut self, v: &[f32], scope: u64, owner: usize) -> usize {
        debug_assert_eq!(v.len(), self.dim);
        let q = quantise(v);
        self.rows.extend_from_slice(v);
        self.codes.extend_from_slice(&q.codes);
        self.scales.push(q.scale);
        self.norms.push(q.norm);
        self.errors.push(q.error);
        self.scopes.push(scope);
        self.owners.push(owner);
        self.owners.len() - 1
    }

    /// Removes row `row`, moving the last row into its place; returns the owner of the moved row
    /// (whose row index is now `row`), if one moved.
    pub fn swap_remove(&mut self, row: usize) -> Option<usize> {
        let last = self.owners.len().checked_sub(1)?;
        if row > last {
            return None;
        }
        if row != last {
            let d = self.dim;
            self.rows.copy_within(last * d..(last + 1) * d, row * d);
            self.codes.copy_within(last * d..(last + 1) * d, row * d);
        }
        self.rows.truncate(last * self.dim);
        self.codes.truncate(last * self.dim);
        self.scales.swap_remove(row);
        self.norms.swap_remove(row);
        self.errors.swap_remove(row);
        self.scopes.swap_remove(row);
        self.owners.swap_remove(row);
        (row != last).then(|| self.owners[row])
    }

    /// The most similar row in `scope` to the unit vector `q`, at or above `min_similarity`: the
    /// row (and similarity) an exhaustive `f32` scan returns, the first of equals.
    pub fn nearest(&self, q: &[f32], scope: u64, min_similarity: f32) -> Option<Nearest> {
        self.scan(q, scope, min_similarity).0
    }

    /// [`Self::nearest`], and how many rows the `f32` pass rescored.
    fn scan(&self, q: &[f32], scope: u64, min_similarity: f32) -> (Option<Nearest>, usize) {
        if q.len() != self.dim || self.dim == 0 {
            return (None, 0);
        }
        let qq = quantise(q);
        let codes: Vec<i16> = qq.codes.iter().map(|&c| i16::from(c)).collect();
        // |q·r − q'·r'| <= ‖δq‖·‖r‖ + ‖q'‖·‖δr‖, with ‖q'‖ <= ‖q‖ + ‖δq‖.
        let q_norm = qq.norm + qq.error;
        let mut best: Option<Nearest> = None;
        let mut rescored = 0;
        for (i, row) in self.codes.chunks_exact(self.dim).enumerate() {
            if self.scopes[i] != scope {
                continue;
            }
            let approx = qq.scale * self.scales[i] * dot_codes(&codes, row) as f32;
            let bound = qq.error * self.norms[i] + q_norm * self.errors[i] + ROUNDING_SLACK;
            let floor = best.map_or(min_similarity, |b| b.similarity);
            if approx + bound < floor {
                continue;
            }
            rescored += 1;
            let s = dot(q, &self.rows[i * self.dim..(i + 1) * self.dim]);
            if s >= min_similarity && best.is_none_or(|b| s > b.similarity) {
                best = Some(Nearest {
                    owner: self.owners[i],
                    similarity: s,
                });
            }
        }
        (best, rescored)
    }

    pub fn clear(&mut self) {
        self.rows.clear();
        self.codes.clear();
        self.scales.clear();
        self.norms.clear();
        self.errors.clear();
        self.scopes.clear();
        self.owners.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::embed::normalise;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn swap_remove_keeps_rows_with_their_owners() {
        let mut s = VectorSpace::new(2);
        s.push(&[1.0, 0.0], 7, 10);
        s.push(&[0.0, 1.0], 7, 11);
        s.push(&[0.6, 0.8], 7, 12);
        assert_eq!(s.swap_remove(0), Some(12));
        let hit = s.nearest(&[0.6, 0.8], 7, 0.9);
        assert_eq!(hit.map(|n| n.owner), Some(12));
        assert_eq!(s.nearest(&[1.0, 0.0], 7, 0.9), None);
        assert_eq!(s.swap_remove(1), None);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn search_stays_in_its_scope() {
        let mut s = VectorSpace::new(2);
        s.push(&[1.0, 0.0], 1, 0);
        assert_eq!(s.nearest(&[1.0, 0.0], 2, 0.5), None);
        assert_eq!(s.nearest(&[1.0, 0.0], 1, 0.5).map(|n| n.owner), Some(0));
    }

    fn unit(rng: &mut SmallRng, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        normalise(&mut v);
        v
    }

    /// The plain `f32` scan the index must agree with: the best row at or above `min`, the
    /// first of equals.
    fn exact(s: &VectorSpace, q: &[f32], scope: u64, min: f32) -> Option<Nearest> {
        let mut best: Option<Nearest> = None;
        for (i, row) in s.rows.chunks_exact(s.dim).enumerate() {
            let sim = dot(q, row);
            if s.scopes[i] == scope && sim >= min && best.is_none_or(|b| sim > b.similarity) {
                best = Some(Nearest {
                    owner: s.owners[i],
                    similarity: sim,
                });
            }
        }
        best
    }

    /// `v` moved towards a random direction by `noise` and renormalised: a near-duplicate whose
    /// cosine to `v` falls as `noise` grows.
    fn perturbed(rng: &mut SmallRng, v: &[f32], noise: f32) -> Vec<f32> {
        let d = unit(rng, v.len());
        let mut out: Vec<f32> = v.iter().zip(&d).map(|(a, b)| a + noise * b).collect();
        normalise(&mut out);
        out
    }

    #[test]
    fn the_quantised_scan_finds_what_the_exact_scan_finds_on_a_seeded_random_set() {
        let mut rng = SmallRng::seed_from_u64(1306);
        // 256 dimensions (the lexical embedding's) and 100 (not a multiple of the lanes).
        for dim in [256, 100] {
            let mut s = VectorSpace::new(dim);
            let mut kept = Vec::new();
            for owner in 0..3000 {
                let v = if owner % 3 == 0 || kept.is_empty() {
                    unit(&mut rng, dim)
                } else {
                    // Clusters of near-duplicates, so thresholds split them.
                    let base: &Vec<f32> = &kept[rng.random_range(0..kept.len())];
                    let noise = rng.random_range(0.0..0.6);
                    perturbed(&mut rng, base, noise)
                };
                s.push(&v, owner % 2, owner as usize);
                kept.push(v);
            }
            // Removals move rows: the codes must move with them.
            for _ in 0..500 {
                let row = rng.random_range(0..s.len());
                s.swap_remove(row);
            }
            let (mut queries, mut hits, mut rescored) = (0, 0, 0);
            for _ in 0..300 {
                let base = &kept[rng.random_range(0..kept.len())];
                let noise = rng.random_range(0.0..0.5);
                let q = perturbed(&mut rng, base, noise);
                for min in [0.5, 0.8, 0.9, 0.95, 0.99] {
                    let scope = rng.random_range(0..2);
                    let (found, n) = s.scan(&q, scope, min);
                    assert_eq!(found, exact(&s, &q, scope, min), "dim {dim}, min {min}");
                    queries += 1;
                    hits += usize::from(found.is_some());
                    rescored += n;
                }
            }
            // The set has hits and misses at every threshold, and the f32 pass sees a few rows
            // per lookup, not the scan's 2,500.
            assert!(
                hits > queries / 5 && hits < queries * 4 / 5,
                "{hits}/{queries}"
            );
            assert!(
                rescored < queries * 10,
                "{rescored} rescored in {queries} lookups"
            );
        }
    }

    #[test]
    fn the_bound_covers_vectors_of_any_shape() {
        // One large component (a coarse step for the rest), zeros, and a non-unit vector.
        let mut spiky = vec![0.001_f32; 64];
        spiky[0] = 1.0;
        normalise(&mut spiky);
        let mut s = VectorSpace::new(64);
        s.push(&spiky, 0, 0);
        s.push(&[0.0; 64], 0, 1);
        let long: Vec<f32> = spiky.iter().map(|x| x * 3.0).collect();
        s.push(&long, 0, 2);
        let mut q = spiky.clone();
        q[1] += 0.01;
        for min in [0.0, 0.5, 0.99] {
            assert_eq!(s.nearest(&q, 0, min), exact(&s, &q, 0, min), "{min}");
        }
        assert_eq!(s.nearest(&[0.0; 64], 0, 0.5), None);
    }
}
