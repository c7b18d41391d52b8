//! The similarity index: every vector of one embedding space in one flat array, searched
//! exhaustively.
//!
//! Exact search was chosen over an approximate-nearest-neighbour graph because the cache deletes
//! all the time (TTL, LRU eviction, invalidation), which graph indexes handle badly, and because a
//! scan of unit vectors is one dot product per entry over contiguous memory: `benches/cache.rs`
//! measures it at 100,000 entries (README, "Response cache"). A removed row is filled by the last
//! row, so the array never has holes.

use super::embed::dot;

/// One embedding space: rows of `dim` unit-length floats, each with the scope it may match in and
/// the cache slot that owns it.
#[derive(Debug, Clone, Default)]
pub struct VectorSpace {
    dim: usize,
    rows: Vec<f32>,
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

    /// Appends a row for `owner`; returns its index. `v` must have `dim` values.
    pub fn push(&mut self, v: &[f32], scope: u64, owner: usize) -> usize {
        debug_assert_eq!(v.len(), self.dim);
        self.rows.extend_from_slice(v);
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
        self.scopes.swap_remove(row);
        self.owners.swap_remove(row);
        (row != last).then(|| self.owners[row])
    }

    /// The most similar row in `scope` to the unit vector `q`, at or above `min_similarity`.
    pub fn nearest(&self, q: &[f32], scope: u64, min_similarity: f32) -> Option<Nearest> {
        if q.len() != self.dim || self.dim == 0 {
            return None;
        }
        let mut best: Option<Nearest> = None;
        for (i, row) in self.rows.chunks_exact(self.dim).enumerate() {
            if self.scopes[i] != scope {
                continue;
            }
            let s = dot(q, row);
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
        self.scopes.clear();
        self.owners.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
