//! `eval`: held-out evaluation, cross-validation on a seed split, the learning curve and the
//! budget stream. The work is `model_router::eval`'s; this file turns flags into a
//! [`Setup`] and prints: JSON on stdout, a summary per setting on stderr, the plot.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;

use model_router::config::Config;
use model_router::corpus::{self, read_id_list, read_outcome_records};
use model_router::embed::{self, Embedder};
use model_router::eval::learning::{
    default_domains, learning_curve, Domain, LearningOptions, Size,
};
use model_router::eval::stream::{budget_stream, StreamOptions};
use model_router::eval::{self as ev, report, Folds, Grid, Mode, Setup};
use model_router::smooth::Smooth;

use super::OutcomeArgs;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Held-out outcome records (JSONL); several files may be given.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub mapping: OutcomeArgs,
    /// Instead of routing FILES against --examples, cross-validate on them: `N` folds by
    /// prompt-text hash, or `group`: leave one benchmark (one MMLU subject) out at a time, a
    /// stand-in for out-of-domain traffic. For tuning on a seed split.
    #[arg(long, value_name = "N|group")]
    pub cv: Option<Folds>,
    /// Neighbour counts to try, comma-separated (default: the config's k).
    #[arg(long, value_delimiter = ',')]
    pub k: Vec<usize>,
    /// Softmax temperatures to try, comma-separated (default: the config's).
    #[arg(long, value_delimiter = ',')]
    pub temperature: Vec<f32>,
    /// Category baseline settings to try, comma-separated: `false,true` compares the plain
    /// vote with qualities re-based by category (default: the config's).
    #[arg(long, value_delimiter = ',', value_name = "BOOL")]
    pub category_baseline: Vec<bool>,
    /// Bootstrap resamples for each APGR's 95% interval (0: none).
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// With --cv: how the index side's outcomes are smoothed, comma-separated to compare
    /// (`none,rasch`; see `ingest --smooth`); with --learning-curve, the first is used.
    /// Routed records are always scored on their own outcomes.
    #[arg(long, value_delimiter = ',', default_value = "none")]
    pub smooth: Vec<Smooth>,
    /// Where to write the cost-quality plot (SVG), for the first setting.
    #[arg(long, default_value = "eval.svg")]
    pub plot: PathBuf,
    /// Learning curve: index sizes of in-domain labels, comma-separated (`100,300,1000,all`).
    /// The index is built from the --seed-ids records of FILES (other benchmarks whole, the
    /// domain's sampled), not from --examples; FILES' --ids records are routed and scored.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "SIZES",
        requires = "seed_ids"
    )]
    pub learning_curve: Vec<Size>,
    /// With --learning-curve: the ids (one per line) of the records the index may use.
    #[arg(long, value_name = "FILE")]
    pub seed_ids: Option<PathBuf>,
    /// With --learning-curve: a domain, `BENCH` or `NAME=SEED[+SEED]:HELD_OUT[+HELD_OUT]`
    /// (repeatable; default: every held-out benchmark the seed records also cover).
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Vec<Domain>,
    /// With --learning-curve: samples per size.
    #[arg(long, default_value_t = 3)]
    pub seeds: usize,
    /// Hold a cost budget live (as `[routing.budget]`) on a shuffled stream of the held-out
    /// prompts and report how it held and what it bought: `TIER=SHARE`.
    #[arg(long, value_name = "TIER=SHARE")]
    pub budget: Option<String>,
    /// With --budget: the rolling window.
    #[arg(long, default_value_t = 1000)]
    pub window: usize,
    /// With --budget: decisions in the stream (the held-out prompts shuffled, repeated if
    /// fewer).
    #[arg(long, default_value_t = 3000)]
    pub stream: usize,
}

