//! Measuring a router on held-out outcome data: quality and cost across the whole range of the
//! cost–quality knob, against a random router and the oracle.
//!
//! Definitions follow RouteLLM (Ong et al. 2024), for two tiers, weak and strong:
//! - a router ranks prompts by how much they need the strong tier; sending the top share `c`
//!   to strong gives a mean quality Q(c);
//! - PGR(c) = (Q(c) − Q_weak) / (Q_strong − Q_weak), the performance gap recovered;
//! - APGR = the area under PGR(c) for c from 0 to 1 (random routing: exactly 0.5);
//! - CPT(x) = the smallest share of strong calls with PGR ≥ x ("call-performance threshold");
//! - share at 95% = the smallest share of strong calls with Q(c) ≥ 0.95 · Q_strong.
//!
//! Ties in a router's score are resolved in expectation (as if broken at random), so a router
//! that cannot tell prompts apart scores like the random router instead of gaining or losing
//! by the order of the input.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::tier::Tiers;
use crate::vote::{vote, Basis, Evidence, Policy};

/// One held-out prompt: its measured weak and strong outcomes.
#[derive(Debug, Clone)]
pub struct Item {
    pub id: String,
    pub benchmark: String,
    pub weak: f64,
    pub strong: f64,
}

/// Q(i) for i = 0..=n strong calls, in the order of a ranking, with ties averaged.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// Mean quality with the top `i` items sent to the strong tier.
    pub quality: Vec<f64>,
    pub weak: f64,
    pub strong: f64,
}

/// Each item's tie group in the ranking by `score`, highest first (group 0 holds the highest
/// score), and the number of groups. The curve and the bootstrap both rank through this.
fn tie_groups(scores: &[f64]) -> (Vec<usize>, usize) {
    let n = scores.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut group_of = vec![0usize; n];
    let mut groups = 0;
    for (pos, &i) in order.iter().enumerate() {
        if pos > 0 && scores[i] != scores[order[pos - 1]] {
            groups += 1;
        }
        group_of[i] = groups;
    }
    (group_of, if n == 0 { 0 } else { groups + 1 })
}

/// The curve of a ranking by `score` (higher = send to strong first).
pub fn curve(items: &[Item], scores: &[f64]) -> Curve {
    assert_eq!(items.len(), scores.len());
    let n = items.len();
    let weak: f64 = items.iter().map(|i| i.weak).sum::<f64>() / n.max(1) as f64;
    let strong: f64 = items.iter().map(|i| i.strong).sum::<f64>() / n.max(1) as f64;
    // A group of equal scores contributes its mean gain per item, whatever its order.
    let (group_of, groups) = tie_groups(scores);
    let mut gain = vec![0.0f64; groups];
    let mut size = vec![0usize; groups];
    for (item, &g) in items.iter().zip(&group_of) {
        gain[g] += item.strong - item.weak;
        size[g] += 1;
    }
    let mut quality = Vec::with_capacity(n + 1);
    let mut q = weak;
    quality.push(q);
    for (&g, &m) in gain.iter().zip(&size) {
        let mean = g / m as f64;
        for _ in 0..m {
            q += mean / n as f64;
            quality.push(q);
        }
    }
    Curve {
        quality,
        weak,
        strong,
    }
}

