//! Approximate nearest neighbours with hnsw_rs. The only file that names hnsw_rs.
//!
//! The distance is our own: 1 − dot, clamped at 0, on our vectorised dot product. hnsw_rs's
//! default `DistDot` is scalar and asserts `1 − dot ≥ 0`, which float error breaks on
//! near-duplicates and self-queries.

use hnsw_rs::prelude::{Distance, Hnsw};

use super::{check_dim, dot, Hit, VectorIndex};
use crate::error::Result;

/// Graph parameters: `m` links per node, `ef_construction` candidates while inserting,
/// `ef_search` candidates while searching (raised to k when k is larger).
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HnswParams {
    pub m: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 16,
            ef_construction: 200,
            // 64 gave recall@10 of only ~0.89 on tightly clustered synthetic data; 128 costs
            // well under a millisecond more per query, small beside the embedding.
            ef_search: 128,
        }
    }
}

/// Cosine distance for unit vectors.
#[derive(Debug, Clone, Copy, Default)]
struct UnitCosine;

impl Distance<f32> for UnitCosine {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

/// An HNSW graph over unit vectors.
pub struct HnswIndex {
    dim: usize,
    params: HnswParams,
    graph: Hnsw<'static, f32, UnitCosine>,
    len: usize,
}

impl HnswIndex {
    /// An empty graph sized for about `expected` vectors.
    pub fn new(dim: usize, expected: usize, params: HnswParams) -> Self {
        const MAX_LAYERS: usize = 16;
        let graph = Hnsw::new(
            params.m.clamp(2, 255),
            expected.max(1024),
            MAX_LAYERS,
            params.ef_construction.max(params.m),
            UnitCosine,
        );
        HnswIndex {
            dim,
            params,
            graph,
            len: 0,
        }
    }
}

impl VectorIndex for HnswIndex {
    fn kind(&self) -> &'static str {
        "hnsw"
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.len
    }

    fn add(&mut self, vectors: &[Vec<f32>]) -> Result<()> {
        for v in vectors {
            check_dim(self.dim, v.len())?;
        }
        let items: Vec<(&[f32], usize)> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (v.as_slice(), self.len + i))
            .collect();
        // Parallel insertion pays off only for large batches; single adds stay on this thread.
        if items.len() >= 256 {
            self.graph.parallel_insert_slice(&items);
        } else {
            for item in items {
                self.graph.insert_slice(item);
            }
        }
        self.len += vectors.len();
        Ok(())
    }

    fn search(&self, query: &[f32], k: usize) -> Result<Vec<Hit>> {
        check_dim(self.dim, query.len())?;
        if self.len == 0 || k == 0 {
            return Ok(Vec::new());
        }
        let ef = self.params.ef_search.max(k);
        let mut hits: Vec<Hit> = self
            .graph
            .search(query, k, ef)
            .into_iter()
            .map(|n| Hit {
                id: n.d_id,
                similarity: 1.0 - n.distance,
            })
            .collect();
        hits.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        Ok(hits)
    }
}
