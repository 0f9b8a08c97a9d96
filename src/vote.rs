//! The vote: neighbours and their labels in, a tier decision out. Pure and synchronous.
//!
//! Each neighbour i (similarity s_i) gets weight w_i = exp((s_i - s_max) / temperature), a
//! softmax over similarities. A tier's expected quality is Q(t) = Σ w_i·q_i(t) / Σ w_i over the
//! neighbours that say something about t. The decision is the cheapest tier whose Q reaches
//! `quality_target` × max_t Q(t); below `min_similarity` the query is out of distribution and
//! goes to the fallback tier.
//!
//! With `category_baseline`, each neighbour's quality counts relative to its category: the
//! category's mean quality for the tier is replaced by the mean over all examples
//! ([`CategoryBaseline`]), so an example from an easy (or hard) source says "easier (or harder)
//! than is typical for its source" instead of passing on that source's base rate.

use std::collections::HashMap;

use serde::{Serialize, Serializer};

use crate::tier::Tiers;

/// The knobs of the vote, validated by the config.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Neighbours to consult.
    pub k: usize,
    /// 1.0 = never trade quality, 0.0 = always the cheapest tier.
    pub quality_target: f32,
    /// Below this top similarity the neighbours are not evidence: use `fallback_tier`.
    pub min_similarity: f32,
    /// Index of the tier for out-of-distribution queries.
    pub fallback_tier: usize,
    /// Softmax temperature over similarities; larger = closer to a plain mean.
    pub temperature: f32,
    /// Count each neighbour's quality relative to its category's mean (see
    /// [`CategoryBaseline`]). Off by default: with topic categories on tier labels, a
    /// category's base rate is real evidence; with one category per benchmark, it is not.
    pub category_baseline: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            k: 10,
            quality_target: 0.9,
            min_similarity: 0.35,
            fallback_tier: 0,
            temperature: 0.05,
            category_baseline: false,
        }
    }
}

/// Mean quality per tier, per category and over all examples, for re-basing each example's
/// quality on the overall mean: q'(t) = clamp(q(t) − mean_category(t) + mean_all(t), 0, 1).
/// Examples without a category form one group of their own; with a single group, q' = q.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CategoryBaseline {
    groups: HashMap<Option<String>, usize>,
    /// Per group, per tier: (sum of qualities, number of examples scoring the tier).
    stats: Vec<Vec<(f64, u64)>>,
    all: Vec<(f64, u64)>,
}

impl CategoryBaseline {
    /// Counts one example; returns its group, for [`CategoryBaseline::adjust`].
    pub fn add(&mut self, category: Option<&str>, quality: &[Option<f32>]) -> usize {
        let next = self.groups.len();
        let group = *self
            .groups
            .entry(category.map(str::to_string))
            .or_insert(next);
        if group == self.stats.len() {
            self.stats.push(Vec::new());
        }
        let n = quality.len();
        for s in [&mut self.stats[group], &mut self.all] {
            if s.len() < n {
                s.resize(n, (0.0, 0));
            }
        }
        for (t, q) in quality.iter().enumerate() {
            if let Some(q) = q {
                self.stats[group][t].0 += f64::from(*q);
                self.stats[group][t].1 += 1;
                self.all[t].0 += f64::from(*q);
                self.all[t].1 += 1;
            }
        }
        group
    }

    /// Forgets one example counted by [`CategoryBaseline::add`] in `group` (e.g. before it is
    /// counted again with a new label).
    pub fn remove(&mut self, group: usize, quality: &[Option<f32>]) {
        for (t, q) in quality.iter().enumerate() {
            if let Some(q) = q {
                for s in [self.stats.get_mut(group), Some(&mut self.all)]
                    .into_iter()
                    .flatten()
                {
                    if let Some(s) = s.get_mut(t) {
                        s.0 -= f64::from(*q);
                        s.1 = s.1.saturating_sub(1);
                    }
                }
            }
        }
    }

