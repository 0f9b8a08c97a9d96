//! `model-router gpu-check`: checks a GPU (the one `--device` names; `auto` finds one) and
//! prints a JSON report (docs/gpu-check.md); exits non-zero when no GPU was found, the check
//! could not run, or the GPU's vectors are not the CPU kernels'.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use model_router::config::Config;
use model_router::corpus::read_examples;
use model_router::embed::gpu_check::Timing;
use model_router::embed::source;
use model_router::gpu_report::{self, GpuCheckOptions, ServingSetup};
use model_router::router::RouterOptions;

#[derive(Debug, Args)]
pub struct GpuCheckArgs {
    /// Seeded MiniLM-shaped weights even when the model's files are here (they always are
    /// when the model is not on this machine: gpu-check fetches nothing).
    #[arg(long)]
    pub synthetic: bool,
    /// Largest padded batch of the correctness check.
    #[arg(long, default_value_t = 256)]
    pub max_batch: usize,
    /// Timed runs per latency or throughput figure (fewer if --seconds runs out first).
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
    /// Time limit of one figure's timed runs, once 3 are in.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Batch sizes of the throughput figures.
    #[arg(long, value_delimiter = ',', default_value = "32,128")]
    pub batches: Vec<usize>,
    /// Routing requests in flight at once in the serving figure.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Requests per serving run (one with batching, one without).
    #[arg(long, default_value_t = 4096)]
    pub requests: usize,
    /// Fail (exit non-zero) when a performance target is missed too.
    #[arg(long)]
    pub require_targets: bool,
    /// Write an f16 copy of the model (~45 MB for the default one, small enough to carry to
    /// a GPU machine) into this folder and exit; then `gpu-check --model DIR` there.
    #[arg(long, value_name = "DIR")]
    pub write_f16: Option<PathBuf>,
}

pub fn run(config: &Config, args: &GpuCheckArgs) -> Result<()> {
    if let Some(out) = &args.write_f16 {
        let model = source::resolve(&config.model_spec())?;
        let path = source::write_f16_copy(&model, out)
            .with_context(|| format!("writing an f16 copy into {}", out.display()))?;
        eprintln!(
            "f16 copy of {} in {}",
            config.embedding.model,
            out.display()
        );
        println!("{}", path.display());
        return Ok(());
    }
    if args.max_batch == 0 || args.runs == 0 || args.requests == 0 || args.concurrency == 0 {
        bail!("--max-batch, --runs, --requests and --concurrency must be at least 1");
    }
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        bail!("--seconds must be a positive number");
    }
    let options = GpuCheckOptions {
        device: config.device()?,
        model: config.model_spec(),
        synthetic: args.synthetic,
        max_batch: args.max_batch,
        timing: Timing {
            runs: args.runs,
            budget: Duration::from_secs_f64(args.seconds),
        },
        throughput_batches: args.batches.clone(),
        concurrency: args.concurrency,
        requests: args.requests,
        require_targets: args.require_targets,
    };
    let serving = || -> model_router::error::Result<ServingSetup> {
        let tiers = config.tiers()?;
        Ok(ServingSetup {
            examples: read_examples(&config.routing.examples, &tiers)?,
            options: RouterOptions {
                policy: config.policy()?,
                index: config.routing.index,
                hnsw: config.routing.hnsw,
                defer_graph: false,
            },
            tiers,
        })
    };
    let report = gpu_report::run(&options, &serving, &|step| eprintln!("gpu-check: {step}"));
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(e) = &report.error {
        bail!("gpu-check failed: {e}");
    }
    if !report.ok {
        let mut why = Vec::new();
        if let Some(c) = report.correctness.as_ref().filter(|c| !c.pass) {
            why.push(format!(
                "the device's vectors reach cosine {} against the CPU kernels' (needs {})",
                c.min_cosine, c.threshold
            ));
        }
        for t in report.targets.iter().filter(|t| !t.met) {
            why.push(format!(
                "target {} wants {} but got {:.3}",
                t.name, t.want, t.got
            ));
        }
        bail!("gpu-check failed: {}", why.join("; "));
    }
    Ok(())
}