impl Curve {
    pub fn len(&self) -> usize {
        self.quality.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn gap(&self) -> Option<f64> {
        let gap = self.strong - self.weak;
        (gap.abs() > 1e-12).then_some(gap)
    }

    /// PGR after `i` strong calls; `None` when the tiers score the same (no gap to recover).
    pub fn pgr(&self, i: usize) -> Option<f64> {
        self.gap().map(|g| (self.quality[i] - self.weak) / g)
    }

    /// Area under PGR over the share of strong calls (trapezoids on the 1/n grid).
    pub fn apgr(&self) -> Option<f64> {
        let n = self.len();
        if n == 0 {
            return None;
        }
        let g = self.gap()?;
        let sum: f64 = (0..n)
            .map(|i| (self.quality[i] + self.quality[i + 1]) / 2.0 - self.weak)
            .sum();
        Some(sum / n as f64 / g)
    }

    /// PGR with a share `share` of strong calls, interpolated linearly between the 1/n steps.
    pub fn pgr_at_share(&self, share: f64) -> Option<f64> {
        let n = self.len();
        if n == 0 {
            return None;
        }
        let x = share.clamp(0.0, 1.0) * n as f64;
        let i = (x.floor() as usize).min(n - 1);
        let q = self.quality[i] + (self.quality[i + 1] - self.quality[i]) * (x - i as f64);
        self.gap().map(|g| (q - self.weak) / g)
    }

    /// The smallest share of strong calls with PGR ≥ `target`.
    pub fn cpt(&self, target: f64) -> Option<f64> {
        let n = self.len();
        (0..=n)
            .find(|&i| self.pgr(i).is_some_and(|p| p >= target - 1e-12))
            .map(|i| i as f64 / n as f64)
    }

    /// The smallest share of strong calls with quality ≥ `fraction` × the strong tier's.
    pub fn share_at_quality(&self, fraction: f64) -> Option<f64> {
        let n = self.len();
        let bar = fraction * self.strong;
        (0..=n)
            .find(|&i| self.quality[i] >= bar - 1e-12)
            .map(|i| i as f64 / n as f64)
    }
}

/// A 95% bootstrap interval for the APGR of the ranking by `score`: the prompts are resampled
/// with replacement `resamples` times and the 2.5th and 97.5th percentiles of the resampled APGRs
/// reported (percentile method). The generator is seeded, so a rerun prints the same interval.
/// `None` without resamples, or when fewer than 20 resamples have a weak→strong gap.
pub fn apgr_interval(items: &[Item], scores: &[f64], resamples: usize) -> Option<(f64, f64)> {
    let apgrs = bootstrap_apgrs(items, &[scores], resamples);
    percentile_interval(apgrs.iter().map(|a| a[0]).collect())
}

/// A 95% bootstrap interval for the mean APGR of several rankings of the same prompts (e.g.
/// routers built from different samples of labels): each resample draws the prompts once and
/// averages the rankings' APGRs on it.
pub fn apgr_mean_interval(
    items: &[Item],
    rankings: &[&[f64]],
    resamples: usize,
) -> Option<(f64, f64)> {
    let apgrs = bootstrap_apgrs(items, rankings, resamples);
    percentile_interval(
        apgrs
            .iter()
            .map(|a| a.iter().sum::<f64>() / a.len() as f64)
            .collect(),
    )
}

/// A 95% paired bootstrap interval for APGR(`scores`) − APGR(`baseline`) on the same prompts:
/// each resample ranks the same drawn prompts both ways, so the noise they share cancels. An
/// interval above 0 says the change helps beyond the luck of the sample.
pub fn apgr_difference_interval(
    items: &[Item],
    scores: &[f64],
    baseline: &[f64],
    resamples: usize,
) -> Option<(f64, f64)> {
    let apgrs = bootstrap_apgrs(items, &[scores, baseline], resamples);
    percentile_interval(apgrs.iter().map(|a| a[0] - a[1]).collect())
}

fn percentile_interval(mut values: Vec<f64>) -> Option<(f64, f64)> {
    if values.len() < 20 {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let at = |p: f64| values[(p * (values.len() - 1) as f64).round() as usize];
    Some((at(0.025), at(0.975)))
}

/// The APGR of each ranking on `resamples` bootstrap resamples of the prompts (the same draws
/// for every ranking); resamples without a weak→strong gap are left out.
fn bootstrap_apgrs(items: &[Item], rankings: &[&[f64]], resamples: usize) -> Vec<Vec<f64>> {
    let n = items.len();
    if resamples == 0 || n == 0 {
        return Vec::new();
    }
    // Rank once; a resample only changes how many copies of each prompt there are, and copies
    // share their prompt's tie group.
    let ranked: Vec<(Vec<usize>, usize)> = rankings
        .iter()
        .map(|scores| {
            assert_eq!(scores.len(), n);
            tie_groups(scores)
        })
        .collect();
    let mut rng = SplitMix64(0x5eed_a96e);
    let mut counts = vec![0usize; n];
    let mut out = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        counts.fill(0);
        for _ in 0..n {
            counts[rng.below(n)] += 1;
        }
        let apgrs: Option<Vec<f64>> = ranked
            .iter()
            .map(|(group_of, groups)| {
                let mut gain = vec![0.0f64; *groups];
                let mut size = vec![0usize; *groups];
                for (i, &c) in counts.iter().enumerate() {
                    gain[group_of[i]] += c as f64 * (items[i].strong - items[i].weak);
                    size[group_of[i]] += c;
                }
                apgr_of_groups(&gain, &size)
            })
            .collect();
        out.extend(apgrs);
    }
    out
}

/// APGR from tie groups in ranking order: each group's summed gain (strong − weak) and size.
/// With per-prompt gains g_j at ranks j = 1..n, the trapezoids of [`Curve::apgr`] sum to
/// Σ g_j (n − j + ½) / (n Σ g); a tie group at ranks s+1..e gives each of its prompts the
/// group's mean gain, so it adds G (n + ½ − (s + 1 + e)/2).
fn apgr_of_groups(gain: &[f64], size: &[usize]) -> Option<f64> {
    let n: usize = size.iter().sum();
    let total: f64 = gain.iter().sum();
    if n == 0 || (total / n as f64).abs() <= 1e-12 {
        return None;
    }
    let mut start = 0usize;
    let mut sum = 0.0;
    for (&g, &m) in gain.iter().zip(size) {
        let end = start + m;
        sum += g * (n as f64 + 0.5 - (start + 1 + end) as f64 / 2.0);
        start = end;
    }
    Some(sum / (n as f64 * total))
}

/// A small seeded generator (SplitMix64) for the bootstrap and the evaluations' samples;
/// statistical quality is ample here.
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (multiply-shift; the bias is below 2^-32 for any n we meet).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }

    /// Fisher–Yates.
    pub(crate) fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// The random router in closed form: Q(c) = Q_weak + c·(Q_strong − Q_weak).
