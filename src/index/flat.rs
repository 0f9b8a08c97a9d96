//! Exact nearest neighbours by scanning every vector: the oracle for the HNSW index, and the
//! faster choice for small example sets.

use super::{check_dim, dot, Hit, VectorIndex};
use crate::error::Result;

/// All vectors in one contiguous buffer, scanned per query.
#[derive(Debug, Clone)]
pub struct FlatIndex {
    dim: usize,
    data: Vec<f32>,
}

impl FlatIndex {
    pub fn new(dim: usize) -> Self {
        FlatIndex {
            dim,
            data: Vec::new(),
        }
    }
}

impl VectorIndex for FlatIndex {
    fn kind(&self) -> &'static str {
        "flat"
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.data.len() / self.dim.max(1)
    }

    fn add(&mut self, vectors: &[Vec<f32>]) -> Result<()> {
        for v in vectors {
            check_dim(self.dim, v.len())?;
        }
        self.data.reserve(vectors.len() * self.dim);
        for v in vectors {
            self.data.extend_from_slice(v);
        }
        Ok(())
    }

    fn search(&self, query: &[f32], k: usize) -> Result<Vec<Hit>> {
        check_dim(self.dim, query.len())?;
        let mut hits: Vec<Hit> = self
            .data
            .chunks_exact(self.dim)
            .enumerate()
            .map(|(id, v)| Hit {
                id,
                similarity: dot(query, v),
            })
            .collect();
        let by_similarity = |a: &Hit, b: &Hit| b.similarity.total_cmp(&a.similarity);
        if k < hits.len() && k > 0 {
            hits.select_nth_unstable_by(k - 1, by_similarity);
        }
        hits.truncate(k);
        hits.sort_by(by_similarity);
        Ok(hits)
    }

    fn vector(&self, id: usize) -> Option<&[f32]> {
        self.data.get(id * self.dim..(id + 1) * self.dim)
    }
}
