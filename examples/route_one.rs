//! Route one query with the default config and examples, as a library user would.
//!
//! Run: `cargo run --release --example route_one -- "Prove that sqrt(2) is irrational"`

use std::path::Path;
use std::sync::Arc;

use model_router::config::{Config, Overrides};
use model_router::embed::{load_embedder, Embedder};
use model_router::router::Router;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let query = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "What's a good name for a grey cat?".to_string());
    let config = Config::load(Path::new("data/router.toml"), &Overrides::default())?;
    // Resolves the model (fetching and verifying it if needed) and picks the device.
    let embedder: Arc<dyn Embedder> =
        Arc::new(load_embedder(&config.model_spec(), config.device()?)?);
    let router = Router::from_config(&config, embedder, &|_, _| {})?;
    let decision = router.route(&query)?;
    println!(
        "{} -> {} ({}), confidence {:.2}\n{}",
        query, decision.tier, decision.model, decision.confidence, decision.reason
    );
    Ok(())
}
