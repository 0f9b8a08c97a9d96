//! Leave-one-out report of an example set: each example routed by all the others, as markdown
//! tables (accuracy per tier and per category, confusion matrix). Used for data/README.md.
//!
//! Run: `cargo run --release --example default_set_report [-- path/to/router.toml]`

use std::path::PathBuf;
use std::sync::Arc;

use model_router::config::{Config, Overrides};
use model_router::corpus::read_examples;
use model_router::embed::{load_embedder, Embedder};
use model_router::eval::leave_one_out;
use model_router::index::IndexKind;
use model_router::router::{Router, RouterOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| "data/router.toml".into());
    let config = Config::load(&path, &Overrides::default())?;
    let tiers = config.tiers()?;
    let policy = config.policy()?;
    let examples = read_examples(&config.routing.examples, &tiers)?;
    let embedder: Arc<dyn Embedder> =
        Arc::new(load_embedder(&config.model_spec(), config.device()?)?);
    let options = RouterOptions {
        policy: policy.clone(),
        index: IndexKind::Flat,
        hnsw: Default::default(),
        defer_graph: false,
    };
    // An empty router is enough: it embeds through the on-disk cache.
    let cache = config.cache_dir().join("embeddings");
    let router = Router::build(
        embedder,
        tiers.clone(),
        options,
        Vec::new(),
        Some(&cache),
        &|_, _| {},
    )?;
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let vectors = router.embed_cached(&texts, &|_, _| {})?;
    for target in [0.5, 0.7, 0.9] {
        let p = model_router::vote::Policy {
            quality_target: target,
            ..policy.clone()
        };
        let loo = leave_one_out(&examples, &vectors, &tiers, &p)?;
        println!(
            "quality_target {target}: accuracy {:.1}%, recall {:?}",
            100.0 * loo.accuracy(),
            (0..tiers.len())
                .map(|t| format!("{:.1}%", 100.0 * loo.recall(t)))
                .collect::<Vec<_>>()
        );
    }
    let p = model_router::vote::Policy {
        quality_target: 0.5,
        ..policy.clone()
    };
    let loo = leave_one_out(&examples, &vectors, &tiers, &p)?;

    println!("\nLeave-one-out over {} examples (k = {}, quality_target = 0.5, i.e. the weighted median label): accuracy **{:.1}%**\n", examples.len(), policy.k, 100.0 * loo.accuracy());
    println!("| label \\ decision | {} | recall |", loo.tiers.join(" | "));
    println!("|---|{}---|", "---|".repeat(loo.tiers.len()));
    for (t, row) in loo.confusion.iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|c| c.to_string()).collect();
        println!(
            "| {} | {} | {:.1}% |",
            loo.tiers[t],
            cells.join(" | "),
            100.0 * loo.recall(t)
        );
    }
    println!("\n| category | accuracy | n |\n|---|---|---|");
    for (category, (correct, total)) in &loo.by_category {
        println!(
            "| {category} | {:.1}% | {total} |",
            100.0 * *correct as f64 / *total as f64
        );
    }
    Ok(())
}
