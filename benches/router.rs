//! Criterion benchmarks: embedding (batch 1 short and medium, batch 32), index search (exact
//! vs HNSW at 10k and 100k vectors, seeded), the vote, and routing end to end.
//!
//! Run: `cargo bench --bench router` (or `-- embed` for one group). The embedding groups use
//! the model of `data/router.toml`, fetching it if needed; texts come from benches/texts.json,
//! shared with scripts/bench_onnx.py so both engines see the same sentences
//! (`scripts/bench_compare.sh` runs both and prints the ratio).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use model_router::config::{Config, Overrides};
use model_router::embed::{load_embedder, Embedder};
use model_router::index::{FlatIndex, HnswIndex, HnswParams, VectorIndex};
use model_router::router::Router;
use model_router::tier::{Tier, Tiers};
use model_router::vote::{vote, Evidence, Policy};

struct Texts {
    short: String,
    medium: String,
    batch: Vec<String>,
}

fn texts() -> Texts {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/texts.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("benches/texts.json")).unwrap();
    Texts {
        short: v["short"].as_str().unwrap().to_string(),
        medium: v["medium"].as_str().unwrap().to_string(),
        batch: v["batch"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect(),
    }
}

fn config() -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/router.toml");
    let overrides = Overrides {
        device: std::env::var("ROUTER_DEVICE").ok(),
        ..Overrides::default()
    };
    Config::load(&path, &overrides).expect("data/router.toml")
}

fn bench_embed(c: &mut Criterion) {
    let config = config();
    let embedder = load_embedder(&config.model_spec(), config.device().expect("device"))
        .expect("embedding model");
    let t = texts();
    eprintln!(
        "embed: short = {} tokens, medium = {} tokens, batch = {} texts",
        embedder.count_tokens(&t.short).unwrap(),
        embedder.count_tokens(&t.medium).unwrap(),
        t.batch.len()
    );
    // Throughput in tokens: equal tokens/s at batch 1 and batch 32 mean the forward pass is
    // bound by arithmetic, not by per-call overhead, so batching cannot add much on this device.
    let tokens = |texts: &[&str]| -> u64 {
        texts
            .iter()
            .map(|t| embedder.count_tokens(t).unwrap() as u64)
            .sum()
    };
    let mut g = c.benchmark_group("embed");
    g.measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(tokens(&[&t.short])));
    g.bench_function("batch1_short", |b| {
        b.iter(|| embedder.embed(&[black_box(&t.short)]).unwrap())
    });
    g.throughput(Throughput::Elements(tokens(&[&t.medium])));
    g.bench_function("batch1_medium", |b| {
        b.iter(|| embedder.embed(&[black_box(&t.medium)]).unwrap())
    });
    let batch: Vec<&str> = t.batch.iter().map(String::as_str).collect();
    g.sample_size(20);
    g.throughput(Throughput::Elements(tokens(&batch)));
    g.bench_function("batch32", |b| {
        b.iter(|| embedder.embed(black_box(&batch)).unwrap())
    });
    g.finish();
}

/// Clustered unit vectors (like sentence embeddings, unlike uniform noise), seeded.
fn unit_vectors(rng: &mut StdRng, centres: &[Vec<f32>], n: usize) -> Vec<Vec<f32>> {
    (0..n)
        .map(|_| {
            let c = &centres[rng.gen_range(0..centres.len())];
            let v: Vec<f32> = c.iter().map(|x| x + rng.gen_range(-0.5f32..0.5)).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / norm).collect()
        })
        .collect()
}

fn bench_index(c: &mut Criterion) {
    let dim = 384;
    let mut rng = StdRng::seed_from_u64(42);
    let centres: Vec<Vec<f32>> = (0..200)
        .map(|_| (0..dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect())
        .collect();
    let queries = unit_vectors(&mut rng, &centres, 100);
    let mut g = c.benchmark_group("search");
    let sizes: &[usize] = if std::env::var("BENCH_SKIP_100K").is_ok() {
        &[10_000]
    } else {
        &[10_000, 100_000]
    };
    for &n in sizes {
        let data = unit_vectors(&mut rng, &centres, n);
        let mut flat = FlatIndex::new(dim);
        flat.add(&data).unwrap();
        let start = std::time::Instant::now();
        let mut hnsw = HnswIndex::new(dim, n, HnswParams::default());
        hnsw.add(&data).unwrap();
        let build = start.elapsed();
        let mut found = 0;
        for q in &queries {
            let truth: Vec<usize> = flat.search(q, 10).unwrap().iter().map(|h| h.id).collect();
            found += hnsw
                .search(q, 10)
                .unwrap()
                .iter()
                .filter(|h| truth.contains(&h.id))
                .count();
        }
        eprintln!(
            "search: {n} vectors, HNSW build {:.1} s, recall@10 {:.4}",
            build.as_secs_f64(),
            found as f64 / (10 * queries.len()) as f64
        );
        let mut i = 0;
        g.bench_with_input(BenchmarkId::new("flat", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % queries.len();
                flat.search(black_box(&queries[i]), 10).unwrap()
            })
        });
        g.bench_with_input(BenchmarkId::new("hnsw", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % queries.len();
                hnsw.search(black_box(&queries[i]), 10).unwrap()
            })
        });
    }
    g.finish();
}

fn bench_vote(c: &mut Criterion) {
    let tiers = Tiers::new(
        ["small", "medium", "large"]
            .iter()
            .map(|n| Tier {
                name: n.to_string(),
                model: n.to_string(),
                upstream: None,
                input_price_per_mtok: 0.0,
                output_price_per_mtok: 0.0,
                alternates: Vec::new(),
            })
            .collect(),
    )
    .unwrap();
    let evidence: Vec<Evidence> = (0..10)
        .map(|i| Evidence {
            similarity: 0.9 - i as f32 * 0.02,
            quality: (0..3)
                .map(|t| Some(if t >= i % 3 { 1.0 } else { 0.0 }))
                .collect(),
        })
        .collect();
    let policy = Policy::default();
    c.bench_function("vote/k10", |b| {
        b.iter(|| vote(black_box(&evidence), &tiers, &policy))
    });
}

fn bench_route(c: &mut Criterion) {
    let config = config();
    let embedder = load_embedder(&config.model_spec(), config.device().expect("device"))
        .expect("embedding model");
    let embedder: Arc<dyn Embedder> = Arc::new(embedder);
    let router = Router::from_config(&config, embedder, &|_, _| {}).expect("router");
    let t = texts();
    eprintln!(
        "route: {} examples, {} index",
        router.len(),
        router.index_kind()
    );
    c.bench_function("route/short", |b| {
        b.iter(|| router.route(black_box(&t.short)).unwrap())
    });
}

criterion_group!(benches, bench_embed, bench_index, bench_vote, bench_route);
criterion_main!(benches);
