//! `gpu-check`'s report: the embedding checks of [`crate::embed::gpu_check`] (the GPU's
//! vectors against the CPU kernels', batch-1 latency, throughput) and serving throughput
//! through the [`crate::batcher`] at a fixed concurrency, batching on and off, each against
//! its target. See docs/gpu-check.md for every field.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::batcher::{BatchOptions, Batcher, Query};
use crate::corpus::Example;
use crate::embed::device::{compiled_backends, select_device, select_gpu};
use crate::embed::gpu_check::{
    self, check_correctness, measure_latency, measure_throughput, traffic, Correctness, Latency,
    Pair, Throughput, Timing, WeightsInfo,
};
use crate::embed::{DeviceSpec, Embedder, ModelSpec};
use crate::error::{Error, Result};
use crate::router::{Router, RouterOptions};
use crate::tier::Tiers;

/// What to check, and how hard.
#[derive(Debug, Clone)]
pub struct GpuCheckOptions {
    /// `auto` finds a GPU; `cpu` runs every check with candle's operations on the CPU (a dry
    /// run of the check itself: no targets apply).
    pub device: DeviceSpec,
    pub model: ModelSpec,
    /// Seeded weights even when the model's are here.
    pub synthetic: bool,
    /// Largest padded batch of the correctness check.
    pub max_batch: usize,
    pub timing: Timing,
    /// Batch sizes of the throughput figures.
    pub throughput_batches: Vec<usize>,
    /// Routing requests in flight at once in the serving figure.
    pub concurrency: usize,
    /// Requests per serving run (one run with batching, one without).
    pub requests: usize,
    /// Unmet targets fail the check too (else they are only reported).
    pub require_targets: bool,
}

/// The examples and tiers the serving figure routes against.
pub struct ServingSetup {
    pub tiers: Tiers,
    pub options: RouterOptions,
    pub examples: Vec<Example>,
}

/// Routes per second through the batcher, with and without batching.
#[derive(Debug, Clone, Serialize)]
pub struct Serving {
    pub concurrency: usize,
    pub requests: usize,
    pub examples: usize,
    /// Jobs per forward pass allowed with batching on.
    pub batch_max_size: usize,
    pub batched_routes_per_s: f64,
    pub unbatched_routes_per_s: f64,
    /// batched ÷ unbatched.
    pub speedup: f64,
}

/// A performance goal and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: &'static str,
    /// The condition, e.g. `>= 3`.
    pub want: String,
    pub got: f64,
    pub met: bool,
}

/// Everything `gpu-check` prints.
#[derive(Debug, Clone, Serialize)]
pub struct GpuReport {
    /// Correctness passed (and the targets were met, with `require_targets`); false on error.
    pub ok: bool,
    /// Why the check could not run, e.g. no GPU found.
    pub error: Option<String>,
    /// The device checked (`cuda:0`, `metal:0`; `cpu` for a dry run).
    pub device: Option<String>,
    /// GPU backends compiled into this binary.
    pub backends: Vec<&'static str>,
    pub weights: Option<WeightsInfo>,
    pub correctness: Option<Correctness>,
    pub latency: Vec<Latency>,
    pub throughput: Vec<Throughput>,
    pub serving: Option<Serving>,
    pub targets: Vec<Target>,
    pub elapsed_s: f64,
}

impl GpuReport {
    fn failed(error: String, started: Instant) -> Self {
        GpuReport {
            ok: false,
            error: Some(error),
            device: None,
            backends: compiled_backends(),
            weights: None,
            correctness: None,
            latency: Vec::new(),
            throughput: Vec::new(),
            serving: None,
            targets: Vec::new(),
            elapsed_s: started.elapsed().as_secs_f64(),
        }
    }
}

/// Runs every check; `serving` builds the router of the serving figure over the checked
/// embedder. Never fails: an error ends the report early, in its `error` field, with what was
/// measured until then.
pub fn run(
    options: &GpuCheckOptions,
    serving: &dyn Fn() -> Result<ServingSetup>,
    progress: &dyn Fn(&str),
) -> GpuReport {
    let started = Instant::now();
    let device = match options.device {
        DeviceSpec::Cpu => select_device(DeviceSpec::Cpu),
        spec => select_gpu(spec),
    };
    let device = match device {
        Ok(d) => d,
        Err(e) => return GpuReport::failed(e.to_string(), started),
    };
    progress("loading the weights on both devices");
    let pair = match gpu_check::load_pair(&options.model, device, options.synthetic) {
        Ok(p) => p,
        Err(e) => return GpuReport::failed(e.to_string(), started),
    };
    let mut report = GpuReport {
        device: Some(gpu_check::pair_device(&pair)),
        weights: Some(pair.weights.clone()),
        ..GpuReport::failed(String::new(), started)
    };
    report.error = None;
    if let Err(e) = measure(options, pair, serving, progress, &mut report) {
        report.error = Some(e.to_string());
    }
    let dry_run = options.device == DeviceSpec::Cpu;
    if !dry_run {
        report.targets = targets(&report);
    }
    let correct = report.correctness.as_ref().is_some_and(|c| c.pass);
    let targets_met = report.targets.iter().all(|t| t.met);
    report.ok = report.error.is_none() && correct && (targets_met || !options.require_targets);
    report.elapsed_s = started.elapsed().as_secs_f64();
    report
}

