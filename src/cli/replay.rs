//! `replay`: re-decide a decision log under the candidate configuration (the global
//! `--config`, `--examples`, `--model`; with its `[routing.budget]` run over the log in order)
//! and print what would change as JSON. The arithmetic is
//! `model_router::replay`'s; this file reads the log, builds the router and prints.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use model_router::budget::Budget;
use model_router::config::Config;
use model_router::decision_log::read_checked_decisions;
use model_router::replay::{apply_budget, redecide, report, CandidateInfo, ReplayOptions};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Decision log(s) (JSONL, as `serve` writes them), e.g. a week's log and its rotated files.
    #[arg(required = true, value_name = "D.jsonl")]
    pub decisions: Vec<PathBuf>,
    /// Output tokens assumed per request for the cost figures: the log holds no answers.
    /// 300 is a typical chat answer (a few paragraphs); output usually costs 4-8x input per
    /// token, so set it from your upstreams' usage figures when you have them.
    #[arg(long, default_value_t = 300)]
    pub output_tokens: u64,
    /// Most changed decisions to list, with their neighbours before and after.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Re-decide each record at the quality target its vote used (a request's own
    /// `quality_target`, a budget's adjustment) instead of the candidate's `quality_target`:
    /// for candidates that change the examples, k or the model, not the target.
    #[arg(long)]
    pub logged_quality_target: bool,
}

pub fn run(config: &Config, args: &ReplayArgs) -> Result<()> {
    let records = read_checked_decisions(&args.decisions)?;
    if records.is_empty() {
        bail!("no decisions to replay in {}", names(&args.decisions));
    }
    let router = super::build_router(config)?;
    let options = ReplayOptions {
        output_tokens: args.output_tokens,
        top: args.top,
        logged_quality_target: args.logged_quality_target,
    };
    let bar = super::progress_bar("replaying");
    let mut redecided = redecide(&router, &records, &options, &|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .with_context(|| format!("replaying {}", names(&args.decisions)))?;
    bar.finish_and_clear();
    // The candidate's budget, run over the log in order as `serve` would (not with
    // --logged-quality-target, which replays each record's own target).
    let budget = match &config.routing.budget {
        Some(b) if !args.logged_quality_target => {
            let tiers = router.tiers();
            let policy = router.policy();
            let limits = config.budget_limits(tiers, b)?;
            let live = Budget::new(limits, b.window, policy.quality_target, tiers)
                .with_fallback(policy.fallback_tier);
            Some(apply_budget(&mut redecided, live, tiers))
        }
        _ => None,
    };
    let candidate = CandidateInfo::of(&router);
    let mut report = report(&redecided, router.tiers(), &candidate, &options);
    report.budget = budget;
    println!("{}", serde_json::to_string_pretty(&report)?);
    eprintln!(
        "replayed {} decisions: agreement {:.3}, {} changed; cost per 1,000 requests {:.4} -> \
         {:.4} USD",
        report.records,
        report.agreement,
        report.changed,
        report.cost.before_per_1000,
        report.cost.after_per_1000
    );
    if report.logged.other_quality_target > 0 && !args.logged_quality_target {
        eprintln!(
            "{} decisions were logged at another quality target than the candidate's (a \
             request's own, or a budget's): --logged-quality-target replays them at theirs",
            report.logged.other_quality_target
        );
    }
    Ok(())
}

fn names(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
