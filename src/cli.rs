//! The command line: parse flags into a typed config, run one command, print results on
//! stdout and progress and errors on stderr.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use model_router::config::{Config, Overrides};
use model_router::corpus::{self, parse_examples};
use model_router::embed::{self, source, Embedder, ModelSpec};
use model_router::error::{Error, LineError};
use model_router::router::Router;

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
pub enum Command {
    /// Route a query (prints the decision as JSON) or a JSONL batch.
    Route(RouteArgs),
    /// Validate labeled examples and append them to the examples file atomically.
    Ingest(IngestArgs),
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
    /// Cost–quality knob for this run, in [0, 1].
    #[arg(long)]
    pub quality_target: Option<f32>,
    /// Neighbours to consult.
    #[arg(long)]
    pub k: Option<usize>,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Labeled examples to add (same format as the examples file).
    pub file: PathBuf,
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
        Command::Route(args) => route(&config, args),
        Command::Ingest(args) => ingest(&config, &args.file),
        Command::Embed { texts } => embed_texts(&config, &texts),
        Command::Model {
            action: ModelAction::Fetch,
        } => {
            let spec = ModelSpec::from_config(&config);
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
            let embedder = embed::load_embedder(&config)?;
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

fn build_router(config: &Config) -> Result<Router> {
    let embedder: Arc<dyn Embedder> = Arc::new(embed::load_embedder(config)?);
    let bar = progress_bar("embedding examples");
    let router = Router::from_config(config, embedder, &|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .with_context(|| {
        format!(
            "building the router from {}",
            config.routing.examples.display()
        )
    })?;
    bar.finish_and_clear();
    Ok(router)
}

fn route(config: &Config, args: RouteArgs) -> Result<()> {
    match (&args.text, &args.input, &args.output) {
        (Some(text), None, None) => {
            if text.trim().is_empty() {
                return Err(Error::EmptyQuery.into());
            }
            let router = build_router(config)?;
            let decision = router.route(text)?;
            println!("{}", serde_json::to_string_pretty(&decision)?);
            Ok(())
        }
        (None, Some(input), Some(output)) => route_file(config, input, output),
        _ => bail!("give a query to route, or --input F.jsonl --output G.jsonl"),
    }
}

/// One line of a batch input.
struct Query {
    id: Option<serde_json::Value>,
    text: String,
}

fn read_queries(path: &Path) -> Result<Vec<Query>> {
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
    if !errors.is_empty() {
        return Err(Error::InvalidLines {
            source_name: path.display().to_string(),
            errors,
        }
        .into());
    }
    Ok(queries)
}

fn route_file(config: &Config, input: &Path, output: &Path) -> Result<()> {
    let queries = read_queries(input)?;
    let router = build_router(config)?;
    let policy = router.policy().clone();
    let bar = progress_bar("routing");
    bar.set_length(queries.len() as u64);
    let mut out = Vec::new();
    for chunk in queries.chunks(64) {
        let texts: Vec<&str> = chunk.iter().map(|q| q.text.as_str()).collect();
        for (q, d) in chunk.iter().zip(router.route_batch(&texts, &policy)?) {
            let line = serde_json::json!({
                "id": q.id,
                "tier": d.tier,
                "model": d.model,
                "confidence": d.confidence,
                "quality": d.quality,
                "basis": d.basis,
                "neighbors": d.neighbors,
            });
            serde_json::to_writer(&mut out, &line)?;
            out.push(b'\n');
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    corpus::write_atomic(output, &out)?;
    eprintln!("routed {} queries into {}", queries.len(), output.display());
    Ok(())
}

fn ingest(config: &Config, file: &Path) -> Result<()> {
    let tiers = config.tiers()?;
    let target = &config.routing.examples;
    let existing = if target.exists() {
        corpus::read_examples(target, &tiers)
            .context("the examples file to append to is invalid; fix it first")?
    } else {
        Vec::new()
    };
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let new = parse_examples(&text, &tiers, &corpus::ids(&existing)).map_err(|errors| {
        Error::InvalidLines {
            source_name: file.display().to_string(),
            errors,
        }
    })?;
    if new.is_empty() {
        bail!("{} holds no examples", file.display());
    }
    let texts: HashSet<&str> = existing.iter().map(|e| e.text.as_str()).collect();
    let repeats = new
        .iter()
        .filter(|e| texts.contains(e.text.as_str()))
        .count();
    corpus::append_examples(target, &new)?;
    eprintln!(
        "added {} examples to {} (now {}){}",
        new.len(),
        target.display(),
        existing.len() + new.len(),
        if repeats > 0 {
            format!("; {repeats} repeat texts already there")
        } else {
            String::new()
        }
    );
    Ok(())
}

fn embed_texts(config: &Config, texts: &[String]) -> Result<()> {
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        bail!("text #{} is empty: give some text to embed", i + 1);
    }
    let embedder = embed::load_embedder(config)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for v in embedder.embed(&refs)? {
        serde_json::to_writer(&mut out, &v)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}