    /// An example's quality re-based from its group's mean on the overall mean.
    pub fn adjust(&self, group: usize, quality: &[Option<f32>]) -> Vec<Option<f32>> {
        let mean = |s: Option<&(f64, u64)>| s.filter(|s| s.1 > 0).map(|s| s.0 / s.1 as f64);
        quality
            .iter()
            .enumerate()
            .map(|(t, q)| {
                let q = (*q)?;
                let own = self.stats.get(group).and_then(|g| mean(g.get(t)));
                match (own, mean(self.all.get(t))) {
                    (Some(own), Some(all)) => {
                        Some((f64::from(q) + (all - own)).clamp(0.0, 1.0) as f32)
                    }
                    _ => Some(q),
                }
            })
            .collect()
    }
}

/// A neighbour as the vote sees it: similarity and per-tier quality (`None` = unknown).
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    pub similarity: f32,
    pub quality: Vec<Option<f32>>,
}

/// Per-tier scores in tier order, serialised as a JSON object `{tier: score}`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TierScores(pub Vec<(String, f32)>);

impl TierScores {
    pub fn get(&self, tier: &str) -> Option<f32> {
        self.0.iter().find(|(t, _)| t == tier).map(|(_, q)| *q)
    }
}

impl Serialize for TierScores {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// Why the vote chose what it chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// The neighbours' expected quality decided.
    Neighbors,
    /// No neighbour was similar enough: the fallback tier.
    OutOfDistribution,
}

/// The vote's result, before the router attaches model names and neighbour details.
#[derive(Debug, Clone, PartialEq)]
pub struct Vote {
    pub tier: usize,
    /// Weighted share of the neighbours whose own cheapest good-enough tier is the chosen one
    /// (0 when out of distribution: the neighbours are not evidence then).
    pub confidence: f32,
    pub quality: TierScores,
    pub basis: Basis,
    pub reason: String,
}

/// Decides a tier from the neighbours (any order; only the first `policy.k` by similarity count).
pub fn vote(neighbors: &[Evidence], tiers: &Tiers, policy: &Policy) -> Vote {
    let mut sorted: Vec<&Evidence> = neighbors.iter().collect();
    sorted.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
    sorted.truncate(policy.k.max(1));
    let top = sorted.first().map(|e| e.similarity);

    let weights: Vec<f32> = match top {
        Some(top) => sorted
            .iter()
            .map(|e| ((e.similarity - top) / policy.temperature.max(1e-6)).exp())
            .collect(),
        None => Vec::new(),
    };
    let quality = expected_quality(&sorted, &weights, tiers.len());
    let scores = TierScores(
        tiers
            .iter()
            .zip(&quality)
            .filter_map(|(t, q)| q.map(|q| (t.name.clone(), q)))
            .collect(),
    );

    let fallback = |reason: String| Vote {
        tier: policy.fallback_tier,
        confidence: 0.0,
        quality: scores.clone(),
        basis: Basis::OutOfDistribution,
        reason,
    };
    let top = match top {
        None => return fallback("no examples to compare with: using the fallback tier".into()),
        Some(top) if top < policy.min_similarity => {
            return fallback(format!(
                "out of distribution: the closest example has similarity {top:.2}, below \
                 min_similarity {:.2}, so the fallback tier `{}` is used",
                policy.min_similarity, tiers[policy.fallback_tier].name
            ))
        }
        Some(top) => top,
    };
    let Some(tier) = cheapest_sufficient(&quality, policy.quality_target) else {
        return fallback(
            "the neighbours give no quality for any tier: using the fallback tier".into(),
        );
    };

    // Agreement: how much of the neighbour weight would, on its own, have chosen this tier.
    let total: f32 = weights.iter().sum();
    let agree: f32 = sorted
        .iter()
        .zip(&weights)
        .filter(|(e, _)| cheapest_sufficient(&e.quality, policy.quality_target) == Some(tier))
        .map(|(_, w)| w)
        .sum();
    let confidence = if total > 0.0 { agree / total } else { 0.0 };

    let best = quality.iter().flatten().fold(0.0f32, |a, &b| a.max(b));
    let chosen_q = quality[tier].unwrap_or(0.0);
    let reason = if tier == 0 {
        format!(
            "`{}` is the cheapest tier and its expected quality {chosen_q:.2} reaches {:.0}% of \
             the best ({best:.2}) among {} neighbours (closest similarity {top:.2})",
            tiers[tier].name,
            policy.quality_target * 100.0,
            sorted.len()
        )
    } else {
        let below = (0..tier)
            .rev()
            .find_map(|t| quality[t].map(|q| (t, q)))
            .map(|(t, q)| format!("; `{}` reaches only {q:.2}", tiers[t].name))
            .unwrap_or_default();
        format!(
            "`{}` is the cheapest tier whose expected quality {chosen_q:.2} reaches {:.0}% of the \
             best ({best:.2}){below}, from {} neighbours (closest similarity {top:.2})",
            tiers[tier].name,
            policy.quality_target * 100.0,
            sorted.len()
        )
    };
    let reason = if policy.category_baseline {
        format!("{reason}; qualities are relative to each neighbour's category")
    } else {
        reason
    };
    Vote {
        tier,
        confidence,
        quality: scores,
        basis: Basis::Neighbors,
        reason,
    }
}

