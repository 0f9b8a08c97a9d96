//! The label queue: from a decision log, the queries most worth a person's (or a judge's)
//! label, written as examples with the tier left empty.
//!
//! Priority: out-of-distribution decisions first (the router had no evidence; the most remote,
//! by the closest neighbour's similarity, first), then the decisions closest to flipping, by
//! their [`margin`]. The queue is kept diverse: exact repeats of a query collapse into one item
//! (counted in `meta.seen`), and a query is skipped when its cosine similarity to one already
//! chosen exceeds `max_similarity`, so a hundred rephrasings of one question cost one label.
//! Selection is greedy in priority order and embeds queries lazily, a chunk at a time, so a
//! long log costs embeddings only for the part of it that is looked at.
//!
//! A chat's decision is labeled by its latest user turn (examples are single texts); the
//! earlier turns go into `meta.context` so the labeler sees what the turn continued.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::decision_log::DecisionRecord;
use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::tier::Tiers;
use crate::vote::Basis;

/// Queries embedded per call while selecting.
const EMBED_CHUNK: usize = 64;

/// How the queue is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueOptions {
    /// Items to pick, at most.
    pub limit: usize,
    /// A query whose cosine similarity to an item already picked is above this is skipped.
    pub max_similarity: f32,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            limit: 100,
            max_similarity: 0.9,
        }
    }
}

/// Why a query is in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// No example was similar enough: the router used its fallback tier.
    OutOfDistribution,
    /// The vote was close to choosing another tier.
    Margin,
}

/// One line of the queue, in the examples format with an empty `tier` to be filled in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueItem {
    /// `lq-<decision id>`.
    pub id: String,
    pub text: String,
    /// Empty: `ingest` refuses the line until someone fills it in.
    pub tier: String,
    pub meta: QueueMeta,
}

/// What the labeler (and a later look at the example) should know about the decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueMeta {
    /// The decision record's id.
    pub decision: String,
    pub why: Why,
    /// See [`margin`]; absent for out-of-distribution decisions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub margin: Option<f32>,
    pub routed_tier: String,
    pub confidence: f32,
    /// How many logged decisions had exactly this query.
    pub seen: usize,
    /// Earlier user turns of a chat, oldest first (empty for a single query).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<String>,
}

/// What selection did, for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Decisions read.
    pub decisions: usize,
    /// Distinct queries among them (exact repeats collapse).
    pub distinct: usize,
    /// Decisions whose routed tier is not in the configured tiers, or has no logged quality:
    /// no margin can be computed; left out.
    pub unscored: usize,
    /// Picked, out of distribution.
    pub out_of_distribution: usize,
    /// Picked by margin.
    pub margin: usize,
    /// Looked at and skipped: too similar to a query already picked.
    pub too_similar: usize,
}

/// The chosen queries, in priority order, and how they were chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelQueue {
    pub items: Vec<QueueItem>,
    pub stats: QueueStats,
}

