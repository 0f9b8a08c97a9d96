//! Build a router from your own labeled examples in code, without a config file, then add
//! an example live and see the decision change.
//!
//! Run: `cargo run --release --example own_examples`

use std::path::Path;
use std::sync::Arc;

use model_router::config::{Config, Overrides};
use model_router::corpus::{Example, Label};
use model_router::embed::{load_embedder, Embedder};
use model_router::index::{HnswParams, IndexKind};
use model_router::router::{Router, RouterOptions};

fn example(text: &str, tier: &str) -> Example {
    Example {
        id: None,
        text: text.to_string(),
        label: Label::Tier {
            tier: tier.to_string(),
        },
        category: None,
        meta: None,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The config supplies the tiers and the embedding model; the examples come from code.
    let config = Config::load(Path::new("data/router.toml"), &Overrides::default())?;
    let embedder: Arc<dyn Embedder> =
        Arc::new(load_embedder(&config.model_spec(), config.device()?)?);
    let options = RouterOptions {
        policy: config.policy()?,
        index: IndexKind::Flat,
        hnsw: HnswParams::default(),
        defer_graph: false,
    };
    let router = Router::new(embedder, config.tiers()?, options);
    router.add(vec![
        example("Summarise this support ticket in one line.", "small"),
        example("Classify this review as positive or negative.", "small"),
        example(
            "Refactor this 2,000-line legacy billing module into services.",
            "large",
        ),
    ])?;

    let query = "Split our monolithic invoicing code into separate services";
    println!("before: {}", router.route(query)?.tier);
    router.add(vec![example(
        "Split the invoicing monolith into services, keeping behaviour identical.",
        "medium",
    )])?;
    let d = router.route(query)?;
    println!("after:  {} (nearest: {:?})", d.tier, d.neighbors[0].text);
    Ok(())
}
