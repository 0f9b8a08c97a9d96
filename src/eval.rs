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
use std::path::Path;

use std::sync::Arc;

use serde::Serialize;

use crate::corpus::{outcome_examples, OutcomeMap, OutcomeRecord, Scale};
use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::index::{HnswParams, IndexKind};
use crate::router::{Router, RouterOptions};
use crate::smooth::Smooth;
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

/// A small seeded generator (SplitMix64) for the bootstrap; statistical quality is ample here.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (multiply-shift; the bias is below 2^-32 for any n we meet).
    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
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

/// Draws quality vs share of strong calls per benchmark: router, random and oracle, with the
/// knob settings marked. SVG.
pub fn plot(reports: &[BenchmarkReport], path: &Path, title: &str) -> Result<()> {
    use plotters::prelude::*;
    let err = |e: String| {
        Error::io(
            format!("drawing {}", path.display()),
            std::io::Error::other(e),
        )
    };
    let cols = 3usize;
    let rows = reports.len().div_ceil(cols).max(1);
    let root =
        SVGBackend::new(path, (420 * cols as u32, 340 * rows as u32 + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let (header, body) = root.split_vertically(40);
    header
        .titled(title, ("sans-serif", 20))
        .map_err(|e| err(e.to_string()))?;
    let panels = body.split_evenly((rows, cols));
    for (r, area) in reports.iter().zip(panels.iter()) {
        let n = r.curve.len().max(1);
        let lo = r.weak_quality.min(r.strong_quality).min(
            r.oracle_curve
                .quality
                .iter()
                .cloned()
                .fold(f64::MAX, f64::min),
        );
        let hi = r
            .oracle_curve
            .quality
            .iter()
            .cloned()
            .fold(r.strong_quality.max(r.weak_quality), f64::max);
        let pad = ((hi - lo) * 0.05).max(1e-3);
        let apgr = r
            .router
            .apgr
            .map(|a| format!("{a:.3}"))
            .unwrap_or_else(|| "n/a".into());
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{} (n={}, APGR {apgr})", r.benchmark, r.n),
                ("sans-serif", 15),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(45)
            .build_cartesian_2d(0.0..1.0, (lo - pad)..(hi + pad))
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("share of calls to the strong tier")
            .y_desc("mean quality")
            .label_style(("sans-serif", 11))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        let step = (n / 400).max(1);
        let series = |c: &Curve| -> Vec<(f64, f64)> {
            (0..=n)
                .step_by(step)
                .chain(std::iter::once(n))
                .map(|i| (i as f64 / n as f64, c.quality[i]))
                .collect()
        };
        chart
            .draw_series(LineSeries::new(
                series(&r.oracle_curve),
                GREEN.stroke_width(2),
            ))
            .map_err(|e| err(e.to_string()))?
            .label("oracle")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], GREEN));
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, r.weak_quality), (1.0, r.strong_quality)],
                BLACK.stroke_width(1),
            ))
            .map_err(|e| err(e.to_string()))?
            .label("random")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], BLACK));
        chart
            .draw_series(LineSeries::new(series(&r.curve), BLUE.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label("router")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], BLUE));
        chart
            .draw_series(
                r.knob
                    .iter()
                    .map(|p| Circle::new((p.strong_share, p.quality), 3, RED.filled())),
            )
            .map_err(|e| err(e.to_string()))?
            .label("knob 0, 0.05 … 1")
            .legend(|(x, y)| Circle::new((x + 7, y), 3, RED.filled()));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 11))
            .draw()
            .map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// Held-out records as items: the first mapped tier is weak, the last strong. Records
/// lacking either outcome are skipped (the count is returned).
pub fn items_from_records(
    records: &[OutcomeRecord],
    map: &OutcomeMap,
    scale: Scale,
) -> Result<(Vec<Item>, Vec<usize>, usize)> {
    let tiers: Vec<&str> = map.tiers().collect();
    if tiers.len() < 2 {
        return Err(Error::Config(
            "evaluation needs two mapped tiers (--map weak=... --map strong=...)".into(),
        ));
    }
    let (weak, strong) = (tiers[0], tiers[tiers.len() - 1]);
    let mut items = Vec::new();
    let mut kept = Vec::new();
    let mut skipped = 0;
    for (i, r) in records.iter().enumerate() {
        match map.scores(r, scale) {
            Ok(Some(s)) => {
                items.push(Item {
                    id: r.id.clone(),
                    // Sub-sets such as `alpaca_eval/koala` report under their benchmark.
                    benchmark: r
                        .source_benchmark
                        .as_deref()
                        .map(|b| b.split('/').next().unwrap_or(b).trim().to_string())
                        .unwrap_or_else(|| "unknown".into()),
                    weak: s[weak] as f64,
                    strong: s[strong] as f64,
                });
                kept.push(i);
            }
            Ok(None) => skipped += 1,
            Err(message) => {
                return Err(Error::InvalidLines {
                    source_name: "held-out records".into(),
                    errors: vec![crate::error::LineError {
                        line: i + 1,
                        message: format!("record `{}`: {message}", r.id),
                    }],
                })
            }
        }
    }
    Ok((items, kept, skipped))
}

