//! Leave-one-out routing of a tier-labeled example set (the default set's self-check).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::Result;
use crate::tier::Tiers;
use crate::vote::{vote, Evidence, Policy};

/// Leave-one-out routing of a tier-labeled example set: each example is routed by all the
/// others. Rows of `confusion` are labels, columns decisions (tier order).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeaveOneOut {
    pub tiers: Vec<String>,
    pub confusion: Vec<Vec<usize>>,
    /// Category -> (correct, total).
    pub by_category: BTreeMap<String, (usize, usize)>,
}

impl LeaveOneOut {
    pub fn accuracy(&self) -> f64 {
        let total: usize = self.confusion.iter().flatten().sum();
        let correct: usize = (0..self.tiers.len()).map(|t| self.confusion[t][t]).sum();
        correct as f64 / total.max(1) as f64
    }

    /// Share of the examples labeled `tier` that were routed to it.
    pub fn recall(&self, tier: usize) -> f64 {
        self.confusion[tier][tier] as f64 / self.confusion[tier].iter().sum::<usize>().max(1) as f64
    }
}

/// Runs leave-one-out over examples with their embeddings (same order), with an exact index.
pub fn leave_one_out(
    examples: &[crate::corpus::Example],
    vectors: &[Vec<f32>],
    tiers: &Tiers,
    policy: &Policy,
) -> Result<LeaveOneOut> {
    use crate::index::{FlatIndex, VectorIndex};
    let dim = vectors.first().map_or(0, Vec::len);
    let mut index = FlatIndex::new(dim);
    index.add(vectors)?;
    let mut quality: Vec<_> = examples.iter().map(|e| e.label.quality(tiers)).collect();
    if policy.category_baseline {
        // Category means over the whole set (the left-out example included).
        let mut baseline = crate::vote::CategoryBaseline::default();
        let groups: Vec<usize> = examples
            .iter()
            .zip(&quality)
            .map(|(e, q)| baseline.add(e.category.as_deref(), q))
            .collect();
        quality = groups
            .iter()
            .zip(&quality)
            .map(|(&g, q)| baseline.adjust(g, q))
            .collect();
    }
    let mut confusion = vec![vec![0usize; tiers.len()]; tiers.len()];
    let mut by_category: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (i, (e, v)) in examples.iter().zip(vectors).enumerate() {
        let crate::corpus::Label::Tier { tier } = &e.label else {
            continue;
        };
        let evidence: Vec<Evidence> = index
            .search(v, policy.k + 1)?
            .into_iter()
            .filter(|h| h.id != i)
            .take(policy.k)
            .map(|h| Evidence {
                similarity: h.similarity,
                quality: quality[h.id].clone(),
            })
            .collect();
        let label = tiers.require(tier)?;
        let decided = vote(&evidence, tiers, policy).tier;
        confusion[label][decided] += 1;
        let cell = by_category
            .entry(e.category.clone().unwrap_or_else(|| "-".into()))
            .or_default();
        cell.0 += usize::from(label == decided);
        cell.1 += 1;
    }
    Ok(LeaveOneOut {
        tiers: tiers.names().iter().map(|s| s.to_string()).collect(),
        confusion,
        by_category,
    })
}