pub fn run(config: &Config, args: &EvalArgs) -> Result<()> {
    let tiers = config.tiers()?;
    let grid = Grid {
        k: args.k.clone(),
        temperature: args.temperature.clone(),
        category_baseline: args.category_baseline.clone(),
    };
    let embedder: Arc<dyn Embedder> = Arc::new(embed::load_embedder(
        &config.model_spec(),
        config.device()?,
    )?);
    let setup = Setup::new(
        embedder,
        tiers.clone(),
        args.mapping.map(config)?,
        args.mapping.scale()?,
        grid.policies(&config.policy()?),
        Some(config.cache_dir().join("embeddings")),
    )?;
    let records = args.mapping.records(&args.files)?;
    let bar = super::progress_bar("embedding");
    let progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };

    if !args.learning_curve.is_empty() {
        return learning(&setup, args, &records, &progress);
    }
    if let Some(spec) = &args.budget {
        if args.cv.is_some() {
            bail!("--budget runs on held-out records: drop --cv");
        }
        let options = StreamOptions {
            limit: super::calibrate::parse_limit(spec, &tiers, "--budget")?,
            window: args.window,
            length: args.stream,
            seed: 0x5eed,
        };
        let examples = corpus::read_examples(&config.routing.examples, &tiers)?;
        let r = budget_stream(&setup, examples, &records, &options, &progress)?;
        bar.finish_and_clear();
        eprintln!(
            "budget {}≤{:.2} over {} decisions (window {}): share after the first window {:.3}, \
             worst rolling miss {:.3} (without the budget: {:.3}); PGR {:.3} vs the offline \
             curve's {:.3} at that share ({:+.3}); quality_target {:.2} -> {:.3}",
            r.tier,
            r.limit,
            r.stream,
            r.window,
            r.share_after_first_window,
            r.max_rolling_deviation,
            r.share_without_budget,
            r.pgr,
            r.offline_pgr_at_share,
            r.pgr_difference,
            r.configured_quality_target,
            r.final_quality_target
        );
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }

    let mode = match args.cv {
        Some(folds) => Mode::CrossValidate {
            folds,
            smooth: args.smooth.clone(),
        },
        None => {
            if args.smooth != [Smooth::None] {
                bail!(
                    "--smooth compares smoothings of the index under --cv; to smooth an index \
                     built from outcome records, use `ingest --outcomes --smooth rasch`"
                );
            }
            Mode::HeldOut(corpus::read_examples(&config.routing.examples, &tiers)?)
        }
    };
    let (items, settings) = ev::run(&setup, &records, mode, &progress)?;
    bar.finish_and_clear();

    let names: Vec<&str> = setup.map.tiers().collect();
    let (weak_name, strong_name) = (names[0], names[names.len() - 1]);
    let relative_weak_cost = setup.relative_weak_cost();
    let mut out_settings = Vec::new();
    for (i, setting) in settings.iter().enumerate() {
        let (smooth, policy) = (setting.smooth, &setting.policy);
        let first = (i > 0).then(|| settings[0].routed.as_slice());
        let reports = report(
            &items,
            &setting.routed,
            relative_weak_cost,
            args.bootstrap,
            first,
        );
        eprintln!(
            "k={} temperature={} category_baseline={}{}:",
            policy.k,
            policy.temperature,
            policy.category_baseline,
            if smooth == Smooth::None {
                String::new()
            } else {
                format!(" smooth={smooth}")
            }
        );
        for r in &reports {
            let f = |x: Option<f64>| x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
            eprintln!(
                "  {:<28} n={:<5} APGR {}{} (oracle {})  CPT50 {}  CPT80 {}  strong share at 95% {} (random {})",
                r.benchmark, r.n, f(r.router.apgr),
                r.router_apgr_ci95.map(|(lo, hi)| format!(" [{lo:.3}, {hi:.3}]")).unwrap_or_default()
                    + &r.apgr_minus_first_ci95
                        .map(|(lo, hi)| format!(" (vs first setting: [{lo:+.3}, {hi:+.3}])"))
                        .unwrap_or_default(),
                f(r.oracle.apgr), f(r.router.cpt50),
                f(r.router.cpt80), f(r.router.share_at_95), f(r.random.share_at_95)
            );
        }
        if i == 0 {
            let title = format!(
                "{weak_name} vs {strong_name}: k={}, temperature={}{}{}",
                policy.k,
                policy.temperature,
                if policy.category_baseline {
                    ", category baseline"
                } else {
                    ""
                },
                match args.cv {
                    Some(Folds::Hash(n)) => format!(" ({n}-fold cross-validated)"),
                    Some(Folds::Group) => " (leave one benchmark/subject out)".to_string(),
                    None => String::new(),
                }
            );
            ev::plot(&reports, &args.plot, &title)?;
        }
        out_settings.push(serde_json::json!({
            "k": policy.k,
            "temperature": policy.temperature,
            "category_baseline": policy.category_baseline,
            "smooth": smooth.to_string(),
            "quality_target": policy.quality_target,
            "reports": reports,
        }));
    }
    let out = serde_json::json!({
        "weak_tier": weak_name,
        "strong_tier": strong_name,
        "relative_weak_cost": relative_weak_cost,
        "items": items.len(),
        "records": records.len(),
        "cross_validated_folds": match args.cv {
            Some(Folds::Hash(n)) => serde_json::json!(n),
            Some(Folds::Group) => serde_json::json!("group"),
            None => serde_json::Value::Null,
        },
        "settings": out_settings,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    eprintln!("plot written to {}", args.plot.display());
    Ok(())
}

/// `--learning-curve`: the held-out records are FILES' --ids records; the index side is their
/// --seed-ids records.
fn learning(
    setup: &Setup,
    args: &EvalArgs,
    held_out: &[model_router::corpus::OutcomeRecord],
    progress: &dyn Fn(usize, usize),
) -> Result<()> {
    if args.cv.is_some() || args.budget.is_some() {
        bail!("--learning-curve routes held-out records: drop --cv and --budget");
    }
    let seed_path = args
        .seed_ids
        .as_ref()
        .context("--learning-curve needs --seed-ids")?;
    let seed_ids = read_id_list(seed_path)?;
    if let Some(ids) = &args.mapping.ids {
        let held_ids = read_id_list(ids)?;
        if let Some(shared) = held_ids.iter().find(|id| seed_ids.contains(*id)) {
            bail!(
                "record `{shared}` is in both --ids and --seed-ids: the held-out records must \
                 never be indexed"
            );
        }
    }
    let mut seed = Vec::new();
    for f in &args.files {
        seed.extend(read_outcome_records(f, Some(&seed_ids))?);
    }
    let domains = if args.domain.is_empty() {
        default_domains(&seed, held_out)
    } else {
        args.domain.clone()
    };
    let options = LearningOptions {
        sizes: args.learning_curve.clone(),
        seeds: args.seeds,
        resamples: args.bootstrap,
        smooth: args.smooth.first().copied().unwrap_or_default(),
    };
    let curves = learning_curve(setup, &seed, held_out, &domains, &options, progress)?;
    for c in &curves {
        eprintln!(
            "{} ({} in-domain seed records, {} others; {} held-out prompts):",
            c.domain, c.available, c.other_examples, c.held_out
        );
        for p in &c.points {
            eprintln!(
                "  {:>6}{} labels: APGR {:.3}{}  per sample {:?}",
                p.labels,
                if p.all { " (all)" } else { "" },
                p.apgr,
                p.apgr_ci95
                    .map(|(lo, hi)| format!(" [{lo:.3}, {hi:.3}]"))
                    .unwrap_or_default(),
                p.apgr_per_seed
                    .iter()
                    .map(|a| (a * 1000.0).round() / 1000.0)
                    .collect::<Vec<_>>()
            );
        }
    }
    let out = serde_json::json!({
        "policy": {
            "k": setup.policies[0].k,
            "temperature": setup.policies[0].temperature,
            "category_baseline": setup.policies[0].category_baseline,
        },
        "smooth": options.smooth.to_string(),
        "seeds": options.seeds,
        "curves": curves.iter().map(|c| serde_json::json!({
            "curve": c,
            "labels_to_reach": {
                "0.55": c.labels_to_reach(0.55),
                "0.60": c.labels_to_reach(0.60),
            },
        })).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
