//! The similarity index: every vector of one embedding space in one flat array, searched in two
//! stages once the space is large.
//!
//! Small spaces (up to [`EXACT_SCAN_ROWS`]) are scanned exhaustively: one dot product per entry
//! over contiguous memory. Larger ones first compare the query's SimHash code (`simhash.rs`:
//! 256 bits per vector) with every entry's by Hamming distance, keep the entries within the
//! distance a pair at the threshold can have ([`simhash::hamming_bound`]), at most
//! `max_candidates` of them (the closest by Hamming distance), and rescore those with the exact
//! cosine. The answer is the exact scan's (same rows, same dot product, same tie-break) whenever
//! the exact best row is among the candidates; `src/cache/tests.rs` measures how often that holds
//! on clustered vectors and on lexical embeddings of prompts. The first stage reads 32 bytes per
//! entry instead of a 1 KB vector, so at 100,000 entries a lookup reads 3.2 MB, not 100 MB
//! (README, "Response cache", for the figures).
//!
//! An approximate-nearest-neighbour graph was not used: the cache deletes all the time (TTL, LRU
//! eviction, invalidation), which graph indexes handle badly, while a flat array of codes deletes
//! as cheaply as it inserts. A removed row is filled by the last row, so the arrays never have
//! holes. The scans run through `pulp`'s runtime dispatch so that the popcount and the dot products
//! use the CPU's instructions (the crate forbids `unsafe` and the build targets baseline x86-64).
//!
//! # State
//! Nothing here is persisted: the index is local to a process and rebuilt from the stored entries
//! on restart (and, in cluster mode, from the entries each replica pulls from Redis); the codes are
//! recomputed from the vectors with hyperplanes drawn from a fixed seed.

use std::sync::Arc;

use super::embed::dot;
use super::simhash::{self, Code, Hyperplanes};

/// Up to this many rows a lookup scans every vector, and its answer is exact: at 4,096 rows of 256
/// floats (4 MB) the scan takes about half as long as the two stages at 100,000 rows, so the
/// exactness costs no worst case (`benches/cache.rs`).
pub const EXACT_SCAN_ROWS: usize = 4_096;

/// Default cap on the candidates of the first stage that are rescored: a hit's near duplicates are
/// rarely more than a few dozen, and rescoring 256 costs a few microseconds.
pub const DEFAULT_MAX_CANDIDATES: usize = 256;

/// One embedding space: rows of `dim` unit-length floats, each with its SimHash code, the scope it
/// may match in and the cache slot that owns it.
#[derive(Debug, Clone)]
pub struct VectorSpace {
    dim: usize,
    rows: Vec<f32>,
    /// Per row: its SimHash code under `planes`.
    codes: Vec<Code>,
    /// Per row: the scope hash (tenant, system prompt, parameters) a query must share.
    scopes: Vec<u64>,
    /// Per row: the owning entry's slot.
    owners: Vec<usize>,
    /// Drawn on the first push (a space that never holds a row costs nothing).
    planes: Option<Arc<Hyperplanes>>,
    max_candidates: usize,
}

impl Default for VectorSpace {
    fn default() -> Self {
        VectorSpace::new(0)
    }
}

/// The best row of a search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nearest {
    pub owner: usize,
    pub similarity: f32,
}

impl VectorSpace {
    pub fn new(dim: usize) -> Self {
        VectorSpace {
            dim,
            rows: Vec::new(),
            codes: Vec::new(),
            scopes: Vec::new(),
            owners: Vec::new(),
            planes: None,
            max_candidates: DEFAULT_MAX_CANDIDATES,
        }
    }

