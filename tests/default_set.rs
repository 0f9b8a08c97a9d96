//! Quality checks of the shipped example set, data/examples.jsonl: it validates, every tier
//! appears in every category, there are no exact or near duplicates (cosine ≥ 0.95 with the
//! real model), and leave-one-out routing recovers its labels far better than chance.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use model_router::config::{Config, Overrides};
use model_router::corpus::{read_examples, Example, Label};
use model_router::eval::leave_one_out;
use model_router::index::{FlatIndex, VectorIndex};
use model_router::router::{Router, RouterOptions};

use crate::util::embedder;

fn default_set() -> (Config, Vec<Example>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/router.toml");
    let config = Config::load(&path, &Overrides::default()).unwrap();
    let examples = read_examples(&config.routing.examples, &config.tiers().unwrap())
        .expect("data/examples.jsonl validates");
    (config, examples)
}

fn tier(e: &Example) -> &str {
    match &e.label {
        Label::Tier { tier } => tier,
        Label::Outcomes { .. } => panic!("the default set is labeled by tier"),
    }
}

/// Embeddings of the whole set, through the on-disk cache.
fn vectors(config: &Config, examples: &[Example]) -> Vec<Vec<f32>> {
    let options = RouterOptions {
        policy: config.policy().unwrap(),
        index: model_router::index::IndexKind::Flat,
        hnsw: Default::default(),
        defer_graph: false,
    };
    let cache = config.cache_dir().join("embeddings");
    let router = Router::build(
        embedder(),
        config.tiers().unwrap(),
        options,
        Vec::new(),
        Some(&cache),
        &|_, _| {},
    )
    .unwrap();
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    router.embed_cached(&texts, &|_, _| {}).unwrap()
}

#[test]
fn every_tier_in_every_category_and_a_realistic_balance() {
    let (config, examples) = default_set();
    assert!(examples.len() >= 1500, "{} examples", examples.len());
    let tiers: Vec<String> = config
        .tiers()
        .unwrap()
        .names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut cells: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut categories = BTreeSet::new();
    for e in &examples {
        let c = e
            .category
            .clone()
            .expect("every default example has a category");
        categories.insert(c.clone());
        *cells.entry((c, tier(e).to_string())).or_default() += 1;
    }
    assert!(categories.len() >= 20, "{categories:?}");
    for c in &categories {
        for t in &tiers {
            assert!(
                cells.get(&(c.clone(), t.clone())).copied().unwrap_or(0) >= 3,
                "{c} has too few `{t}`"
            );
        }
    }
    let share =
        |t: &str| examples.iter().filter(|e| tier(e) == t).count() as f64 / examples.len() as f64;
    assert!(
        share("small") > share("medium") && share("medium") > share("large"),
        "most traffic is simple"
    );
}

#[test]
fn no_exact_or_near_duplicates() {
    let (config, examples) = default_set();
    let mut seen = BTreeSet::new();
    for e in &examples {
        let norm = e
            .text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        assert!(seen.insert(norm), "exact duplicate: {}", e.text);
    }
    let v = vectors(&config, &examples);
    let mut index = FlatIndex::new(v[0].len());
    index.add(&v).unwrap();
    let mut near = Vec::new();
    for (i, q) in v.iter().enumerate() {
        for hit in index.search(q, 2).unwrap() {
            if hit.id != i && hit.similarity >= 0.95 && i < hit.id {
                near.push(format!(
                    "{:.3}: {:?} ~ {:?}",
                    hit.similarity, examples[i].text, examples[hit.id].text
                ));
            }
        }
    }
    assert!(
        near.is_empty(),
        "near duplicates (cos >= 0.95):\n{}",
        near.join("\n")
    );
}

#[test]
fn leave_one_out_beats_chance_for_every_tier() {
    let (config, examples) = default_set();
    let tiers = config.tiers().unwrap();
    let v = vectors(&config, &examples);
    // quality_target 0.5 picks the weighted median label of the neighbours: the natural
    // estimator of a label (the default knob deliberately leans to stronger tiers).
    let policy = model_router::vote::Policy {
        quality_target: 0.5,
        ..config.policy().unwrap()
    };
    let loo = leave_one_out(&examples, &v, &tiers, &policy).unwrap();
    eprintln!(
        "leave-one-out accuracy {:.3}, confusion (rows = label): {:?}",
        loo.accuracy(),
        loo.confusion
    );
    // Chance with this balance (always guessing `small`) is ~0.5.
    assert!(loo.accuracy() > 0.6, "accuracy {:.3}", loo.accuracy());
    for t in 0..tiers.len() {
        assert!(
            loo.recall(t) > 0.4,
            "tier {} recall {:.3}",
            tiers[t].name,
            loo.recall(t)
        );
    }
}
