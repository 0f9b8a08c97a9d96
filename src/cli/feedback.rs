//! `model-router feedback F.jsonl --decisions D.jsonl`: joins a batch of feedback (a judge's
//! or a person's, in the `POST /v1/feedback` format, one per line) to a decision log and adds
//! the resulting `fb-` examples, all or nothing, through the same path as the HTTP endpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use model_router::config::Config;
use model_router::corpus::update_examples;
use model_router::decision_log::{read_decisions, DecisionRecord};
use model_router::error::{Error, LineError};
use model_router::feedback::{apply, Applied, Feedback};

#[derive(Debug, Args)]
pub struct FeedbackArgs {
    /// Feedback lines: `{"id", "outcomes": {tier: score}}`, `{"id", "tier"}` or `{"id", "score"}`.
    pub file: PathBuf,
    /// The decision log the ids refer to (`[log] decisions`, or `route --decisions`).
    #[arg(long)]
    pub decisions: PathBuf,
}

pub fn run(config: &Config, args: &FeedbackArgs) -> Result<()> {
    let tiers = config.tiers()?;
    let decisions: HashMap<String, DecisionRecord> = read_decisions(&args.decisions)?
        .into_iter()
        .map(|d| (d.id.clone(), d))
        .collect();
    let lines = read_feedback(&args.file, &decisions, &tiers)?;
    let target = &config.routing.examples;
    let counts = update_examples(target, &tiers, |set| {
        set.set_limits(config.routing.example_limits);
        let mut counts: HashMap<&'static str, usize> = HashMap::new();
        let mut errors = Vec::new();
        for (line, decision, outcomes) in lines {
            match apply(set, decision, outcomes) {
                Ok((_, applied)) => *counts.entry(applied.as_str()).or_default() += 1,
                Err(e) => errors.push(LineError {
                    line,
                    message: e.to_string(),
                }),
            }
        }
        Error::unless_lines(counts, args.file.display(), errors)
    })
    .with_context(|| format!("adding feedback to {}", target.display()))?;
    let n = |a: Applied| counts.get(a.as_str()).copied().unwrap_or(0);
    eprintln!(
        "feedback into {}: {} added, {} merged, {} unchanged",
        target.display(),
        n(Applied::Added),
        n(Applied::Merged),
        n(Applied::Unchanged)
    );
    Ok(())
}

type Joined<'a> = Vec<(
    usize,
    &'a DecisionRecord,
    std::collections::BTreeMap<String, f32>,
)>;

/// Parses the feedback file and joins each line to its decision; every bad line is reported.
fn read_feedback<'a>(
    path: &Path,
    decisions: &'a HashMap<String, DecisionRecord>,
    tiers: &model_router::tier::Tiers,
) -> Result<Joined<'a>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut joined = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let result = serde_json::from_str::<Feedback>(line)
            .map_err(|e| format!("not feedback: {e}"))
            .and_then(|f| {
                let d = decisions.get(&f.id).ok_or_else(|| {
                    format!("unknown decision `{}`: not in the decision log", f.id)
                })?;
                let outcomes = f.outcomes(tiers, &d.tier).map_err(|e| e.to_string())?;
                Ok((d, outcomes))
            });
        match result {
            Ok((d, outcomes)) => joined.push((i + 1, d, outcomes)),
            Err(message) => errors.push(LineError {
                line: i + 1,
                message,
            }),
        }
    }
    let joined = Error::unless_lines(joined, path.display(), errors)?;
    if joined.is_empty() {
        anyhow::bail!("{} holds no feedback", path.display());
    }
    Ok(joined)
}