    /// Sets how many first-stage candidates a lookup rescores at most (at least 1).
    pub fn set_max_candidates(&mut self, max_candidates: usize) {
        self.max_candidates = max_candidates.max(1);
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

    /// Bytes held by the vectors, their codes and the hyperplanes (the scope and owner of a row
    /// are in the cache's per-entry overhead).
    pub fn bytes(&self) -> u64 {
        let rows = std::mem::size_of_val(self.rows.as_slice());
        let codes = std::mem::size_of_val(self.codes.as_slice());
        (rows + codes) as u64 + self.planes.as_ref().map_or(0, |p| p.bytes())
    }

    /// Appends a row for `owner`; returns its index. `v` must have `dim` values.
    pub fn push(&mut self, v: &[f32], scope: u64, owner: usize) -> usize {
        debug_assert_eq!(v.len(), self.dim);
        let dim = self.dim;
        let planes = self
            .planes
            .get_or_insert_with(|| Arc::new(Hyperplanes::new(dim)));
        let code = pulp::Arch::new().dispatch(Coding { planes, v });
        self.rows.extend_from_slice(v);
        self.codes.push(code);
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
            let (head, tail) = self.rows.split_at_mut(last * self.dim);
            head[row * self.dim..(row + 1) * self.dim].copy_from_slice(&tail[..self.dim]);
        }
        self.rows.truncate(last * self.dim);
        self.codes.swap_remove(row);
        self.scopes.swap_remove(row);
        self.owners.swap_remove(row);
        (row != last).then(|| self.owners[row])
    }

    /// The most similar row in `scope` to the unit vector `q`, at or above `min_similarity`:
    /// exhaustively in a small space or for a threshold so low that the codes would keep most rows,
    /// in two stages otherwise.
    pub fn nearest(&self, q: &[f32], scope: u64, min_similarity: f32) -> Option<Nearest> {
        let bound = simhash::hamming_bound(min_similarity);
        let stage = match &self.planes {
            Some(planes)
                if self.len() > EXACT_SCAN_ROWS && (bound as usize) < simhash::BITS / 2 =>
            {
                Stage::TwoStage(planes, bound)
            }
            _ => Stage::Exact,
        };
        self.lookup(q, scope, min_similarity, stage)
    }

    /// The exhaustive scan, whatever the size: the reference the two stages are measured against.
    pub fn nearest_exact(&self, q: &[f32], scope: u64, min_similarity: f32) -> Option<Nearest> {
        self.lookup(q, scope, min_similarity, Stage::Exact)
    }

    fn lookup(&self, q: &[f32], scope: u64, min_similarity: f32, stage: Stage) -> Option<Nearest> {
        if q.len() != self.dim || self.dim == 0 {
            return None;
        }
        pulp::Arch::new().dispatch(Lookup {
            space: self,
            q,
            scope,
            min_similarity,
            stage,
        })
    }

    /// The first stage: rows in `scope` whose code is within `bound` of `code`, the
    /// `max_candidates` closest if more, in ascending row order.
    #[inline(always)]
    fn candidates(&self, code: &Code, scope: u64, bound: u32) -> Vec<usize> {
        let mut found: Vec<(u32, usize)> = Vec::new();
        for (i, c) in self.codes.iter().enumerate() {
            let d = simhash::hamming(code, c);
            if d <= bound && self.scopes[i] == scope {
                found.push((d, i));
            }
        }
        if found.len() > self.max_candidates {
            found.select_nth_unstable_by_key(self.max_candidates - 1, |&(d, _)| d);
            found.truncate(self.max_candidates);
        }
        let mut rows: Vec<usize> = found.into_iter().map(|(_, i)| i).collect();
        rows.sort_unstable();
        rows
    }

    /// The most similar of `rows` (ascending) in `scope` at or above `min_similarity`; the first
    /// of equals.
    #[inline(always)]
    fn best_of(
        &self,
        rows: impl Iterator<Item = usize>,
        q: &[f32],
        scope: u64,
        min_similarity: f32,
    ) -> Option<Nearest> {
        let mut best: Option<Nearest> = None;
        for i in rows {
            if self.scopes[i] != scope {
                continue;
            }
            let s = dot(q, &self.rows[i * self.dim..(i + 1) * self.dim]);
            if s >= min_similarity && best.is_none_or(|b| s > b.similarity) {
                best = Some(Nearest {
                    owner: self.owners[i],
                    similarity: s,
                });
            }
        }
        best
    }

