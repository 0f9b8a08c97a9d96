//! `label-queue`: the logged queries most worth labeling, as examples with an empty tier for a
//! person or a judge to fill in before `ingest`. The choice is `model_router::label_queue`'s;
//! this file reads flags and files and writes the queue and a summary.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use model_router::config::Config;
use model_router::corpus;
use model_router::decision_log::read_checked_decisions;
use model_router::embed;
use model_router::label_queue::{label_queue, QueueOptions};

#[derive(Debug, Args)]
pub struct LabelQueueArgs {
    /// Decision log(s) (JSONL, as `serve` writes them); repeat for rotated files.
    #[arg(long = "decisions", value_name = "D.jsonl", required = true)]
    pub decisions: Vec<PathBuf>,
    /// Queries to pick, at most.
    #[arg(long)]
    pub limit: usize,
    /// Where to write the queue (examples JSONL with `"tier": ""`); default: stdout.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Skip a query whose cosine similarity to one already picked is above this: one label
    /// per cluster of rephrasings.
    #[arg(long, default_value_t = 0.9)]
    pub max_similarity: f32,
}

pub fn run(config: &Config, args: &LabelQueueArgs) -> Result<()> {
    if args.limit == 0 {
        bail!("--limit must be at least 1");
    }
    let records = read_checked_decisions(&args.decisions)?;
    let tiers = config.tiers()?;
    let embedder = embed::load_embedder(&config.model_spec(), config.device()?)?;
    let options = QueueOptions {
        limit: args.limit,
        max_similarity: args.max_similarity,
    };
    let queue = label_queue(&records, &tiers, &embedder, &options)?;
    let mut out = Vec::new();
    for item in &queue.items {
        serde_json::to_writer(&mut out, item)?;
        out.push(b'\n');
    }
    match &args.output {
        Some(path) => corpus::write_atomic(path, &out)
            .with_context(|| format!("writing the label queue {}", path.display()))?,
        None => std::io::stdout().lock().write_all(&out)?,
    }
    let s = &queue.stats;
    eprintln!(
        "{} queries to label ({} out of distribution, {} by margin) from {} decisions \
         ({} distinct queries; {} skipped as too similar to one picked; {} with a tier not in \
         the config left out){}",
        queue.items.len(),
        s.out_of_distribution,
        s.margin,
        s.decisions,
        s.distinct,
        s.too_similar,
        s.unscored,
        match &args.output {
            Some(path) => format!(": {}", path.display()),
            None => String::new(),
        }
    );
    if !queue.items.is_empty() {
        eprintln!("fill in each line's \"tier\", then: model-router ingest FILE");
    }
    Ok(())
}