/// Routes prompts with each policy: embeds them through the router's cache (reporting
/// progress), finds neighbours once with the largest k, then votes per policy.
pub fn evaluate(
    router: &Router,
    prompts: &[&str],
    policies: &[Policy],
    weak: usize,
    strong: usize,
    progress: &dyn Fn(usize, usize),
) -> Result<Vec<Vec<Routed>>> {
    let vectors = router.embed_cached(prompts, progress)?;
    let k_max = policies.iter().map(|p| p.k).max().unwrap_or(1);
    let mut out: Vec<Vec<Routed>> = policies
        .iter()
        .map(|_| Vec::with_capacity(prompts.len()))
        .collect();
    // Neighbour qualities only in the variants some policy votes on.
    let mut variants: Vec<bool> = policies.iter().map(|p| p.category_baseline).collect();
    variants.sort_unstable();
    variants.dedup();
    for v in &vectors {
        let evidence = router.evidence(v, k_max, &variants)?;
        for (p, routed) in policies.iter().zip(out.iter_mut()) {
            let i = variants.binary_search(&p.category_baseline).unwrap();
            routed.push(route_item(&evidence[i], router.tiers(), p, weak, strong));
        }
    }
    Ok(out)
}

/// The fold of a prompt: by a hash of its normalised text, so duplicate prompts share a fold
/// and cannot leak answers across it.
pub fn fold_of(prompt: &str, folds: usize) -> usize {
    let normalised = prompt
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    let digest = <sha2::Sha256 as sha2::Digest>::digest(normalised.as_bytes());
    (u64::from_le_bytes(digest[..8].try_into().unwrap()) % folds as u64) as usize
}

/// How cross-validation splits the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folds {
    /// N folds by prompt-text hash ([`fold_of`]): in-domain, every benchmark in every fold.
    Hash(usize),
    /// One fold per group ([`group_of`]): each benchmark (each MMLU subject) is routed with an
    /// index that has none of it, a stand-in for out-of-domain traffic.
    Group,
}

impl std::str::FromStr for Folds {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Folds, String> {
        match s {
            "group" => Ok(Folds::Group),
            n => match n.parse::<usize>() {
                Ok(n) if n >= 2 => Ok(Folds::Hash(n)),
                _ => Err(format!(
                    "expected a number of folds (at least 2) or `group`, got `{s}`"
                )),
            },
        }
    }
}

impl std::fmt::Display for Folds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Folds::Hash(n) => write!(f, "{n}"),
            Folds::Group => f.write_str("group"),
        }
    }
}

/// A record's group for [`Folds::Group`]: its benchmark, and its subject where it has one.
pub fn group_of(record: &OutcomeRecord) -> String {
    let benchmark = record.source_benchmark.as_deref().unwrap_or("unknown");
    match &record.subject {
        Some(subject) => format!("{benchmark}/{subject}"),
        None => benchmark.to_string(),
    }
}

