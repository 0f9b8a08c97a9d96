//! The command line: parse flags into a typed config, run one command, print results on
//! stdout and progress and errors on stderr.

mod gpu_check;
mod label_queue;
mod replay;
mod store;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use model_router::batcher::Shadow;
use model_router::config::{Config, Overrides};
use model_router::corpus::{
    self, outcome_examples, read_id_list, read_outcome_records, OutcomeMap, OutcomeRecord, Scale,
};
use model_router::decision_log::{DecisionRecord, LoggedPolicy};
use model_router::embed::{self, source, Embedder};
use model_router::error::{Error, LineError};
use model_router::router::{Router, RouterOptions};
use model_router::smooth::Smooth;

mod calibrate;
mod eval;
mod feedback;

/// Routes each LLM request to the cheapest model tier that answers it well.
#[derive(Debug, Parser)]
#[command(name = "model-router", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Config file; relative paths inside it resolve against its folder.
    #[arg(
        long,
        global = true,
        env = "ROUTER_CONFIG",
        default_value = "data/router.toml"
    )]
    pub config: PathBuf,
    /// Labeled examples (JSONL), instead of the config's `routing.examples`.
    #[arg(long, global = true, env = "ROUTER_EXAMPLES")]
    pub examples: Option<PathBuf>,
    /// Embedding device: auto, cpu, cuda, cuda:N, metal.
    #[arg(long, global = true, env = "ROUTER_DEVICE")]
    pub device: Option<String>,
    /// Embedding model: a hub id or a local directory.
    #[arg(long, global = true, env = "ROUTER_MODEL")]
    pub model: Option<String>,
}

#[derive(Debug, Subcommand)]
// Parsed once per run: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Serve the HTTP API on `server.bind`: routing, OpenAI-compatible forwarding, live
    /// examples, health and metrics. Prints the bound address, then loads the model.
    Serve,
    /// Route a query (prints the decision as JSON) or a JSONL batch.
    Route(RouteArgs),
    /// Validate labeled examples and append them to the examples file atomically.
    Ingest(IngestArgs),
    /// Print the quality target that sends at most a given share of a traffic sample to a
    /// tier or above.
    Calibrate(calibrate::CalibrateArgs),
    /// Join feedback (one per line, as for POST /v1/feedback) to a decision log and add the
    /// resulting `fb-` examples, all or nothing.
    Feedback(feedback::FeedbackArgs),
    /// Route held-out outcome records, sweep the cost-quality knob, print metrics as JSON
    /// and write a cost-quality plot.
    Eval(eval::EvalArgs),
    /// Pick the logged queries most worth labeling (out of distribution, then the smallest
    /// vote margins, kept diverse) and write them as examples with an empty tier.
    LabelQueue(label_queue::LabelQueueArgs),
    /// Re-decide a decision log under this configuration and print what would change as JSON:
    /// agreement, tier matrix, shares, cost per 1,000 requests, the most changed decisions.
    Replay(replay::ReplayArgs),
    /// Check a GPU (`--device`; `auto` finds one): its vectors against the CPU kernels' on
    /// the same weights, batch-1 latency, throughput, and serving through the batcher. Prints
    /// a JSON report; exits non-zero when no GPU is found or the check fails.
    GpuCheck(gpu_check::GpuCheckArgs),
    /// Print one JSON embedding vector per text.
    Embed {
        /// Texts to embed.
        #[arg(required = true)]
        texts: Vec<String>,
    },
    /// Manage the embedding model.
    Model {
        #[command(subcommand)]
        action: ModelAction,
    },
    /// The PostgreSQL store shared by replicas (`[store]`).
    Store {
        #[command(subcommand)]
        action: store::StoreAction,
    },
}