pub fn random_summary(weak: f64, strong: f64, relative_weak_cost: f64) -> Summary {
    let gap = strong - weak;
    let share_at_95 = if gap.abs() < 1e-12 {
        (weak >= 0.95 * strong).then_some(0.0)
    } else {
        let c = (0.95 * strong - weak) / gap;
        (c <= 1.0).then_some(c.max(0.0))
    };
    Summary {
        apgr: (gap.abs() > 1e-12).then_some(0.5),
        cpt50: (gap > 0.0).then_some(0.5),
        cpt80: (gap > 0.0).then_some(0.8),
        share_at_95,
        cost_saved_at_95: share_at_95.map(|c| cost_saved(c, relative_weak_cost)),
    }
}

/// Fraction of the all-strong cost saved when a share `c` of calls goes to strong.
pub fn cost_saved(c: f64, relative_weak_cost: f64) -> f64 {
    1.0 - (c + (1.0 - c) * relative_weak_cost)
}

/// The headline numbers of one router on one benchmark.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub apgr: Option<f64>,
    pub cpt50: Option<f64>,
    pub cpt80: Option<f64>,
    pub share_at_95: Option<f64>,
    pub cost_saved_at_95: Option<f64>,
}

impl Curve {
    pub fn summary(&self, relative_weak_cost: f64) -> Summary {
        let share_at_95 = self.share_at_quality(0.95);
        Summary {
            apgr: self.apgr(),
            cpt50: self.cpt(0.5),
            cpt80: self.cpt(0.8),
            share_at_95,
            cost_saved_at_95: share_at_95.map(|c| cost_saved(c, relative_weak_cost)),
        }
    }
}

/// Where one setting of the knob lands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KnobPoint {
    pub quality_target: f32,
    pub strong_share: f64,
    pub quality: f64,
    pub pgr: Option<f64>,
    /// Cost relative to sending everything to the strong tier.
    pub relative_cost: f64,
}

/// Everything measured on one benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct BenchmarkReport {
    pub benchmark: String,
    pub n: usize,
    pub weak_quality: f64,
    pub strong_quality: f64,
    pub router: Summary,
    /// 95% bootstrap interval of the router's APGR (prompts resampled; `--bootstrap`).
    pub router_apgr_ci95: Option<(f64, f64)>,
    /// With several settings: 95% paired bootstrap interval of this setting's APGR minus the
    /// first setting's, on the same prompts (`None` for the first setting itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apgr_minus_first_ci95: Option<(f64, f64)>,
    pub random: Summary,
    pub oracle: Summary,
    /// The router at quality_target = 0, 0.05, …, 1.
    pub knob: Vec<KnobPoint>,
    #[serde(skip)]
    pub curve: Curve,
    #[serde(skip)]
    pub oracle_curve: Curve,
}

