//! `model-router store import FILE`, and the loading of a `serve` backed by `[store]`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use model_router::config::Config;
use model_router::corpus::{read_examples, Example};
use model_router::embed::{self, Embedder};
use model_router::router::{Router, RouterOptions};
use model_router::store::{self, PgStore};

#[derive(Debug, Subcommand)]
pub enum StoreAction {
    /// Validate an examples file (every line, as `ingest` does), embed its examples, and write
    /// them with their vectors into the `[store]` in one transaction: all or nothing. Ids the
    /// store holds already are refused (checked before anything is embedded).
    Import {
        /// JSONL examples, e.g. data/examples.jsonl.
        file: PathBuf,
        /// Import only the examples whose ids the store does not hold (an import run on every
        /// deploy adds what is new and succeeds when there is nothing new).
        #[arg(long)]
        skip_existing: bool,
    },
    /// Write the decisions every replica stored (`store.decisions`) to a file in the decision
    /// log's format, oldest first, for `replay`, `label-queue` and `feedback`. The file is
    /// written whole or not at all.
    Decisions {
        /// Where to write them (JSONL).
        #[arg(long, short)]
        out: PathBuf,
        /// Only decisions from this time on (RFC 3339, e.g. 2026-12-01T00:00:00Z).
        #[arg(long)]
        since: Option<String>,
    },
    /// Print what the store holds as JSON: migrations, examples and the last sequence number,
    /// vectors per model, decisions and feedback, the database's size. Reads only.
    Status,
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
    PgStore::connect(&url, settings.pool_size, settings.ca_file.as_deref())
}

pub fn run(config: &Config, action: &StoreAction) -> Result<()> {
    match action {
        StoreAction::Import {
            file,
            skip_existing,
        } => import(config, file, *skip_existing),
        StoreAction::Decisions { out, since } => export_decisions(config, out, since.as_deref()),
        StoreAction::Status => {
            let store = open(config)?;
            let status = runtime()?.block_on(store.status())?;
            println!("{}", serde_json::to_string_pretty(&status)?);
            Ok(())
        }
    }
}

fn import(config: &Config, file: &Path, skip_existing: bool) -> Result<()> {
    let tiers = config.tiers()?;
    let mut examples = read_examples(file, &tiers)?;
    if examples.is_empty() {
        bail!("{} holds no examples", file.display());
    }
    // Ids are checked before the (slow) embedding; the write checks again, under its lock.
    let store = open(config)?;
    let taken = runtime()?.block_on(async {
        store.migrate().await?;
        store.existing_ids(&examples).await
    })?;
    if !taken.is_empty() {
        if !skip_existing {
            return Err(store::duplicate_ids(&taken).into());
        }
        let taken: std::collections::HashSet<String> = taken.into_iter().collect();
        let before = examples.len();
        examples.retain(|e| e.id.as_ref().is_none_or(|id| !taken.contains(id)));
        println!(
            "{} of the {before} examples are in {} already: skipped",
            before - examples.len(),
            store.describe()
        );
        if examples.is_empty() {
            println!("nothing to import");
            return Ok(());
        }
    }
    let (last, took, store) = write(config, &examples)?;
    println!(
        "imported {} examples with their vectors into {store} (up to sequence number {last}) in {:.1}s",
        examples.len(),
        took.as_secs_f32()
    );
    Ok(())
}

/// Embeds validated examples (through the local embedding cache) and writes them with their
/// vectors into the `[store]` in one transaction: all or nothing; an id the store holds refuses
/// the write. Returns the last sequence number, the time the write took, and where the store is.
pub fn write(config: &Config, examples: &[Example]) -> Result<(i64, Duration, String)> {
    let store = open(config)?;
    let embedder: Arc<dyn Embedder> = Arc::new(embed::load_embedder(
        &config.model_spec(),
        config.device()?,
    )?);
    let model = embedder.info().sha256.clone();
    // The router's on-disk cache spares re-embedding texts this machine has embedded before.
    let router = Router::build(
        embedder,
        config.tiers()?,
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
    let started = Instant::now();
    let last = runtime()?.block_on(async {
        store.migrate().await?;
        store.write(examples, &model, &vectors).await
    })?;
    Ok((last, started.elapsed(), store.describe()))
}

fn export_decisions(config: &Config, out: &Path, since: Option<&str>) -> Result<()> {
    use std::io::Write;
    let store = open(config)?;
    let name = out
        .file_name()
        .with_context(|| format!("{} is not a file name", out.display()))?;
    let dir = out.parent().filter(|d| !d.as_os_str().is_empty());
    let temp = dir.unwrap_or(Path::new(".")).join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let file =
        std::fs::File::create(&temp).with_context(|| format!("creating {}", temp.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let written = runtime()?.block_on(async {
        store.migrate().await?;
        store
            .each_decision(since, |record| {
                w.write_all(record.as_bytes())
                    .and_then(|()| w.write_all(b"\n"))
                    .map_err(|e| {
                        model_router::error::Error::io(format!("writing {}", temp.display()), e)
                    })
            })
            .await
    });
    let finished = written.map_err(anyhow::Error::from).and_then(|n| {
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&temp, out)?;
        Ok(n)
    });
    match finished {
        Ok(n) => {
            eprintln!(
                "wrote {n} decisions from {} to {}",
                store.describe(),
                out.display()
            );
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            Err(e.context(format!("writing decisions to {}", out.display())))
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
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
    // Ready once the vectors are in; the HNSW graph (if any) is built after (`serve`).
    let options = RouterOptions {
        defer_graph: true,
        ..RouterOptions::from_config(config)?
    };
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
                if loaded.examples == 0 {
                    tracing::warn!(
                        store = %store.describe(),
                        "the store holds no examples: every query goes to the fallback tier \
                         until some are added (model-router store import FILE)"
                    );
                }
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