fn measure(
    options: &GpuCheckOptions,
    pair: Pair,
    serving: &dyn Fn() -> Result<ServingSetup>,
    progress: &dyn Fn(&str),
    report: &mut GpuReport,
) -> Result<()> {
    progress("correctness: the device against the CPU kernels");
    report.correctness = Some(check_correctness(&pair, options.max_batch)?);
    for tokens in [16, 64] {
        progress(&format!("batch-1 latency at {tokens} tokens"));
        report
            .latency
            .push(measure_latency(&pair, tokens, options.timing)?);
    }
    for &batch in &options.throughput_batches {
        progress(&format!("throughput at batch {batch}"));
        report
            .throughput
            .push(measure_throughput(&pair, batch, options.timing)?);
    }
    progress("serving through the batcher");
    let setup = serving()?;
    let embedder: Arc<dyn Embedder> = Arc::new(pair.device);
    report.serving = Some(measure_serving(options, embedder, setup)?);
    Ok(())
}

/// `concurrency` client threads, each routing everyday queries one after another through one
/// batcher until `requests` are answered; routes per second with batching (up to
/// `concurrency` jobs per pass) and without (one per pass).
fn measure_serving(
    options: &GpuCheckOptions,
    embedder: Arc<dyn Embedder>,
    setup: ServingSetup,
) -> Result<Serving> {
    let examples = setup.examples.len();
    let policy = setup.options.policy.clone();
    let router = Arc::new(Router::build(
        embedder,
        setup.tiers,
        setup.options,
        setup.examples,
        None,
        &|_, _| {},
    )?);
    let concurrency = options.concurrency.max(1);
    let queries = traffic(256);
    let run = |max_size: usize| -> Result<f64> {
        let batcher = Batcher::start(
            router.clone(),
            // The rest as the server's defaults: no waiting for more jobs (batches fill by
            // themselves under load).
            BatchOptions {
                max_size,
                capacity: concurrency * 2,
                ..BatchOptions::default()
            },
            None,
        );
        // Warm-up: as many queries as one run sends, at most every query once.
        for q in queries.iter().take(options.requests.min(queries.len())) {
            batcher
                .submit(Query::text(q)?, policy.clone())
                .map_err(|e| Error::Embed(e.to_string()))?
                .wait()?;
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let started = Instant::now();
        std::thread::scope(|s| -> Result<()> {
            let workers: Vec<_> = (0..concurrency)
                .map(|_| {
                    s.spawn(|| -> Result<()> {
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if i >= options.requests {
                                return Ok(());
                            }
                            let query = Query::text(&queries[i % queries.len()])?;
                            batcher
                                .submit(query, policy.clone())
                                .map_err(|e| Error::Embed(e.to_string()))?
                                .wait()?;
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join()
                    .map_err(|_| Error::Embed("a load-generating thread panicked".into()))??;
            }
            Ok(())
        })?;
        Ok(options.requests as f64 / started.elapsed().as_secs_f64())
    };
    let batched = run(concurrency)?;
    let unbatched = run(1)?;
    Ok(Serving {
        concurrency,
        requests: options.requests,
        examples,
        batch_max_size: concurrency,
        batched_routes_per_s: batched,
        unbatched_routes_per_s: unbatched,
        speedup: batched / unbatched,
    })
}

/// The GPU's goals (docs/gpu-check.md): batching pays at least 3× at concurrency 64; batch-1
/// latency no worse than the CPU kernels'; batch-128 throughput at least 20× the CPU's.
fn targets(report: &GpuReport) -> Vec<Target> {
    let mut out = Vec::new();
    if let Some(s) = &report.serving {
        out.push(Target {
            name: "serving_batching_speedup",
            want: ">= 3".into(),
            got: s.speedup,
            met: s.speedup >= 3.0,
        });
    }
    for l in &report.latency {
        let ratio = l.device_ms / l.cpu_ms;
        out.push(Target {
            name: if l.tokens <= 16 {
                "batch1_latency_vs_cpu_16_tokens"
            } else {
                "batch1_latency_vs_cpu_64_tokens"
            },
            want: "<= 1".into(),
            got: ratio,
            met: ratio <= 1.0,
        });
    }
    if let Some(t) = report.throughput.iter().find(|t| t.batch == 128) {
        out.push(Target {
            name: "batch128_throughput_vs_cpu",
            want: ">= 20".into(),
            got: t.speedup,
            met: t.speedup >= 20.0,
        });
    }
    out
}