#[derive(Debug, Args)]
pub struct RouteArgs {
    /// The query to route.
    #[arg(conflicts_with = "input")]
    pub text: Option<String>,
    /// JSONL input: one object per line with `prompt` or `text`, and an optional `id`.
    #[arg(long, requires = "output")]
    pub input: Option<PathBuf>,
    /// JSONL output: one decision per input line.
    #[arg(long, requires = "input")]
    pub output: Option<PathBuf>,
    /// With --input: also write a decision record per query (the decision-log format), for
    /// `feedback --decisions`, `label-queue` and `replay`. Lines without an `id` get one.
    #[arg(long, requires = "input")]
    pub decisions: Option<PathBuf>,
    /// Cost–quality knob for this run, in [0, 1].
    #[arg(long)]
    pub quality_target: Option<f32>,
    /// Neighbours to consult.
    #[arg(long)]
    pub k: Option<usize>,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Labeled examples to add (same format as the examples file), or with --outcomes,
    /// per-model outcome records.
    pub file: PathBuf,
    /// Read FILE as per-model outcome records (`{"id", "prompt", "outcomes": {model: ...}}`)
    /// and turn them into outcome examples through the tier map.
    #[arg(long)]
    pub outcomes: bool,
    /// With --outcomes: `rasch` replaces the pass/fail outcomes of records that carry at least
    /// three models' results by a Rasch model's pass probabilities, fitted over this file's
    /// records: one model's single pass or fail is a noisy draw, the other models' results say
    /// how hard the prompt is. `none` keeps outcomes as recorded.
    #[arg(long, default_value = "none")]
    pub smooth: Smooth,
    /// Add them to the `[store]` shared by replicas instead of the examples file: validated
    /// the same way, embedded, written with their vectors in one transaction (all or
    /// nothing; an id the store holds refuses them all), then routable on every replica.
    #[arg(long)]
    pub store: bool,
    #[command(flatten)]
    pub mapping: OutcomeArgs,
}