/// Q(t) per tier: the weighted mean over the neighbours that score t, `None` if none does.
fn expected_quality(neighbors: &[&Evidence], weights: &[f32], n_tiers: usize) -> Vec<Option<f32>> {
    (0..n_tiers)
        .map(|t| {
            let (mut num, mut den) = (0.0f32, 0.0f32);
            for (e, w) in neighbors.iter().zip(weights) {
                if let Some(q) = e.quality.get(t).copied().flatten() {
                    num += w * q;
                    den += w;
                }
            }
            (den > 0.0).then(|| num / den)
        })
        .collect()
}

/// The cheapest tier whose quality reaches `target` × the best quality.
pub fn cheapest_sufficient(quality: &[Option<f32>], target: f32) -> Option<usize> {
    let best = quality.iter().flatten().copied().reduce(f32::max)?;
    // A small tolerance so that float noise in the weighted mean never breaks a tie upwards.
    let bar = target * best - 1e-6;
    quality.iter().position(|q| q.is_some_and(|q| q >= bar))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tier::test_tiers;

    fn tiers() -> Tiers {
        test_tiers(&["small", "medium", "large"])
    }

    /// Evidence from a tier label: 0 below it, 1 from it up.
    fn labeled(similarity: f32, tier: usize) -> Evidence {
        Evidence {
            similarity,
            quality: (0..3)
                .map(|t| Some(if t >= tier { 1.0 } else { 0.0 }))
                .collect(),
        }
    }

    fn policy() -> Policy {
        Policy {
            fallback_tier: 2,
            ..Policy::default()
        }
    }

    #[test]
    fn single_example_decides() {
        let v = vote(&[labeled(0.8, 1)], &tiers(), &policy());
        assert_eq!(v.tier, 1);
        assert_eq!(v.basis, Basis::Neighbors);
        assert_eq!(v.confidence, 1.0);
        assert_eq!(v.quality.get("small"), Some(0.0));
        assert_eq!(v.quality.get("large"), Some(1.0));
    }

    #[test]
    fn all_same_labels_give_that_tier_with_full_confidence() {
        let n: Vec<_> = (0..10).map(|i| labeled(0.9 - i as f32 * 0.01, 0)).collect();
        let v = vote(&n, &tiers(), &policy());
        assert_eq!((v.tier, v.confidence), (0, 1.0));
        assert!(v.reason.contains("cheapest tier"), "{}", v.reason);
    }

    #[test]
    fn exact_tie_goes_to_the_cheaper_tier_only_when_the_target_allows() {
        // Equal weight on a small and a large example: Q = (0.5, 0.5, 1.0).
        let n = [labeled(0.8, 0), labeled(0.8, 2)];
        let at = |target| {
            let p = Policy {
                quality_target: target,
                ..policy()
            };
            vote(&n, &tiers(), &p)
        };
        assert_eq!(at(0.5).tier, 0, "0.5 >= 0.5 x 1.0");
        assert_eq!(at(0.51).tier, 2);
        assert!((at(0.5).confidence - 0.5).abs() < 1e-6);
        // Tied quality between tiers: the cheaper one wins even at target 1.0.
        let same = [labeled(0.8, 1), labeled(0.8, 1)];
        let v = vote(
            &same,
            &tiers(),
            &Policy {
                quality_target: 1.0,
                ..policy()
            },
        );
        assert_eq!(v.tier, 1);
    }

    #[test]
    fn closer_neighbours_weigh_more() {
        let n = [labeled(0.9, 2), labeled(0.7, 0), labeled(0.7, 0)];
        let v = vote(&n, &tiers(), &policy());
        assert_eq!(v.tier, 2, "{v:?}");
        // A huge temperature is a plain mean: two small votes against one large.
        let flat = Policy {
            temperature: 1e6,
            quality_target: 0.6,
            ..policy()
        };
        assert_eq!(vote(&n, &tiers(), &flat).tier, 0);
    }

    #[test]
    fn out_of_distribution_uses_the_fallback() {
        let v = vote(&[labeled(0.2, 0)], &tiers(), &policy());
        assert_eq!(v.tier, 2);
        assert_eq!(v.basis, Basis::OutOfDistribution);
        assert_eq!(v.confidence, 0.0);
        assert!(v.reason.contains("out of distribution"), "{}", v.reason);
        let empty = vote(&[], &tiers(), &policy());
        assert_eq!((empty.tier, empty.basis), (2, Basis::OutOfDistribution));
    }

    #[test]
    fn knob_extremes() {
        let n = [labeled(0.9, 2), labeled(0.85, 1), labeled(0.8, 0)];
        let with = |f: fn(&mut Policy)| {
            let mut p = policy();
            f(&mut p);
            vote(&n, &tiers(), &p)
        };
        assert_eq!(
            with(|p| p.quality_target = 0.0).tier,
            0,
            "target 0 = always cheapest"
        );
        assert_eq!(
            with(|p| p.quality_target = 1.0).tier,
            2,
            "target 1 = best quality"
        );
        assert_eq!(
            with(|p| p.min_similarity = 1.0).basis,
            Basis::OutOfDistribution
        );
        assert_eq!(with(|p| p.min_similarity = -1.0).basis, Basis::Neighbors);
        // k = 1: only the closest neighbour counts.
        assert_eq!(
            with(|p| {
                p.k = 1;
                p.quality_target = 0.5
            })
            .tier,
            2
        );
        // k larger than the neighbour list is fine.
        assert_eq!(with(|p| p.k = 1000).basis, Basis::Neighbors);
    }

    #[test]
    fn unknown_tiers_are_left_out_not_zeroed() {
        let n = [Evidence {
            similarity: 0.9,
            quality: vec![Some(0.9), None, Some(1.0)],
        }];
        let v = vote(&n, &tiers(), &policy());
        assert_eq!(v.tier, 0);
        assert_eq!(v.quality.get("medium"), None);
        assert_eq!(
            serde_json::to_string(&v.quality).unwrap(),
            r#"{"small":0.9,"large":1.0}"#
        );
    }

    #[test]
    fn category_baseline_rebases_on_the_overall_mean() {
        let mut b = CategoryBaseline::default();
        // Category "easy": small scores 1 and 1 (mean 1); "hard": 0 and 1 (mean 0.5);
        // overall small mean 0.75. Large scores 1 everywhere; medium is never scored.
        let easy = b.add(Some("easy"), &[Some(1.0), None, Some(1.0)]);
        assert_eq!(b.add(Some("easy"), &[Some(1.0), None, Some(1.0)]), easy);
        let hard = b.add(Some("hard"), &[Some(0.0), None, Some(1.0)]);
        b.add(Some("hard"), &[Some(1.0), None, Some(1.0)]);
        assert_ne!(easy, hard);
        // 1 - 1 + 0.75 = 0.75 for a success where every example succeeds;
        // 1 - 0.5 + 0.75 = 1.25 -> clamped to 1; 0 - 0.5 + 0.75 = 0.25.
        assert_eq!(
            b.adjust(easy, &[Some(1.0), None, Some(1.0)]),
            [Some(0.75), None, Some(1.0)]
        );
        assert_eq!(b.adjust(hard, &[Some(1.0), None, Some(1.0)])[0], Some(1.0));
        assert_eq!(b.adjust(hard, &[Some(0.0), None, Some(1.0)])[0], Some(0.25));
        // A tier the group never scored is left as it is.
        assert_eq!(b.adjust(easy, &[None, Some(0.3), None])[1], Some(0.3));
    }

    #[test]
    fn one_category_or_none_leaves_quality_unchanged() {
        let mut b = CategoryBaseline::default();
        let g = b.add(None, &[Some(0.0), Some(1.0), Some(1.0)]);
        b.add(None, &[Some(1.0), Some(1.0), Some(1.0)]);
        assert_eq!(b.add(None, &[Some(0.0), Some(0.0), Some(1.0)]), g);
        for q in [
            [Some(0.0), Some(1.0), Some(1.0)],
            [Some(0.3), Some(0.0), None],
        ] {
            assert_eq!(b.adjust(g, &q), q, "exactly: the shift is 0");
        }
    }

    #[test]
    fn category_baseline_changes_the_ranking_not_just_the_scale() {
        // Two neighbours, equally close: one from a source where small fails half the time
        // and failed here, one from a source where small always succeeds. Raw: Q(small) =
        // 0.5. Re-based (overall small mean 2/3): (0 - 0.5 + 2/3, 1 - 1 + 2/3) -> 0.417.
        let mut b = CategoryBaseline::default();
        let hard = b.add(Some("hard"), &[Some(0.0), None, Some(1.0)]);
        b.add(Some("hard"), &[Some(1.0), None, Some(1.0)]);
        let easy = b.add(Some("easy"), &[Some(1.0), None, Some(1.0)]);
        let raw = [
            (hard, vec![Some(0.0), None, Some(1.0)]),
            (easy, vec![Some(1.0), None, Some(1.0)]),
        ];
        let evidence = |rebase: bool| -> Vec<Evidence> {
            raw.iter()
                .map(|(g, q)| Evidence {
                    similarity: 0.8,
                    quality: if rebase { b.adjust(*g, q) } else { q.clone() },
                })
                .collect()
        };
        let p = Policy {
            quality_target: 0.45,
            ..policy()
        };
        let plain = vote(&evidence(false), &tiers(), &p);
        assert_eq!(plain.tier, 0, "0.5 >= 0.45 x 1");
        let rebased = vote(
            &evidence(true),
            &tiers(),
            &Policy {
                category_baseline: true,
                ..p
            },
        );
        let q_small = rebased.quality.get("small").unwrap();
        assert!((q_small - 2.5 / 6.0).abs() < 1e-6, "{q_small}");
        assert_eq!(rebased.tier, 2, "0.417 < 0.45 x 1");
        assert!(rebased.reason.contains("category"), "{}", rebased.reason);
    }

    #[test]
    fn all_zero_quality_goes_cheapest() {
        let n = [Evidence {
            similarity: 0.9,
            quality: vec![Some(0.0); 3],
        }];
        assert_eq!(vote(&n, &tiers(), &policy()).tier, 0);
    }
}