    pub fn clear(&mut self) {
        self.rows.clear();
        self.codes.clear();
        self.scopes.clear();
        self.owners.clear();
    }
}

/// How a lookup searches.
enum Stage<'a> {
    Exact,
    /// Codes within the Hamming bound, then the exact cosine.
    TwoStage(&'a Hyperplanes, u32),
}

/// A lookup run through `pulp`'s dispatch. A struct with an `inline(always)` body rather than a
/// closure: only code inlined into pulp's function is compiled with the detected features (a
/// closure of this size was not inlined, and its popcounts stayed the baseline's bit tricks).
struct Lookup<'a> {
    space: &'a VectorSpace,
    q: &'a [f32],
    scope: u64,
    min_similarity: f32,
    stage: Stage<'a>,
}

impl pulp::WithSimd for Lookup<'_> {
    type Output = Option<Nearest>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> Self::Output {
        let Lookup {
            space,
            q,
            scope,
            min_similarity,
            stage,
        } = self;
        match stage {
            Stage::Exact => space.best_of(0..space.len(), q, scope, min_similarity),
            Stage::TwoStage(planes, bound) => {
                let rows = space.candidates(&planes.code(q), scope, bound);
                space.best_of(rows.into_iter(), q, scope, min_similarity)
            }
        }
    }
}

/// A row's code, computed through `pulp`'s dispatch (as [`Lookup`]).
struct Coding<'a> {
    planes: &'a Hyperplanes,
    v: &'a [f32],
}

impl pulp::WithSimd for Coding<'_> {
    type Output = Code;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> Self::Output {
        self.planes.code(self.v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};
    use rand_distr::StandardNormal;

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

    #[test]
    fn two_stages_find_moved_rows_and_not_removed_ones() {
        // Above EXACT_SCAN_ROWS: the codes must move with their rows and leave with them.
        let dim = 16;
        let n = EXACT_SCAN_ROWS + 100;
        let mut rng = StdRng::seed_from_u64(3);
        let rows: Vec<Vec<f32>> = (0..n)
            .map(|_| {
                let mut v: Vec<f32> = (0..dim).map(|_| rng.sample(StandardNormal)).collect();
                crate::cache::embed::normalise(&mut v);
                v
            })
            .collect();
        let row = |i: usize| rows[i].clone();
        let mut s = VectorSpace::new(dim);
        for i in 0..n {
            s.push(&row(i), 0, i);
        }
        let found = |s: &VectorSpace, i: usize| s.nearest(&row(i), 0, 0.999).map(|n| n.owner);
        assert_eq!(found(&s, 5), Some(5));
        // Row 5 goes; the last row takes its place and is still found, row 5 no more.
        assert_eq!(s.swap_remove(5), Some(n - 1));
        assert_eq!(found(&s, n - 1), Some(n - 1));
        assert_eq!(found(&s, 5), None);
        assert_eq!(s.nearest(&row(7), 1, 0.999), None);
        assert_eq!(
            found(&s, 7),
            s.nearest_exact(&row(7), 0, 0.999).map(|n| n.owner)
        );
        // Ten near copies of row 9 (cosine ~0.99, ~11 bits away) with only two candidates
        // rescored: the closest codes are kept, and row 9's own (0 bits away) is one of them.
        s.set_max_candidates(2);
        for k in 0..10 {
            let mut v: Vec<f32> = row(9)
                .iter()
                .map(|x| x + 0.035 * rng.sample::<f32, _>(StandardNormal))
                .collect();
            crate::cache::embed::normalise(&mut v);
            s.push(&v, 0, n + k);
        }
        let near = s.nearest(&row(9), 0, 0.95);
        assert_eq!(near.map(|n| n.owner), Some(9));
        assert_eq!(near, s.nearest_exact(&row(9), 0, 0.95));
    }
}