/// How far a logged decision is from flipping to another tier, relative to the best tier's
/// expected quality; 0 = on the edge.
///
/// The vote picks the cheapest tier c with Q(c) ≥ target × max Q (over the tiers with a
/// quality, in `tiers` order). Let every Q move by at most δ. The decision moves *up* once
/// Q(c) − δ falls below target × (M_c + δ), and *down* to a cheaper tier s once Q(s) + δ
/// reaches target × (M_s − δ), where M_x is the best Q among the tiers other than x. So the
/// decision holds for every δ below
///
/// ```text
/// margin = min( Q(c) − target·M_c,  min over s < c of (target·M_s − Q(s)) ) / ((1 + target) · max Q)
/// ```
///
/// (a term without tiers to compare with is left out; a single scored tier, which cannot flip,
/// has margin 1). Unlike the gaps to a fixed bar (Q(c) − bar, bar − Q(s)), this sees that a
/// bar set by the chosen tier itself moves with it: with target 0.9, Q = (0, 0, 1) has margin
/// 0.47 and the split Q = (0.5, 0.5, 1) has 0.21, where fixed-bar gaps give both 0.1. All
/// qualities 0 gives 0.
///
/// `None` if the chosen tier is not in `tiers` or has no quality.
pub fn margin(
    quality: &BTreeMap<String, f32>,
    chosen: &str,
    quality_target: f32,
    tiers: &Tiers,
) -> Option<f32> {
    let scored: Vec<(usize, f32)> = tiers
        .iter()
        .enumerate()
        .filter_map(|(i, t)| quality.get(&t.name).map(|q| (i, *q)))
        .collect();
    let c = tiers.position(chosen)?;
    let q_c = scored.iter().find(|(i, _)| *i == c)?.1;
    let best = scored.iter().map(|(_, q)| *q).fold(f32::MIN, f32::max);
    if best <= 0.0 {
        return Some(0.0);
    }
    let best_other = |x: usize| {
        scored
            .iter()
            .filter(|(i, _)| *i != x)
            .map(|(_, q)| *q)
            .reduce(f32::max)
    };
    let up = best_other(c).map(|m| q_c - quality_target * m);
    let down = scored
        .iter()
        .filter(|(i, _)| *i < c)
        .filter_map(|&(s, q_s)| best_other(s).map(|m| quality_target * m - q_s))
        .reduce(f32::min);
    let gap = match (up, down) {
        (None, None) => return Some(1.0),
        (Some(a), None) | (None, Some(a)) => a,
        (Some(a), Some(b)) => a.min(b),
    };
    // Float noise in the logged means can leave a tie a hair below zero.
    Some((gap / ((1.0 + quality_target) * best)).max(0.0))
}

/// A distinct query and the highest-priority decision that had it.
struct Candidate<'a> {
    record: &'a DecisionRecord,
    why: Why,
    margin: Option<f32>,
    /// Similarity of the closest neighbour (out of distribution: the most remote first).
    closest: f32,
    seen: usize,
}

impl Candidate<'_> {
    /// Priority order: out of distribution (most remote first), then smallest margin, then
    /// lowest confidence, then id, so the queue does not depend on the log's order.
    fn priority(&self, other: &Self) -> Ordering {
        let class = |c: &Self| c.why == Why::Margin;
        class(self)
            .cmp(&class(other))
            .then_with(|| match self.why {
                Why::OutOfDistribution => self.closest.total_cmp(&other.closest),
                Why::Margin => self
                    .margin
                    .unwrap_or(0.0)
                    .total_cmp(&other.margin.unwrap_or(0.0)),
            })
            .then_with(|| self.record.confidence.total_cmp(&other.record.confidence))
            .then_with(|| self.record.id.cmp(&other.record.id))
    }
}

/// Distinct queries in priority order, with the counts of decisions read and left out.
fn candidates<'a>(
    records: &'a [DecisionRecord],
    tiers: &Tiers,
) -> (Vec<Candidate<'a>>, QueueStats) {
    let mut stats = QueueStats {
        decisions: records.len(),
        ..QueueStats::default()
    };
    let mut all: Vec<Candidate> = Vec::new();
    for record in records {
        let (why, margin) = match record.basis {
            Basis::OutOfDistribution => (Why::OutOfDistribution, None),
            Basis::Neighbors => match margin(
                &record.quality,
                &record.tier,
                record.policy.quality_target,
                tiers,
            ) {
                Some(m) => (Why::Margin, Some(m)),
                None => {
                    stats.unscored += 1;
                    continue;
                }
            },
        };
        let closest = record
            .neighbors
            .iter()
            .map(|n| n.similarity)
            .reduce(f32::max)
            .unwrap_or(f32::NEG_INFINITY);
        all.push(Candidate {
            record,
            why,
            margin,
            closest,
            seen: 1,
        });
    }
    all.sort_by(Candidate::priority);
    // Exact repeats collapse into their highest-priority decision.
    let mut first: HashMap<&str, usize> = HashMap::new();
    let mut distinct: Vec<Candidate> = Vec::new();
    for c in all {
        match first.get(c.record.query.trim()) {
            Some(&i) => distinct[i].seen += 1,
            None => {
                first.insert(c.record.query.trim(), distinct.len());
                distinct.push(c);
            }
        }
    }
    stats.distinct = distinct.len();
    (distinct, stats)
}