/// What the router makes of each item: its need-strong score and, per knob setting, whether it
/// goes to strong.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    /// 1 − Q(weak)/max Q (the quantity the knob thresholds); out-of-distribution prompts get
    /// +∞ or −∞ by where the fallback tier sends them.
    pub score: f64,
    /// For each knob setting in [`knob_targets`]: sent to the strong tier?
    pub strong_at: Vec<bool>,
}

/// The knob settings swept: 0, 0.05, …, 1.
pub fn knob_targets() -> Vec<f32> {
    (0..=20).map(|i| i as f32 / 20.0).collect()
}

/// Applies the vote to one item's neighbours: the score and the decision at every knob value.
/// `weak` and `strong` are tier indices.
pub fn route_item(
    evidence: &[Evidence],
    tiers: &Tiers,
    policy: &Policy,
    weak: usize,
    strong: usize,
) -> Routed {
    let base = vote(evidence, tiers, policy);
    let score = if base.basis == Basis::OutOfDistribution {
        if policy.fallback_tier >= strong {
            f64::INFINITY
        } else {
            f64::NEG_INFINITY
        }
    } else {
        let qw = base.quality.get(&tiers[weak].name).unwrap_or(0.0) as f64;
        let best = base
            .quality
            .0
            .iter()
            .map(|(_, q)| *q as f64)
            .fold(0.0, f64::max);
        if best > 0.0 {
            1.0 - qw / best
        } else {
            0.0
        }
    };
    let strong_at = knob_targets()
        .into_iter()
        .map(|t| {
            let p = Policy {
                quality_target: t,
                ..policy.clone()
            };
            vote(evidence, tiers, &p).tier >= strong
        })
        .collect();
    Routed { score, strong_at }
}

