//! Nearest-neighbour search over L2-normalised embeddings, by cosine similarity (= dot product).
//!
//! [`VectorIndex`] is the seam: [`FlatIndex`] is exact and the oracle for tests;
//! [`HnswIndex`] is approximate and scales. Ids are positions: the i-th vector added is id i,
//! which is also its position in the router's example list.

mod flat;
mod hnsw;

pub use flat::FlatIndex;
pub use hnsw::{HnswIndex, HnswParams};

use crate::error::Result;

/// A search result: the id of a stored vector and its cosine similarity to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub id: usize,
    pub similarity: f32,
}

/// A store of equal-length vectors that returns the most similar ones to a query.
pub trait VectorIndex: Send + Sync {
    /// Which implementation, for logs and `model info`.
    fn kind(&self) -> &'static str;
    /// Vector length; every added vector and every query must have it.
    fn dim(&self) -> usize;
    /// Number of stored vectors.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Appends vectors; they get ids `len()..len() + vectors.len()`.
    fn add(&mut self, vectors: &[Vec<f32>]) -> Result<()>;
    /// Up to `k` hits, most similar first.
    fn search(&self, query: &[f32], k: usize) -> Result<Vec<Hit>>;
    /// Stored vector `id`, where the index keeps vectors it can lend (the exact one does).
    fn vector(&self, _id: usize) -> Option<&[f32]> {
        None
    }
}

/// Which index to build for a given number of examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexKind {
    /// Exact below `AUTO_HNSW_THRESHOLD` vectors (as fast and never misses), HNSW above.
    Auto,
    Flat,
    Hnsw,
}

/// Below this many vectors an exact scan is about as fast as HNSW here (0.7 ms at 10k).
pub const AUTO_HNSW_THRESHOLD: usize = 10_000;

/// Whether `kind` means an HNSW graph for about `expected` vectors.
pub fn uses_hnsw(kind: IndexKind, expected: usize) -> bool {
    match kind {
        IndexKind::Flat => false,
        IndexKind::Hnsw => true,
        IndexKind::Auto => expected >= AUTO_HNSW_THRESHOLD,
    }
}

/// Builds an empty index of the requested kind for about `expected` vectors.
pub fn new_index(
    kind: IndexKind,
    dim: usize,
    expected: usize,
    params: HnswParams,
) -> Box<dyn VectorIndex> {
    if uses_hnsw(kind, expected) {
        Box::new(HnswIndex::new(dim, expected, params))
    } else {
        Box::new(FlatIndex::new(dim))
    }
}

/// Dot product, vectorised for the best instruction set this CPU has.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            return unsafe { dot_avx512(a, b) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_portable(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    dot_portable(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_portable(a, b)
}

/// Sixteen independent accumulators, so the compiler can keep them in one wide register
/// (float addition is not associative, so it will not reorder a single running sum).
#[inline(always)]
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

fn check_dim(expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(crate::error::Error::DimensionMismatch { expected, got })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic pseudo-random unit vectors (xorshift), clustered like real embeddings:
    /// each is a random centre plus noise, so neighbours are meaningful.
    pub fn unit_vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut s = seed.max(1);
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f32 / (1u64 << 53) as f32 - 0.5
        };
        let centres: Vec<Vec<f32>> = (0..64)
            .map(|_| (0..dim).map(|_| next()).collect())
            .collect();
        (0..n)
            .map(|i| {
                let c = &centres[i % centres.len()];
                let v: Vec<f32> = c.iter().map(|x| x + 0.6 * next()).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.into_iter().map(|x| x / norm).collect()
            })
            .collect()
    }

    #[test]
    fn dot_matches_naive_for_odd_lengths() {
        for len in [0, 1, 15, 16, 17, 384, 385] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-4, "len {len}");
        }
    }

    /// The recall test the issue asks for: HNSW recall@10 >= 0.95 against the exact index on
    /// 10k+ vectors.
    #[test]
    fn hnsw_recall_at_10_against_flat() {
        let dim = 64;
        let data = unit_vectors(12_000, dim, 7);
        let queries = unit_vectors(200, dim, 99);
        let mut flat = FlatIndex::new(dim);
        let mut hnsw = HnswIndex::new(dim, data.len(), HnswParams::default());
        flat.add(&data).unwrap();
        hnsw.add(&data).unwrap();
        assert_eq!(hnsw.len(), 12_000);
        let mut found = 0;
        for q in &queries {
            let truth: Vec<usize> = flat.search(q, 10).unwrap().iter().map(|h| h.id).collect();
            let got = hnsw.search(q, 10).unwrap();
            assert!(got.windows(2).all(|w| w[0].similarity >= w[1].similarity));
            found += got.iter().filter(|h| truth.contains(&h.id)).count();
        }
        let recall = found as f64 / (10 * queries.len()) as f64;
        eprintln!("hnsw recall@10 on 12k clustered vectors: {recall:.4}");
        assert!(recall >= 0.95, "recall@10 = {recall:.4}");
    }

    #[test]
    fn both_indexes_find_self_and_reject_wrong_dims() {
        let data = unit_vectors(500, 32, 3);
        for mut index in [
            new_index(IndexKind::Flat, 32, 500, HnswParams::default()),
            new_index(IndexKind::Hnsw, 32, 500, HnswParams::default()),
        ] {
            index.add(&data).unwrap();
            // Self-queries have similarity ~1: no panic from float error above 1. The exact
            // index always finds the query itself first; HNSW (approximate, with a random
            // layer assignment) may rarely miss one, as a full test run once showed.
            let mut first = 0;
            for (i, v) in data.iter().enumerate().take(50) {
                let hits = index.search(v, 3).unwrap();
                first += usize::from(hits[0].id == i);
                assert!(hits[0].similarity <= 1.0 + 1e-4, "{}", index.kind());
            }
            let needed = if index.kind() == "flat" { 50 } else { 48 };
            assert!(
                first >= needed,
                "{}: {first}/50 found themselves",
                index.kind()
            );
            assert!(matches!(
                index.search(&[0.0; 7], 3),
                Err(crate::error::Error::DimensionMismatch {
                    expected: 32,
                    got: 7
                })
            ));
            assert!(index.add(&[vec![0.0; 31]]).is_err());
            assert_eq!(index.len(), 500);
        }
    }

    #[test]
    fn empty_index_returns_nothing() {
        let flat = FlatIndex::new(8);
        assert!(flat.search(&[0.0; 8], 5).unwrap().is_empty());
        let hnsw = HnswIndex::new(8, 0, HnswParams::default());
        assert!(hnsw.search(&[0.0; 8], 5).unwrap().is_empty());
    }
}