/// Picks up to `options.limit` queries worth labeling from `records` (see the module docs).
/// `tiers` orders the logged qualities for the margin; `embedder` embeds the queries for the
/// diversity rule.
pub fn label_queue(
    records: &[DecisionRecord],
    tiers: &Tiers,
    embedder: &dyn Embedder,
    options: &QueueOptions,
) -> Result<LabelQueue> {
    if !(-1.0..=1.0).contains(&options.max_similarity) {
        return Err(Error::Config(format!(
            "max_similarity must be in [-1, 1], got {}",
            options.max_similarity
        )));
    }
    let (candidates, mut stats) = candidates(records, tiers);
    let mut picked: Vec<(&Candidate, Vec<f32>)> = Vec::new();
    'chunks: for chunk in candidates.chunks(EMBED_CHUNK) {
        if picked.len() >= options.limit {
            break;
        }
        let texts: Vec<&str> = chunk.iter().map(|c| c.record.query.trim()).collect();
        let vectors = embedder.embed(&texts)?;
        for (c, v) in chunk.iter().zip(vectors) {
            if picked.len() >= options.limit {
                break 'chunks;
            }
            // The embedder's vectors are unit length: the dot product is the cosine.
            let too_close = picked
                .iter()
                .any(|(_, p)| dot(p, &v) > options.max_similarity);
            if too_close {
                stats.too_similar += 1;
            } else {
                picked.push((c, v));
            }
        }
    }
    let mut ids: HashSet<String> = HashSet::new();
    let items: Vec<QueueItem> = picked
        .into_iter()
        .map(|(c, _)| {
            match c.why {
                Why::OutOfDistribution => stats.out_of_distribution += 1,
                Why::Margin => stats.margin += 1,
            }
            QueueItem {
                id: unique_id(&mut ids, &format!("lq-{}", c.record.id)),
                text: c.record.query.trim().to_string(),
                tier: String::new(),
                meta: QueueMeta {
                    decision: c.record.id.clone(),
                    why: c.why,
                    margin: c.margin,
                    routed_tier: c.record.tier.clone(),
                    confidence: c.record.confidence,
                    seen: c.seen,
                    context: c
                        .record
                        .context
                        .iter()
                        .rev()
                        .map(|t| t.text.clone())
                        .collect(),
                },
            }
        })
        .collect();
    Ok(LabelQueue { items, stats })
}