/// How per-model outcome records map onto tiers.
#[derive(Debug, Args)]
pub struct OutcomeArgs {
    /// TIER=MODEL[,MODEL...]: the outcome key(s) holding a tier's result, first present wins
    /// (repeatable). Default: the config's [outcome_map].
    #[arg(long = "map", value_name = "TIER=MODEL")]
    pub map: Vec<String>,
    /// How outcome values become scores: auto (judge_score_1_10 records as 1-10 judge scores,
    /// others as booleans or [0,1]), unit, judge10.
    #[arg(long, default_value = "auto")]
    pub scale: String,
    /// Only records whose id is listed in this file (one per line).
    #[arg(long)]
    pub ids: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ModelAction {
    /// Make sure the model is on disk and verified; prints its folder on the last line.
    Fetch,
    /// Print the model's name, source, dimension, pooling, max length and device.
    Info,
}

impl Cli {
    fn overrides(&self) -> Overrides {
        let (k, quality_target) = match &self.command {
            Command::Route(r) => (r.k, r.quality_target),
            _ => (None, None),
        };
        Overrides {
            examples: self.global.examples.clone(),
            device: self.global.device.clone(),
            model: self.global.model.clone(),
            k,
            quality_target,
        }
    }
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<()> {
    let config = Config::load(&cli.global.config, &cli.overrides())?;
    match cli.command {
        Command::Serve => serve(&config),
        Command::Route(args) => route(&config, args),
        Command::Ingest(args) if args.outcomes => ingest_outcomes(&config, &args),
        Command::Ingest(args) if args.smooth != Smooth::None => {
            bail!("--smooth applies to outcome records: use it with ingest --outcomes")
        }
        Command::Ingest(args) => ingest(&config, &args),
        Command::Eval(args) => eval::run(&config, &args),
        Command::Feedback(args) => feedback::run(&config, &args),
        Command::Calibrate(args) => calibrate::run(&config, &args),
        Command::LabelQueue(args) => label_queue::run(&config, &args),
        Command::Replay(args) => replay::run(&config, &args),
        Command::GpuCheck(args) => gpu_check::run(&config, &args),
        Command::Embed { texts } => embed_texts(&config, &texts),
        Command::Store { action } => store::run(&config, &action),
        Command::Model {
            action: ModelAction::Fetch,
        } => {
            let spec = config.model_spec();
            let model = source::resolve(&spec)?;
            eprintln!(
                "{} from {} (sha256 {})",
                spec.name, model.source, model.sha256
            );
            println!("{}", model.dir.display());
            Ok(())
        }
        Command::Model {
            action: ModelAction::Info,
        } => {
            let embedder = embed::load_embedder(&config.model_spec(), config.device()?)?;
            println!("{}", serde_json::to_string_pretty(embedder.info())?);
            Ok(())
        }
    }
}

fn progress_bar(what: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

pub(crate) fn build_router(config: &Config) -> Result<Router> {
    load_router(config, false).with_context(|| {
        format!(
            "building the router from {}",
            config.routing.examples.display()
        )
    })
}

/// Loads the model and indexes the examples, with a progress bar. `defer_graph`: see
/// [`RouterOptions::defer_graph`].
fn load_router(config: &Config, defer_graph: bool) -> model_router::error::Result<Router> {
    let embedder: Arc<dyn Embedder> = Arc::new(embed::load_embedder(
        &config.model_spec(),
        config.device()?,
    )?);
    let bar = progress_bar("embedding examples");
    let options = RouterOptions {
        defer_graph,
        ..RouterOptions::from_config(config)?
    };
    let router = Router::from_config_with(config, options, embedder, &|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    Ok(router)
}

fn serve(config: &Config) -> Result<()> {
    let load_config = config.clone();
    model_router::server::run(
        config,
        move || {
            let (router, store) = if load_config.store.is_some() {
                let embedder: Arc<dyn Embedder> = Arc::new(embed::load_embedder(
                    &load_config.model_spec(),
                    load_config.device()?,
                )?);
                let (router, store, seq) = store::load(&load_config, embedder)?;
                (router, Some((store, seq)))
            } else {
                // Copies of the examples file orphaned by a writer killed mid-write.
                if load_config.routing.examples.exists() {
                    corpus::tidy_examples(&load_config.routing.examples)?;
                }
                (load_router(&load_config, true)?, None)
            };
            let shadow = match &load_config.shadow {
                Some(s) => Some(load_shadow(
                    &load_config,
                    &s.config,
                    router.embedder().clone(),
                )?),
                None => None,
            };
            Ok(model_router::server::Loaded {
                router,
                shadow,
                store,
            })
        },
        |addr| {
            // Scripts and tests read this line to find the port (`bind = "127.0.0.1:0"`).
            println!("listening on http://{addr}");
            let _ = std::io::stdout().flush();
        },
    )
    .with_context(|| {
        format!(
            "serving on {} with examples {}",
            config.server.bind,
            config.routing.examples.display()
        )
    })
}

/// The `[shadow]` router: the candidate config's examples and knobs over the served embedder,
/// which the candidate must name too (the shadow decides on the same query vectors).
fn load_shadow(
    config: &Config,
    path: &Path,
    embedder: Arc<dyn Embedder>,
) -> model_router::error::Result<Shadow> {
    let candidate = Config::load(path, &Overrides::default())?;
    let (a, b) = (&config.embedding, &candidate.embedding);
    if (&a.model, &a.revision, &a.sha256) != (&b.model, &b.revision, &b.sha256) {
        return Err(Error::Config(format!(
            "[shadow] {}: the candidate must use the served embedding model (`{}`, here `{}`), \
             since it decides on the same query vectors; to compare models, `replay` the \
             decision log with the candidate config",
            path.display(),
            a.model,
            b.model
        )));
    }
    let router = Router::from_config(&candidate, embedder, &|_, _| {})?;
    Ok(Shadow {
        policy: router.policy().clone(),
        router: Arc::new(router),
    })
}

fn route(config: &Config, args: RouteArgs) -> Result<()> {
    match (&args.text, &args.input, &args.output) {
        (Some(text), None, None) => {
            model_router::router::query_text(text)?;
            let router = build_router(config)?;
            let decision = router.route(text)?;
            println!("{}", serde_json::to_string_pretty(&decision)?);
            Ok(())
        }
        (None, Some(input), Some(output)) => {
            route_file(config, input, output, args.decisions.as_deref())
        }
        _ => bail!("give a query to route, or --input F.jsonl --output G.jsonl"),
    }
}

/// One line of a batch input.
pub(crate) struct Query {
    pub(crate) id: Option<serde_json::Value>,
    pub(crate) text: String,
}

pub(crate) fn read_queries(path: &Path) -> Result<Vec<Query>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut queries = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let problem = match serde_json::from_str::<serde_json::Value>(line) {
            Err(e) => Some(format!("invalid JSON: {e}")),
            Ok(v) => {
                let text = v
                    .get("prompt")
                    .or_else(|| v.get("text"))
                    .and_then(|t| t.as_str());
                match text {
                    Some(t) if !t.trim().is_empty() => {
                        queries.push(Query {
                            id: v.get("id").cloned(),
                            text: t.to_string(),
                        });
                        None
                    }
                    _ => Some("needs a non-empty string `prompt` or `text`".to_string()),
                }
            }
        };
        if let Some(message) = problem {
            errors.push(LineError {
                line: i + 1,
                message,
            });
        }
    }
    Ok(Error::unless_lines(queries, path.display(), errors)?)
}

fn route_file(config: &Config, input: &Path, output: &Path, log: Option<&Path>) -> Result<()> {
    let queries = read_queries(input)?;
    let router = build_router(config)?;
    let policy = router.policy().clone();
    let logged = LoggedPolicy::new(&policy, router.tiers());
    let version = router.examples_version();
    // Ids for lines that have none: unique per run, so logs of several runs can be joined.
    let run = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let bar = progress_bar("routing");
    bar.set_length(queries.len() as u64);
    let mut out = Vec::new();
    let mut records = Vec::new();
    let mut line = 0;
    for chunk in queries.chunks(64) {
        let texts: Vec<&str> = chunk.iter().map(|q| q.text.as_str()).collect();
        let started = Instant::now();
        let decisions = router.route_batch(&texts, &policy)?;
        let each_ms = started.elapsed().as_secs_f64() * 1e3 / chunk.len() as f64;
        for (q, mut d) in chunk.iter().zip(decisions) {
            line += 1;
            let id = match &q.id {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) if !v.is_null() => v.to_string(),
                _ => format!("route-{run}-{line}"),
            };
            d.id = Some(id.clone());
            let row = serde_json::json!({
                "id": q.id.clone().filter(|v| !v.is_null()).unwrap_or(serde_json::json!(id)),
                "tier": d.tier,
                "model": d.model,
                "confidence": d.confidence,
                "quality": d.quality,
                "basis": d.basis,
                "neighbors": d.neighbors,
            });
            serde_json::to_writer(&mut out, &row)?;
            out.push(b'\n');
            if log.is_some() {
                let record = DecisionRecord::new(
                    &id,
                    "cli",
                    &[(q.text.trim().to_string(), 1.0)],
                    &d,
                    logged.clone(),
                    &version,
                    router.embedder().info(),
                    each_ms,
                );
                serde_json::to_writer(&mut records, &record)?;
                records.push(b'\n');
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    corpus::write_atomic(output, &out)?;
    if let Some(log) = log {
        corpus::write_atomic(log, &records)?;
        eprintln!("decision records in {}", log.display());
    }
    eprintln!("routed {} queries into {}", queries.len(), output.display());
    Ok(())
}

fn ingest(config: &Config, args: &IngestArgs) -> Result<()> {
    let file = &args.file;
    let tiers = config.tiers()?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let source = file.display().to_string();
    if args.store {
        return ingest_to_store(config, file, "examples", |set| {
            set.add_lines(&text, &source, &HashSet::new())
        });
    }
    let target = &config.routing.examples;
    let (added, total, repeats) = corpus::update_examples(target, &tiers, |set| {
        set.set_limits(config.routing.example_limits);
        let texts: HashSet<String> = set.examples().map(|e| e.text.clone()).collect();
        let new = set.add_lines(&text, &source, &HashSet::new())?;
        let repeats = new.iter().filter(|e| texts.contains(&e.text)).count();
        Ok((new.len(), set.len(), repeats))
    })?;
    if added == 0 {
        bail!("{} holds no examples", file.display());
    }
    eprintln!(
        "added {added} examples to {} (now {total}){}",
        target.display(),
        if repeats > 0 {
            format!("; {repeats} repeat texts already there")
        } else {
            String::new()
        }
    );
    Ok(())
}

/// `ingest --store`: the examples `add` validates (into an empty set with the configured
/// limits) written to the store in one transaction.
fn ingest_to_store(
    config: &Config,
    file: &Path,
    what: &str,
    add: impl FnOnce(&mut corpus::ExampleSet) -> model_router::error::Result<Vec<corpus::Example>>,
) -> Result<()> {
    let mut set = corpus::ExampleSet::from_examples(&[], &config.tiers()?)?;
    set.set_limits(config.routing.example_limits);
    let new = add(&mut set)?;
    if new.is_empty() {
        bail!("{} holds no examples", file.display());
    }
    let (last, took, store) = store::write(config, &new)?;
    eprintln!(
        "added {} {what} to the store {store} (up to sequence number {last}) in {:.1}s",
        new.len(),
        took.as_secs_f32()
    );
    Ok(())
}

fn embed_texts(config: &Config, texts: &[String]) -> Result<()> {
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        bail!("text #{} is empty: give some text to embed", i + 1);
    }
    let embedder = embed::load_embedder(&config.model_spec(), config.device()?)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for v in embedder.embed(&refs)? {
        serde_json::to_writer(&mut out, &v)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

impl OutcomeArgs {
    fn map(&self, config: &Config) -> Result<OutcomeMap> {
        let specs: Vec<String> = if self.map.is_empty() {
            config
                .outcome_map
                .iter()
                .map(|(tier, keys)| format!("{tier}={}", keys.join(",")))
                .collect()
        } else {
            self.map.clone()
        };
        Ok(OutcomeMap::parse(&specs, &config.tiers()?)?)
    }

    fn scale(&self) -> Result<Scale> {
        Ok(self.scale.parse()?)
    }

    fn ids(&self) -> Result<Option<HashSet<String>>> {
        Ok(match &self.ids {
            Some(path) => Some(read_id_list(path)?),
            None => None,
        })
    }

    fn records(&self, files: &[PathBuf]) -> Result<Vec<OutcomeRecord>> {
        let ids = self.ids()?;
        let mut records = Vec::new();
        for f in files {
            records.extend(read_outcome_records(f, ids.as_ref())?);
        }
        Ok(records)
    }
}

fn ingest_outcomes(config: &Config, args: &IngestArgs) -> Result<()> {
    let tiers = config.tiers()?;
    let map = args.mapping.map(config)?;
    let records = args.mapping.records(std::slice::from_ref(&args.file))?;
    let scale = args.mapping.scale()?;
    let records = args.smooth.apply(&records, scale);
    let (new, skipped) = outcome_examples(&records, &map, scale)?;
    if new.is_empty() {
        bail!(
            "no record of {} has outcomes for every mapped tier ({} skipped): nothing was written",
            args.file.display(),
            skipped
        );
    }
    if args.store {
        return ingest_to_store(config, &args.file, "outcome examples", |set| {
            set.add(&new, &args.file.display().to_string(), &HashSet::new())
        });
    }
    let target = &config.routing.examples;
    let total = corpus::update_examples(target, &tiers, |set| {
        set.set_limits(config.routing.example_limits);
        set.add(&new, &args.file.display().to_string(), &HashSet::new())?;
        Ok(set.len())
    })?;
    eprintln!(
        "added {} outcome examples to {} (now {total}); skipped {} records lacking a mapped model",
        new.len(),
        target.display(),
        skipped
    );
    Ok(())
}
