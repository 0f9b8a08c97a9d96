//! Measuring a router on outcome data, as a library the CLI's `eval` only prints:
//!
//! - [`metrics`]: RouteLLM's curve, APGR, CPT and bootstrap intervals, and the per-benchmark
//!   [`BenchmarkReport`];
//! - [`plot`]: the cost–quality plot (SVG);
//! - [`cv`]: cross-validation on a seed split (hash folds, or one group left out at a time);
//! - [`learning`]: the learning curve, APGR against the number of in-domain labels;
//! - [`stream`]: a cost budget held live over a shuffled held-out stream;
//! - [`loo`]: leave-one-out over a tier-labeled example set.
//!
//! Every evaluation starts from one [`Setup`]: the embedder, the tier ladder, how outcome
//! records map to the weak and strong tier, and the settings (policies) to route with.

pub mod cv;
pub mod learning;
pub mod loo;
pub mod metrics;
pub mod plot;
pub mod stream;

use std::path::PathBuf;
use std::sync::Arc;

use crate::corpus::{Example, OutcomeMap, OutcomeRecord, Scale};
use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::index::{HnswParams, IndexKind};
use crate::router::{Router, RouterOptions};
use crate::smooth::Smooth;
use crate::tier::Tiers;
use crate::vote::Policy;

pub use cv::{cross_validate, fold_of, group_of, Folds};
pub use loo::{leave_one_out, LeaveOneOut};
pub use metrics::{
    apgr_difference_interval, apgr_interval, cost_saved, curve, knob_targets, random_summary,
    report, route_item, BenchmarkReport, Curve, Item, KnobPoint, Routed, Summary,
};
pub use plot::plot;

/// What an evaluation routes with and scores against.
#[derive(Clone)]
pub struct Setup {
    pub embedder: Arc<dyn Embedder>,
    pub tiers: Tiers,
    /// Outcome keys per tier: the first mapped tier is weak, the last strong.
    pub map: OutcomeMap,
    pub scale: Scale,
    /// The settings to route with, all voted on the same neighbours; the first is the
    /// reference the others are compared with. Never empty.
    pub policies: Vec<Policy>,
    /// Where embeddings are cached between runs (`None`: not cached).
    pub cache_dir: Option<PathBuf>,
    weak: usize,
    strong: usize,
}

impl Setup {
    /// Checks that the map names a weak and a strong tier of `tiers` and that there is a
    /// policy to route with.
    pub fn new(
        embedder: Arc<dyn Embedder>,
        tiers: Tiers,
        map: OutcomeMap,
        scale: Scale,
        policies: Vec<Policy>,
        cache_dir: Option<PathBuf>,
    ) -> Result<Setup> {
        let names: Vec<&str> = map.tiers().collect();
        if names.len() < 2 {
            return Err(Error::Config(
                "evaluation needs two mapped tiers (--map weak=... --map strong=...)".into(),
            ));
        }
        let weak = tiers.require(names[0])?;
        let strong = tiers.require(names[names.len() - 1])?;
        if policies.is_empty() {
            return Err(Error::Config(
                "evaluation needs a setting to route with".into(),
            ));
        }
        Ok(Setup {
            embedder,
            tiers,
            map,
            scale,
            policies,
            cache_dir,
            weak,
            strong,
        })
    }

    /// The weak tier's index.
    pub fn weak(&self) -> usize {
        self.weak
    }

    /// The strong tier's index.
    pub fn strong(&self) -> usize {
        self.strong
    }

    /// The weak tier's price relative to the strong one's (input plus output per token), for
    /// "cost saved".
    pub fn relative_weak_cost(&self) -> f64 {
        let price =
            |t: usize| self.tiers[t].input_price_per_mtok + self.tiers[t].output_price_per_mtok;
        if price(self.strong) > 0.0 {
            price(self.weak) / price(self.strong)
        } else {
            0.0
        }
    }

