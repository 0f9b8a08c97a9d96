//! `model-router store import FILE`, and the loading of a `serve` backed by `[store]`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use model_router::config::Config;
use model_router::corpus::read_examples;
use model_router::embed::{self, Embedder};
use model_router::router::{Router, RouterOptions};
use model_router::store::{self, PgStore};

#[derive(Debug, Subcommand)]
pub enum StoreAction {
    /// Validate an examples file (every line, as `ingest` does), embed its examples, and write
    /// them with their vectors into the `[store]` in one transaction: all or nothing. Ids the
    /// store holds already are refused.
    Import {
        /// JSONL examples, e.g. data/examples.jsonl.
        file: PathBuf,
    },
}

/// The store `[store]` names, with the URL from the config or its variable.
pub fn open(config: &Config) -> model_router::error::Result<PgStore> {
    let Some(settings) = &config.store else {
        return Err(model_router::error::Error::Config(
            "no [store] in the config: add `[store] url_env = \"ROUTER_STORE_URL\"` (or `url`)"
                .into(),
        ));
    };
    let url = settings.resolve_url(|var| std::env::var(var).ok())?;
    PgStore::new(&url, settings.pool_size)
}

pub fn run(config: &Config, action: &StoreAction) -> Result<()> {
    match action {
        StoreAction::Import { file } => import(config, file),
    }
}

fn import(config: &Config, file: &Path) -> Result<()> {
    let store = open(config)?;
    let tiers = config.tiers()?;
    let examples = read_examples(file, &tiers)?;
    if examples.is_empty() {
        bail!("{} holds no examples", file.display());
    }
    let embedder: Arc<dyn Embedder> = Arc::new(embed::load_embedder(
        &config.model_spec(),
        config.device()?,
    )?);
    let model = embedder.info().sha256.clone();
    // The router's on-disk cache spares re-embedding texts this machine has embedded before.
    let router = Router::build(
        embedder,
        tiers,
        RouterOptions::from_config(config)?,
        Vec::new(),
        Some(&config.cache_dir().join("embeddings")),
        &|_, _| {},
    )?;
    let bar = super::progress_bar("embedding examples");
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let vectors = router.embed_cached(&texts, &|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let started = Instant::now();
    let last = runtime.block_on(async {
        store.migrate().await?;
        store.write(&examples, false, &model, &vectors).await
    })?;
    println!(
        "imported {} examples with their vectors into {} (up to sequence number {last}) in {:.1}s",
        examples.len(),
        store.describe(),
        started.elapsed().as_secs_f32()
    );
    Ok(())
}

/// Loads the router from the store for `serve`: connects (retrying with backoff while the
/// store is unreachable: the server is not ready meanwhile), applies migrations, reads every
/// example and the stored vectors, embeds (and stores) only what has none.
pub fn load(
    config: &Config,
    embedder: Arc<dyn Embedder>,
) -> model_router::error::Result<(Router, PgStore, i64)> {
    let store = open(config)?;
    let tiers = config.tiers()?;
    let options = RouterOptions::from_config(config)?;
    let handle = tokio::runtime::Handle::current();
    let mut backoff = Duration::from_millis(250);
    loop {
        let attempt = handle.block_on(async {
            store.migrate().await?;
            store::load_router(&store, embedder.clone(), tiers.clone(), options.clone()).await
        });
        match attempt {
            Ok((router, loaded)) => {
                tracing::info!(
                    store = %store.describe(),
                    examples = loaded.examples,
                    stored_vectors = loaded.stored_vectors,
                    embedded = loaded.embedded,
                    seq = loaded.seq,
                    "loaded from the store"
                );
                return Ok((router, store, loaded.seq));
            }
            Err(e @ model_router::error::Error::StoreUnavailable(_)) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "store unreachable: not ready; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    }
}