/// Cross-validation on outcome records: each fold is routed with an index built from the
/// other folds. Returns routed items in record order, per policy.
#[allow(clippy::too_many_arguments)]
pub fn cross_validate(
    embedder: Arc<dyn Embedder>,
    tiers: &Tiers,
    records: &[OutcomeRecord],
    map: &OutcomeMap,
    scale: Scale,
    smooth: Smooth,
    folds: Folds,
    cache_dir: Option<&Path>,
    policies: &[Policy],
    progress: &dyn Fn(usize, usize),
) -> Result<(Vec<Item>, Vec<Vec<Routed>>)> {
    let (items, kept, _) = items_from_records(records, map, scale)?;
    let names: Vec<&str> = map.tiers().collect();
    let weak = tiers.require(names[0])?;
    let strong = tiers.require(names[names.len() - 1])?;
    // Every record's fold, kept or not: records outside the item set (e.g. lacking a model)
    // can still teach the index of the other folds.
    let (record_fold, n_folds): (Vec<usize>, usize) = match folds {
        Folds::Hash(n) if n < 2 => return Err(Error::Config("--cv needs at least 2 folds".into())),
        Folds::Hash(n) => (records.iter().map(|r| fold_of(&r.prompt, n)).collect(), n),
        Folds::Group => {
            let mut ids = BTreeMap::new();
            let fold: Vec<usize> = records
                .iter()
                .map(|r| {
                    let next = ids.len();
                    *ids.entry(group_of(r)).or_insert(next)
                })
                .collect();
            if ids.len() < 2 {
                return Err(Error::Config(
                    "--cv group needs records from at least 2 benchmarks or subjects".into(),
                ));
            }
            (fold, ids.len())
        }
    };
    let fold: Vec<usize> = kept.iter().map(|&i| record_fold[i]).collect();
    let mut routed: Vec<Vec<Option<Routed>>> = policies
        .iter()
        .map(|_| (0..items.len()).map(|_| None).collect())
        .collect();
    let options = RouterOptions {
        policy: policies[0].clone(),
        index: IndexKind::Flat,
        hnsw: HnswParams::default(),
    };
    for f in 0..n_folds {
        let test: Vec<usize> = (0..items.len()).filter(|&j| fold[j] == f).collect();
        if test.is_empty() {
            continue;
        }
        let train: Vec<OutcomeRecord> = records
            .iter()
            .zip(&record_fold)
            .filter(|(_, &rf)| rf != f)
            .map(|(r, _)| r.clone())
            .collect();
        // Only the index side is smoothed: the routed records are scored on their own outcomes.
        let (examples, _) = outcome_examples(&smooth.apply(&train, scale), map, scale)?;
        let router = Router::build(
            embedder.clone(),
            tiers.clone(),
            options.clone(),
            examples,
            cache_dir,
            progress,
        )?;
        let prompts: Vec<&str> = test
            .iter()
            .map(|&j| records[kept[j]].prompt.as_str())
            .collect();
        let result = evaluate(&router, &prompts, policies, weak, strong, progress)?;
        for (p, routed_p) in result.into_iter().enumerate() {
            for (&j, r) in test.iter().zip(routed_p) {
                routed[p][j] = Some(r);
            }
        }
    }
    let routed = routed
        .into_iter()
        .map(|v| {
            v.into_iter()
                .map(|r| r.expect("every item is in one fold"))
                .collect()
        })
        .collect();
    Ok((items, routed))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn items(pairs: &[(f64, f64)]) -> Vec<Item> {
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

    fn close(a: f64, b: f64) -> bool {
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
        plot(&reports, &path, "test").unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("<svg") && svg.contains("oracle"));
    }

    fn record(
        id: &str,
        prompt: &str,
        benchmark: &str,
        subject: Option<&str>,
        small: bool,
    ) -> OutcomeRecord {
        OutcomeRecord {
            id: id.into(),
            prompt: prompt.into(),
            source_benchmark: Some(benchmark.into()),
            subject: subject.map(Into::into),
            label_type: None,
            outcomes: [
                ("s".to_string(), serde_json::json!(small)),
                ("l".to_string(), serde_json::json!(true)),
            ]
            .into(),
        }
    }

    #[test]
    fn folds_parse_and_groups_name_benchmark_and_subject() {
        assert_eq!("5".parse::<Folds>(), Ok(Folds::Hash(5)));
        assert_eq!("group".parse::<Folds>(), Ok(Folds::Group));
        assert!("1".parse::<Folds>().is_err());
        assert!("benchmarks".parse::<Folds>().is_err());
        assert_eq!(Folds::Hash(5).to_string(), "5");
        assert_eq!(
            group_of(&record("x", "p", "mmlu", Some("law"), true)),
            "mmlu/law"
        );
        assert_eq!(group_of(&record("x", "p", "arc", None, true)), "arc");
    }

    #[test]
    fn leave_one_group_out_routes_each_group_without_its_own_examples() {
        // Benchmark "a": the small model always fails; "b": it always succeeds. In-domain
        // (hash folds) an "a" prompt has "a" neighbours and looks hard; with one fold per
        // group it only sees "b" examples, which say small is enough (score 0), and the "b"
        // prompts only see "a" examples (score 1).
        let mut records = Vec::new();
        for i in 0..6 {
            records.push(record(
                &format!("a{i}"),
                &format!("solve the puzzle alpha {i}"),
                "a",
                None,
                false,
            ));
            records.push(record(
                &format!("b{i}"),
                &format!("solve the puzzle beta {i}"),
                "b",
                None,
                true,
            ));
        }
        let tiers = crate::tier::test_tiers(&["small", "large"]);
        let map = OutcomeMap::parse(&["small=s".into(), "large=l".into()], &tiers).unwrap();
        let policy = Policy {
            k: 4,
            temperature: 1000.0,
            ..Policy::default()
        };
        let embedder: Arc<dyn Embedder> = Arc::new(crate::router::HashedWords::new());
        let run = |folds| {
            let (items, routed) = cross_validate(
                embedder.clone(),
                &tiers,
                &records,
                &map,
                Scale::Auto,
                Smooth::None,
                folds,
                None,
                std::slice::from_ref(&policy),
                &|_, _| {},
            )
            .unwrap();
            assert_eq!(items.len(), 12);
            items
                .iter()
                .zip(&routed[0])
                .map(|(it, r)| (it.benchmark.clone(), r.score))
                .collect::<Vec<_>>()
        };
        for (benchmark, score) in run(Folds::Group) {
            let expected = if benchmark == "a" { 0.0 } else { 1.0 };
            assert!(close(score, expected), "{benchmark}: {score}");
        }
        let in_domain = run(Folds::Hash(2));
        assert!(
            in_domain.iter().any(|(b, score)| b == "a" && *score > 0.0),
            "{in_domain:?}"
        );
        let one_group: Vec<OutcomeRecord> = records
            .iter()
            .filter(|r| r.id.starts_with('a'))
            .cloned()
            .collect();
        let err = cross_validate(
            embedder.clone(),
            &tiers,
            &one_group,
            &map,
            Scale::Auto,
            Smooth::None,
            Folds::Group,
            None,
            std::slice::from_ref(&policy),
            &|_, _| {},
        )
        .unwrap_err();
        assert!(err.to_string().contains("at least 2"), "{err}");
    }
}