    /// A router over `examples` with the first policy and an exact (flat) index, embeddings
    /// through the cache.
    pub fn router(
        &self,
        examples: Vec<Example>,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Router> {
        let options = RouterOptions {
            policy: self.policies[0].clone(),
            index: IndexKind::Flat,
            hnsw: HnswParams::default(),
            defer_graph: false,
        };
        Router::build(
            self.embedder.clone(),
            self.tiers.clone(),
            options,
            examples,
            self.cache_dir.as_deref(),
            progress,
        )
    }

    /// Routes prompts with each policy: embeds them through the router's cache (reporting
    /// progress), finds neighbours once with the largest k, then votes per policy. One
    /// `Vec<Routed>` per policy, in prompt order.
    pub fn route(
        &self,
        router: &Router,
        prompts: &[&str],
        progress: &dyn Fn(usize, usize),
    ) -> Result<Vec<Vec<Routed>>> {
        let vectors = router.embed_cached(prompts, progress)?;
        let k_max = self.policies.iter().map(|p| p.k).max().unwrap_or(1);
        let mut out: Vec<Vec<Routed>> = self
            .policies
            .iter()
            .map(|_| Vec::with_capacity(prompts.len()))
            .collect();
        // Neighbour qualities only in the variants some policy votes on.
        let mut variants: Vec<bool> = self.policies.iter().map(|p| p.category_baseline).collect();
        variants.sort_unstable();
        variants.dedup();
        for v in &vectors {
            let evidence = router.evidence(v, k_max, &variants)?;
            for (p, routed) in self.policies.iter().zip(out.iter_mut()) {
                let i = variants.binary_search(&p.category_baseline).unwrap();
                routed.push(route_item(
                    &evidence[i],
                    router.tiers(),
                    p,
                    self.weak,
                    self.strong,
                ));
            }
        }
        Ok(out)
    }

    /// Routes held-out records against an index of `examples`: the records as items (those
    /// with both outcomes) and, per policy, how each was routed.
    pub fn held_out(
        &self,
        examples: Vec<Example>,
        records: &[OutcomeRecord],
        progress: &dyn Fn(usize, usize),
    ) -> Result<(Vec<Item>, Vec<Vec<Routed>>)> {
        let (items, kept, _) = items_from_records(records, &self.map, self.scale)?;
        let router = self.router(examples, progress)?;
        let prompts: Vec<&str> = kept.iter().map(|&i| records[i].prompt.as_str()).collect();
        Ok((items, self.route(&router, &prompts, progress)?))
    }
}

/// The settings grid: every combination of the values given (an empty axis takes the base
/// policy's value).
#[derive(Debug, Clone, Default)]
pub struct Grid {
    pub k: Vec<usize>,
    pub temperature: Vec<f32>,
    pub category_baseline: Vec<bool>,
}

impl Grid {
    /// The policies of the grid, category baseline outermost, then k, then temperature.
    pub fn policies(&self, base: &Policy) -> Vec<Policy> {
        fn axis<T: Clone>(given: &[T], base: T) -> Vec<T> {
            if given.is_empty() {
                vec![base]
            } else {
                given.to_vec()
            }
        }
        let mut policies = Vec::new();
        for category_baseline in axis(&self.category_baseline, base.category_baseline) {
            for k in axis(&self.k, base.k) {
                for temperature in axis(&self.temperature, base.temperature) {
                    policies.push(Policy {
                        k,
                        temperature,
                        category_baseline,
                        ..base.clone()
                    });
                }
            }
        }
        policies
    }
}

/// How the records of an evaluation are routed.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Against an index of these examples (the records are held out from it).
    HeldOut(Vec<Example>),
    /// Cross-validated on the records themselves, once per smoothing of the index side.
    CrossValidate { folds: Folds, smooth: Vec<Smooth> },
}

/// One evaluated setting: the smoothing of the index side and the policy, with how each item
/// was routed.
#[derive(Debug, Clone)]
pub struct Setting {
    pub smooth: Smooth,
    pub policy: Policy,
    pub routed: Vec<Routed>,
}

/// Routes `records` under every policy of the setup (and every smoothing, when
/// cross-validating). The items, and one [`Setting`] per (smoothing, policy).
pub fn run(
    setup: &Setup,
    records: &[OutcomeRecord],
    mode: Mode,
    progress: &dyn Fn(usize, usize),
) -> Result<(Vec<Item>, Vec<Setting>)> {
    let mut settings = Vec::new();
    let mut items = Vec::new();
    let mut add = |smooth: Smooth, routed: Vec<Vec<Routed>>| {
        for (policy, routed) in setup.policies.iter().zip(routed) {
            settings.push(Setting {
                smooth,
                policy: policy.clone(),
                routed,
            });
        }
    };
    match mode {
        Mode::HeldOut(examples) => {
            let (its, routed) = setup.held_out(examples, records, progress)?;
            items = its;
            add(Smooth::None, routed);
        }
        Mode::CrossValidate { folds, smooth } => {
            for s in smooth {
                let (its, routed) = cross_validate(setup, records, s, folds, progress)?;
                items = its;
                add(s, routed);
            }
        }
    }
    if items.is_empty() {
        let names: Vec<&str> = setup.map.tiers().collect();
        return Err(Error::Config(format!(
            "no record has outcomes for both {} and {}",
            names[0],
            names[names.len() - 1]
        )));
    }
    Ok((items, settings))
}

/// The benchmark a record reports under: its `source_benchmark`, with sub-sets such as
/// `alpaca_eval/koala` under their benchmark.
pub fn benchmark_of(record: &OutcomeRecord) -> String {
    record
        .source_benchmark
        .as_deref()
        .map(|b| b.split('/').next().unwrap_or(b).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
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
                    benchmark: benchmark_of(r),
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

/// A setup for tests over [`test_record`]s: tiers `small` and `large` mapped to the keys `s`
/// and `l`, the hashed-words embedder, one policy, no cache.
#[cfg(test)]
pub(crate) fn test_setup(policy: Policy) -> Setup {
    let tiers = crate::tier::test_tiers(&["small", "large"]);
    let map = OutcomeMap::parse(&["small=s".into(), "large=l".into()], &tiers).unwrap();
    let embedder: Arc<dyn Embedder> = Arc::new(crate::router::HashedWords::new());
    Setup::new(embedder, tiers, map, Scale::Auto, vec![policy], None).unwrap()
}

/// An outcome record for tests: small's pass or fail, large always passing, outcome keys `s`
/// and `l`.
#[cfg(test)]
pub(crate) fn test_record(
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