/// Reports per benchmark and overall (`"all"`), given routed items; `resamples` bootstrap
/// resamples for the APGR intervals (0: none), and the routing of the same items by another
/// setting to compare with, if any.
pub fn report(
    items: &[Item],
    routed: &[Routed],
    relative_weak_cost: f64,
    resamples: usize,
    first: Option<&[Routed]>,
) -> Vec<BenchmarkReport> {
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        groups.entry(item.benchmark.as_str()).or_default().push(i);
    }
    let mut all: Vec<(String, Vec<usize>)> = groups
        .into_iter()
        .map(|(b, ix)| (b.to_string(), ix))
        .collect();
    if all.len() > 1 {
        all.push(("all".to_string(), (0..items.len()).collect()));
    }
    all.into_iter()
        .map(|(benchmark, ix)| {
            let sub: Vec<Item> = ix.iter().map(|&i| items[i].clone()).collect();
            let scores: Vec<f64> = ix.iter().map(|&i| routed[i].score).collect();
            let oracle_scores: Vec<f64> = sub.iter().map(|i| i.strong - i.weak).collect();
            let c = curve(&sub, &scores);
            let o = curve(&sub, &oracle_scores);
            let knob = knob_targets()
                .iter()
                .enumerate()
                .map(|(k, &t)| {
                    let n = sub.len() as f64;
                    let strong: Vec<bool> = ix.iter().map(|&i| routed[i].strong_at[k]).collect();
                    let share = strong.iter().filter(|&&s| s).count() as f64 / n;
                    let quality = sub
                        .iter()
                        .zip(&strong)
                        .map(|(it, &s)| if s { it.strong } else { it.weak })
                        .sum::<f64>()
                        / n;
                    KnobPoint {
                        quality_target: t,
                        strong_share: share,
                        quality,
                        pgr: c.gap().map(|g| (quality - c.weak) / g),
                        relative_cost: 1.0 - cost_saved(share, relative_weak_cost),
                    }
                })
                .collect();
            BenchmarkReport {
                n: sub.len(),
                weak_quality: c.weak,
                strong_quality: c.strong,
                router: c.summary(relative_weak_cost),
                router_apgr_ci95: apgr_interval(&sub, &scores, resamples),
                apgr_minus_first_ci95: first.and_then(|first| {
                    let base: Vec<f64> = ix.iter().map(|&i| first[i].score).collect();
                    apgr_difference_interval(&sub, &scores, &base, resamples)
                }),
                random: random_summary(c.weak, c.strong, relative_weak_cost),
                oracle: o.summary(relative_weak_cost),
                knob,
                benchmark,
                curve: c,
                oracle_curve: o,
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn items(pairs: &[(f64, f64)]) -> Vec<Item> {
        pairs
            .iter()
            .enumerate()
            .map(|(i, &(weak, strong))| Item {
                id: i.to_string(),
                benchmark: "b".into(),
                weak,
                strong,
            })
            .collect()
    }

    pub(crate) fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn hand_computed_curve_apgr_cpt() {
        // Four prompts; only #1 and #3 need the strong model. Weak quality 0.5, strong 1.0.
        let it = items(&[(1.0, 1.0), (0.0, 1.0), (1.0, 1.0), (0.0, 1.0)]);
        // A perfect ranking puts #1 and #3 first.
        let c = curve(&it, &[0.1, 0.9, 0.2, 0.8]);
        assert_eq!(c.quality, vec![0.5, 0.75, 1.0, 1.0, 1.0]);
        // PGR = 0, .5, 1, 1, 1: trapezoids (0.25 + 0.75 + 1 + 1) / 4 = 0.75.
        assert!(close(c.apgr().unwrap(), 0.75));
        assert!(close(c.cpt(0.5).unwrap(), 0.25));
        assert!(close(c.cpt(0.8).unwrap(), 0.5));
        // 95% of 1.0 needs quality >= 0.95: two strong calls.
        assert!(close(c.share_at_quality(0.95).unwrap(), 0.5));
        // The worst ranking: (0 + 0 + 0.25 + 0.75) / 4 = 0.25.
        let worst = curve(&it, &[0.9, 0.1, 0.8, 0.2]);
        assert!(close(worst.apgr().unwrap(), 0.25));
    }

    #[test]
    fn pgr_at_share_interpolates_and_the_mean_interval_brackets_the_mean() {
        let it = items(&[(0.0, 1.0), (0.0, 1.0), (1.0, 1.0), (1.0, 1.0)]);
        let c = curve(&it, &[4.0, 3.0, 2.0, 1.0]);
        assert!(close(c.pgr_at_share(0.0).unwrap(), 0.0));
        assert!(close(c.pgr_at_share(0.25).unwrap(), 0.5));
        assert!(close(c.pgr_at_share(0.375).unwrap(), 0.75));
        assert!(close(c.pgr_at_share(1.0).unwrap(), 1.0));
        let good = [4.0, 3.0, 2.0, 1.0];
        let bad = [1.0, 2.0, 3.0, 4.0];
        let many = items(
            &[(0.0, 1.0); 8]
                .iter()
                .chain(&[(1.0, 1.0); 8])
                .copied()
                .collect::<Vec<_>>(),
        );
        let g: Vec<f64> = (0..16).map(|i| 16.0 - i as f64).collect();
        let b: Vec<f64> = (0..16).map(|i| i as f64).collect();
        let (lo, hi) = apgr_mean_interval(&many, &[&g, &b], 200).unwrap();
        let mean = (curve(&many, &g).apgr().unwrap() + curve(&many, &b).apgr().unwrap()) / 2.0;
        assert!(lo <= mean && mean <= hi, "{lo} {mean} {hi}");
        assert!(apgr_mean_interval(&it, &[&good, &bad], 0).is_none());
    }

    #[test]
    fn ties_score_like_random() {
        let it = items(&[(1.0, 1.0), (0.0, 1.0), (1.0, 1.0), (0.0, 1.0)]);
        let c = curve(&it, &[0.0; 4]);
        assert!(close(c.apgr().unwrap(), 0.5), "{:?}", c.quality);
        let r = random_summary(c.weak, c.strong, 0.1);
        assert_eq!(r.apgr, Some(0.5));
        assert!(close(r.share_at_95.unwrap(), 0.9)); // (0.95 - 0.5) / 0.5
        assert!(close(r.cost_saved_at_95.unwrap(), 1.0 - (0.9 + 0.1 * 0.1)));
    }

    #[test]
    fn grouped_apgr_matches_the_curve_with_ties() {
        // Gains 1, 0, 0, 1, -1 at scores with a tie between #0 and #3 (ranked first) and
        // between #1 and #4.
        let it = items(&[(0.0, 1.0), (1.0, 1.0), (0.0, 0.0), (0.0, 1.0), (1.0, 0.0)]);
        let scores = [0.9, 0.5, 0.1, 0.9, 0.5];
        let c = curve(&it, &scores);
        // Groups in order: {#0, #3} gain 2, {#1, #4} gain -1, {#2} gain 0; n = 5, total 1:
        // (2 (5.5 - 1.5) - 1 (5.5 - 3.5) + 0 (5.5 - 5)) / 5 = 1.2. By the curve: Q = .4, .6, .8,
        // .7, .6, .6 over a gap of .2, trapezoids (.1 + .3 + .35 + .25 + .2) / 5 / .2 = 1.2.
        let grouped = apgr_of_groups(&[2.0, -1.0, 0.0], &[2, 2, 1]).unwrap();
        assert!(close(grouped, 1.2));
        assert!(close(c.apgr().unwrap(), grouped), "{:?}", c.apgr());
        // No gap, no APGR.
        assert!(apgr_of_groups(&[1.0, -1.0], &[1, 1]).is_none());
    }

    #[test]
    fn bootstrap_interval_is_exact_when_every_order_scores_alike() {
        // Every prompt gains the same: any resample and any ranking recover the gap linearly.
        let it = items(&[(0.0, 1.0); 6]);
        let (lo, hi) = apgr_interval(&it, &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 200).unwrap();
        assert!(close(lo, 0.5) && close(hi, 0.5), "{lo} {hi}");
        assert!(apgr_interval(&it, &[0.0; 6], 0).is_none());
        // No gap in any resample: no interval.
        assert!(apgr_interval(&items(&[(1.0, 1.0); 4]), &[0.0; 4], 100).is_none());
    }

    #[test]
    fn bootstrap_interval_brackets_the_estimate_and_narrows_with_n() {
        // A noisy ranking: the score tells the strong-needing prompts apart two times in three.
        let make = |n: usize| {
            let pairs: Vec<(f64, f64)> = (0..n)
                .map(|i| if i % 2 == 0 { (0.0, 1.0) } else { (1.0, 1.0) })
                .collect();
            let scores: Vec<f64> = (0..n)
                .map(|i| ((i % 2 == 0) != (i % 3 == 0)) as u8 as f64 + (i as f64 * 0.618).fract())
                .collect();
            (items(&pairs), scores)
        };
        let (small, s_small) = make(60);
        let (large, s_large) = make(2400);
        let point = curve(&large, &s_large).apgr().unwrap();
        let (lo, hi) = apgr_interval(&large, &s_large, 500).unwrap();
        assert!(lo < point && point < hi, "{lo} {point} {hi}");
        assert!(lo > 0.5, "a clear signal on 2,400 prompts: {lo}");
        let (lo_s, hi_s) = apgr_interval(&small, &s_small, 500).unwrap();
        assert!(
            hi_s - lo_s > 3.0 * (hi - lo),
            "{} vs {}",
            hi_s - lo_s,
            hi - lo
        );
        // Seeded: the same interval again.
        assert_eq!(apgr_interval(&large, &s_large, 500), Some((lo, hi)));
    }

    #[test]
    fn paired_difference_interval_cancels_shared_noise() {
        let pairs: Vec<(f64, f64)> = (0..400)
            .map(|i| if i % 3 == 0 { (0.0, 1.0) } else { (1.0, 1.0) })
            .collect();
        let it = items(&pairs);
        let noisy: Vec<f64> = (0..400)
            .map(|i| (i % 3 == 0) as u8 as f64 * 0.5 + (i as f64 * 0.618).fract())
            .collect();
        // The same ranking against itself: exactly no difference in every resample.
        assert_eq!(
            apgr_difference_interval(&it, &noisy, &noisy, 200),
            Some((0.0, 0.0))
        );
        // The oracle against the noisy ranking: better in every resample.
        let oracle: Vec<f64> = it.iter().map(|i| i.strong - i.weak).collect();
        let (lo, hi) = apgr_difference_interval(&it, &oracle, &noisy, 200).unwrap();
        let point = curve(&it, &oracle).apgr().unwrap() - curve(&it, &noisy).apgr().unwrap();
        assert!(0.0 < lo && lo < point && point < hi, "{lo} {point} {hi}");
        // A small perturbation of the ranking: the paired interval is much narrower than the
        // ranking's own interval, whose width is mostly the luck of the sample.
        let nudged: Vec<f64> = noisy
            .iter()
            .enumerate()
            .map(|(i, s)| s + if i % 7 == 0 { 0.05 } else { 0.0 })
            .collect();
        let (dlo, dhi) = apgr_difference_interval(&it, &nudged, &noisy, 200).unwrap();
        let (alo, ahi) = apgr_interval(&it, &noisy, 200).unwrap();
        assert!(dhi - dlo < (ahi - alo) / 3.0, "{dlo} {dhi} vs {alo} {ahi}");
    }

    #[test]
    fn oracle_can_recover_more_than_the_gap() {
        // The weak model wins on #0: the oracle keeps it weak and beats always-strong.
        let it = items(&[(1.0, 0.0), (0.0, 1.0)]);
        let oracle: Vec<f64> = it.iter().map(|i| i.strong - i.weak).collect();
        let c = curve(&it, &oracle);
        assert_eq!(c.quality, vec![0.5, 1.0, 0.5]);
        assert!(c.gap().is_none(), "weak and strong average the same");
        assert!(c.apgr().is_none());
        let it = items(&[(1.0, 0.0), (0.0, 1.0), (0.0, 1.0)]);
        let oracle: Vec<f64> = it.iter().map(|i| i.strong - i.weak).collect();
        let c = curve(&it, &oracle);
        // Q = 1/3, 2/3, 1, 2/3; PGR = 0, 1, 2, 1 -> APGR (0.5 + 1.5 + 1.5) / 3.
        assert!(close(c.apgr().unwrap(), 3.5 / 3.0));
        assert!(close(c.cpt(0.5).unwrap(), 1.0 / 3.0));
    }

    #[test]
    fn cost_saved_is_relative_to_all_strong() {
        assert!(close(cost_saved(1.0, 0.1), 0.0));
        assert!(close(cost_saved(0.0, 0.1), 0.9));
        assert!(close(cost_saved(0.5, 0.0), 0.5));
    }

    #[test]
    fn knob_and_score_follow_the_vote() {
        let tiers = crate::tier::test_tiers(&["small", "large"]);
        let policy = Policy {
            fallback_tier: 1,
            ..Policy::default()
        };
        let ev = |q_small: f32| {
            vec![Evidence {
                similarity: 0.9,
                quality: vec![Some(q_small), Some(1.0)],
            }]
        };
        let r = route_item(&ev(0.5), &tiers, &policy, 0, 1);
        assert!(close(r.score, 0.5));
        // Strong once the target passes 0.5.
        let t = knob_targets();
        for (target, strong) in t.iter().zip(&r.strong_at) {
            assert_eq!(*strong, *target > 0.5 + 1e-6, "target {target}");
        }
        let ood = vec![Evidence {
            similarity: 0.1,
            quality: vec![Some(1.0), Some(1.0)],
        }];
        assert_eq!(route_item(&ood, &tiers, &policy, 0, 1).score, f64::INFINITY);
    }

    #[test]
    fn report_groups_by_benchmark_and_plots() {
        let mut it = items(&[(1.0, 1.0), (0.0, 1.0), (1.0, 1.0), (0.0, 1.0)]);
        it[2].benchmark = "c".into();
        it[3].benchmark = "c".into();
        let routed: Vec<Routed> = [0.1, 0.9, 0.2, 0.8]
            .iter()
            .map(|&score| Routed {
                score,
                strong_at: knob_targets()
                    .iter()
                    .map(|&t| score > 1.0 - t as f64)
                    .collect(),
            })
            .collect();
        let reports = report(&it, &routed, 0.1, 0, None);
        let names: Vec<&str> = reports.iter().map(|r| r.benchmark.as_str()).collect();
        assert_eq!(names, ["b", "c", "all"]);
        assert!(close(reports[2].router.apgr.unwrap(), 0.75));
        assert_eq!(reports[2].knob.len(), 21);
        assert!(close(reports[2].knob[20].strong_share, 1.0));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plot.svg");
        crate::eval::plot(&reports, &path, "test").unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("<svg") && svg.contains("oracle"));
    }
}