/// `id`, or `id-2`, `id-3`, … if taken: a client may reuse request ids, and ingest refuses a
/// file with duplicate ids.
fn unique_id(taken: &mut HashSet<String>, id: &str) -> String {
    let mut candidate = id.to_string();
    let mut n = 1;
    while !taken.insert(candidate.clone()) {
        n += 1;
        candidate = format!("{id}-{n}");
    }
    candidate
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision_log::{test_record, ContextTurn, LoggedNeighbor};
    use crate::router::HashedWords;
    use crate::tier::test_tiers;

    fn tiers() -> Tiers {
        test_tiers(&["small", "medium", "large"])
    }

    fn q(pairs: &[(&str, f32)]) -> BTreeMap<String, f32> {
        pairs.iter().map(|(t, q)| (t.to_string(), *q)).collect()
    }

    fn close(a: Option<f32>, b: f32) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-5)
    }

    #[test]
    fn margin_is_the_distance_to_a_flip() {
        let t = tiers();
        let unanimous = q(&[("small", 0.0), ("medium", 0.0), ("large", 1.0)]);
        // up: 1 - 0.9·0 = 1; down: 0.9·1 - 0 = 0.9 (both cheaper tiers); / 1.9.
        assert!(close(margin(&unanimous, "large", 0.9, &t), 0.9 / 1.9));
        let split = q(&[("small", 0.5), ("medium", 0.5), ("large", 1.0)]);
        // down: 0.9 - 0.5 = 0.4 → 0.4 / 1.9.
        assert!(close(margin(&split, "large", 0.9, &t), 0.4 / 1.9));
        // On the edge: medium just reaches 0.9 × 1.
        let edge = q(&[("small", 0.2), ("medium", 0.9), ("large", 1.0)]);
        assert!(close(margin(&edge, "medium", 0.9, &t), 0.0));
        // The cheapest tier, chosen: only the upward flip counts. up: 0.8 - 0.5·1 = 0.3,
        // relative to best 1 and 1 + 0.5.
        let cheap = q(&[("small", 0.8), ("large", 1.0)]);
        assert!(close(margin(&cheap, "small", 0.5, &t), 0.3 / 1.5));
        // Normalised by the best: halving every quality keeps the margin.
        let half = q(&[("small", 0.4), ("large", 0.5)]);
        assert!(close(margin(&half, "small", 0.5, &t), 0.3 / 1.5));
        // Unknown tiers are skipped, not zero: medium has no quality here.
        let gap = q(&[("small", 0.1), ("large", 1.0)]);
        assert!(close(margin(&gap, "large", 0.9, &t), (0.9 - 0.1) / 1.9));
        // One scored tier cannot flip; all zero is on the edge.
        assert!(close(margin(&q(&[("large", 1.0)]), "large", 0.9, &t), 1.0));
        let zero = q(&[("small", 0.0), ("large", 0.0)]);
        assert!(close(margin(&zero, "small", 0.9, &t), 0.0));
        // A tier the ladder lacks, or one without a quality: no margin.
        assert_eq!(margin(&unanimous, "huge", 0.9, &t), None);
        assert_eq!(margin(&gap, "medium", 0.9, &t), None);
    }

    /// A decision by neighbours with the given qualities (tier = the vote's choice at 0.9).
    fn voted(id: &str, query: &str, tier: &str, quality: &[(&str, f32)]) -> DecisionRecord {
        let mut r = test_record(id, query, tier);
        r.quality = q(quality);
        r.neighbors = vec![LoggedNeighbor {
            id: Some("e".into()),
            similarity: 0.8,
        }];
        r
    }

    fn ood(id: &str, query: &str, closest: f32) -> DecisionRecord {
        let mut r = test_record(id, query, "large");
        r.basis = Basis::OutOfDistribution;
        r.confidence = 0.0;
        r.neighbors = vec![LoggedNeighbor {
            id: Some("e".into()),
            similarity: closest,
        }];
        r
    }

    fn queue(records: &[DecisionRecord], options: QueueOptions) -> LabelQueue {
        label_queue(records, &tiers(), &HashedWords::new(), &options).unwrap()
    }

    fn ids(queue: &LabelQueue) -> Vec<&str> {
        queue
            .items
            .iter()
            .map(|i| i.meta.decision.as_str())
            .collect()
    }

    #[test]
    fn out_of_distribution_first_then_smallest_margin() {
        let records = vec![
            voted(
                "sure",
                "alpha beta",
                "large",
                &[("small", 0.0), ("large", 1.0)],
            ),
            voted(
                "close",
                "gamma delta",
                "medium",
                &[("small", 0.5), ("medium", 0.9), ("large", 1.0)],
            ),
            ood("far", "epsilon zeta", 0.1),
            ood("farther", "eta theta", 0.05),
            voted(
                "split",
                "iota kappa",
                "large",
                &[("small", 0.5), ("large", 1.0)],
            ),
        ];
        let all = queue(&records, QueueOptions::default());
        assert_eq!(ids(&all), ["farther", "far", "close", "split", "sure"]);
        assert_eq!(all.items[0].meta.why, Why::OutOfDistribution);
        assert_eq!(all.items[0].meta.margin, None);
        assert_eq!(all.items[2].meta.why, Why::Margin);
        assert!(close(all.items[2].meta.margin, 0.0));
        assert_eq!(all.stats.out_of_distribution, 2);
        assert_eq!(all.stats.margin, 3);
        let two = queue(
            &records,
            QueueOptions {
                limit: 2,
                ..QueueOptions::default()
            },
        );
        assert_eq!(ids(&two), ["farther", "far"]);
        // The log's order does not matter.
        let mut reversed = records.clone();
        reversed.reverse();
        assert_eq!(ids(&queue(&reversed, QueueOptions::default())), ids(&all));
    }

    #[test]
    fn repeats_collapse_and_near_duplicates_are_skipped() {
        let records = vec![
            ood("a1", "how do I reverse a list", 0.1),
            ood("a2", "  how do I reverse a list ", 0.2),
            // Same words but one: hashed-word cosine 0.8 with the first.
            ood("b", "how do I reverse a string", 0.15),
            ood("c", "completely different words here", 0.3),
        ];
        let strict = queue(
            &records,
            QueueOptions {
                limit: 10,
                max_similarity: 0.7,
            },
        );
        assert_eq!(ids(&strict), ["a1", "c"]);
        assert_eq!(strict.items[0].meta.seen, 2);
        assert_eq!(strict.items[0].text, "how do I reverse a list");
        assert_eq!((strict.stats.distinct, strict.stats.too_similar), (3, 1));
        let lax = queue(
            &records,
            QueueOptions {
                limit: 10,
                max_similarity: 0.9,
            },
        );
        assert_eq!(ids(&lax), ["a1", "b", "c"]);
    }

    #[test]
    fn items_are_examples_with_an_empty_tier() {
        let mut chat = voted(
            "r1",
            "and now in rust?",
            "medium",
            &[("small", 0.0), ("medium", 1.0), ("large", 1.0)],
        );
        chat.context = vec![
            ContextTurn {
                text: "write a json parser in c".into(),
                weight: 0.25,
            },
            ContextTurn {
                text: "hi".into(),
                weight: 0.25,
            },
        ];
        let renamed = voted("r2", "old ladder", "huge", &[("huge", 1.0)]);
        let reused = voted("r1", "same id other text", "small", &[("small", 1.0)]);
        let out = queue(&[chat, renamed, reused], QueueOptions::default());
        assert_eq!(
            out.stats.unscored, 1,
            "a tier the config lacks has no margin"
        );
        let json: Vec<serde_json::Value> = out
            .items
            .iter()
            .map(|i| serde_json::to_value(i).unwrap())
            .collect();
        let chat = json.iter().find(|j| j["meta"]["decision"] == "r1").unwrap();
        assert_eq!(chat["tier"], "");
        assert_eq!(chat["meta"]["routed_tier"], "medium");
        assert_eq!(chat["meta"]["why"], "margin");
        assert_eq!(
            chat["meta"]["context"],
            serde_json::json!(["hi", "write a json parser in c"])
        );
        let mut item_ids: Vec<&str> = json.iter().map(|j| j["id"].as_str().unwrap()).collect();
        item_ids.sort();
        assert_eq!(
            item_ids,
            ["lq-r1", "lq-r1-2"],
            "reused request ids stay unique"
        );
    }

    #[test]
    fn bad_options_and_bad_log_lines_are_named() {
        let bad = QueueOptions {
            limit: 1,
            max_similarity: 1.5,
        };
        let e = label_queue(&[], &tiers(), &HashedWords::new(), &bad).unwrap_err();
        assert!(e.to_string().contains("max_similarity"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        let good = serde_json::to_string(&test_record("a", "fine", "small")).unwrap();
        let empty = serde_json::to_string(&test_record("b", "  ", "small")).unwrap();
        std::fs::write(&path, format!("{good}\n\n{empty}\nnot json\n")).unwrap();
        let e = crate::decision_log::read_checked_decisions(&[path])
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3: `query` is empty"), "{e}");
        assert!(e.contains("line 4: not a decision record"), "{e}");
        assert!(!e.contains("  line 1:"), "{e}");
    }
}
