//! `model-router calibrate --input prompts.jsonl --share large=0.30`: the quality target that
//! sends at most that share of a traffic sample to `large` or above (RouteLLM's threshold
//! calibration, for any tier ladder), and the shares per tier it gives.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use model_router::budget::{calibrate, Limit, Scored};
use model_router::config::Config;
use model_router::tier::Tiers;

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// A traffic sample: JSONL with `prompt` or `text` per line (as `route --input`).
    #[arg(long)]
    pub input: PathBuf,
    /// TIER=SHARE: at most SHARE of the sample at TIER or above (repeatable).
    #[arg(long = "share", value_name = "TIER=SHARE", required = true)]
    pub shares: Vec<String>,
}

/// `TIER=SHARE` as a budget limit; `flag` names the option in errors.
pub(super) fn parse_limit(spec: &str, tiers: &Tiers, flag: &str) -> Result<Limit> {
    let (tier, share) = spec
        .split_once('=')
        .with_context(|| format!("{flag} `{spec}`: expected TIER=SHARE, e.g. large=0.30"))?;
    let share: f32 = share
        .trim()
        .parse()
        .ok()
        .filter(|s| (0.0..=1.0).contains(s))
        .with_context(|| format!("{flag} `{spec}`: the share must be a number in [0, 1]"))?;
    Ok(Limit {
        tier: tiers.require(tier.trim())?,
        share,
    })
}

pub fn run(config: &Config, args: &CalibrateArgs) -> Result<()> {
    let tiers = config.tiers()?;
    let limits = args
        .shares
        .iter()
        .map(|spec| parse_limit(spec, &tiers, "--share"))
        .collect::<Result<Vec<_>>>()?;
    let queries = super::read_queries(&args.input)?;
    if queries.is_empty() {
        bail!("{} holds no prompts", args.input.display());
    }
    let router = super::build_router(config)?;
    let policy = router.policy().clone();
    let mut sample = Vec::with_capacity(queries.len());
    for chunk in queries.chunks(64) {
        let texts: Vec<&str> = chunk.iter().map(|q| q.text.as_str()).collect();
        for d in router.route_batch(&texts, &policy)? {
            sample.push(Scored {
                quality: tiers.iter().map(|t| d.quality.get(&t.name)).collect(),
                basis: d.basis,
            });
        }
    }
    let c = calibrate(
        &sample,
        &limits,
        policy.quality_target,
        policy.fallback_tier,
        tiers.len(),
    );
    let by_tier = |shares: &[f32]| -> serde_json::Map<String, serde_json::Value> {
        tiers
            .iter()
            .zip(shares)
            .map(|(t, s)| (t.name.clone(), serde_json::json!(s)))
            .collect()
    };
    let out_of_distribution = sample
        .iter()
        .filter(|s| s.basis == model_router::vote::Basis::OutOfDistribution)
        .count();
    let out = serde_json::json!({
        "quality_target": c.quality_target,
        "configured_quality_target": policy.quality_target,
        "limits": limits.iter().map(|l| (tiers[l.tier].name.clone(), l.share)).collect::<std::collections::BTreeMap<_, _>>(),
        "binding": c.binding.map(|l| tiers[l.tier].name.clone()),
        "shares": by_tier(&c.shares),
        "shares_at_configured_target": by_tier(&c.shares_configured),
        "queries": sample.len(),
        "out_of_distribution": out_of_distribution,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    match c.quality_target {
        Some(t) => eprintln!(
            "quality_target = {t:.4} meets the limits on {} queries (set it in [routing], or \
             hold the share live with [routing.budget])",
            sample.len()
        ),
        None => {
            bail!(
            "no quality target meets the limit on `{}`: {} of {} queries are out of distribution \
             and go to the fallback tier `{}` whatever the target",
            c.binding.map(|l| tiers[l.tier].name.as_str()).unwrap_or("?"),
            out_of_distribution,
            sample.len(),
            tiers[policy.fallback_tier].name
        )
        }
    }
    Ok(())
}
