//! A cost budget held live on a shuffled stream of held-out prompts: each prompt is decided at
//! the budget's current quality target and then observed, exactly as `serve` does
//! ([`crate::budget::Budget`]). It reports how close the rolling share stays to the limit and
//! whether the quality bought at that share matches the router's offline curve at the same
//! share (a live controller that chose badly would fall below it).

use serde::Serialize;

use crate::budget::{held, tier_at, Budget, Limit, Scored};
use crate::corpus::{Example, OutcomeRecord};
use crate::error::{Error, Result};
use crate::vote::vote;

use super::metrics::{curve, route_item, Item, SplitMix64};
use super::{items_from_records, Setup};

#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    /// At most this share of decisions at the limit's tier or above.
    pub limit: Limit,
    /// The rolling window, as `[routing.budget] window`.
    pub window: usize,
    /// Decisions in the stream: the held-out prompts shuffled, reshuffled and repeated if there
    /// are fewer.
    pub length: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    pub tier: String,
    pub limit: f32,
    pub window: usize,
    pub stream: usize,
    /// Distinct held-out prompts in the stream.
    pub prompts: usize,
    pub configured_quality_target: f32,
    pub final_quality_target: f32,
    /// Share of strong decisions after the first window, and the worst rolling-window miss.
    pub share_after_first_window: f64,
    pub max_rolling_deviation: f64,
    /// Share of strong decisions the configured target alone gives on the same stream.
    pub share_without_budget: f64,
    /// PGR of the live decisions after the first window, scored with the held-out outcomes.
    pub pgr: f64,
    /// PGR of the router's offline ranking of the same decisions at the same share.
    pub offline_pgr_at_share: f64,
    /// `pgr − offline_pgr_at_share`.
    pub pgr_difference: f64,
}

/// Runs the budget over the stream; `examples` is the index, `held_out` the records routed and
/// scored. The setup's first policy decides; its quality target is the configured one.
pub fn budget_stream(
    setup: &Setup,
    examples: Vec<Example>,
    held_out: &[OutcomeRecord],
    options: &StreamOptions,
    progress: &dyn Fn(usize, usize),
) -> Result<StreamReport> {
    let (items, kept, _) = items_from_records(held_out, &setup.map, setup.scale)?;
    if items.is_empty() {
        return Err(Error::Config(
            "no held-out record has outcomes for both tiers".into(),
        ));
    }
    let policy = &setup.policies[0];
    let tiers = &setup.tiers;
    let router = setup.router(examples, progress)?;
    let prompts: Vec<&str> = kept.iter().map(|&i| held_out[i].prompt.as_str()).collect();
    let vectors = router.embed_cached(&prompts, progress)?;
    let mut scored = Vec::with_capacity(items.len());
    let mut offline = Vec::with_capacity(items.len());
    for v in &vectors {
        let evidence = router
            .evidence(v, policy.k, &[policy.category_baseline])?
            .remove(0);
        let decided = vote(&evidence, tiers, policy);
        scored.push(Scored {
            quality: tiers.iter().map(|t| decided.quality.get(&t.name)).collect(),
            basis: decided.basis,
        });
        offline.push(route_item(&evidence, tiers, policy, setup.weak(), setup.strong()).score);
    }

    // The stream: shuffles of every prompt until it is long enough.
    let mut rng = SplitMix64(options.seed);
    let mut order = Vec::with_capacity(options.length);
    while order.len() < options.length.max(items.len()) {
        let mut pass: Vec<usize> = (0..items.len()).collect();
        rng.shuffle(&mut pass);
        order.extend(pass);
    }
    order.truncate(options.length.max(1));

    let mut budget = Budget::new(
        vec![options.limit],
        options.window,
        policy.quality_target,
        tiers,
    )
    .with_fallback(policy.fallback_tier);
    let mut chosen = Vec::with_capacity(order.len());
    let mut unbudgeted = 0usize;
    for &i in &order {
        let tier = tier_at(&scored[i], budget.target(), policy.fallback_tier);
        budget.observe(&scored[i].quality, scored[i].basis, tier);
        chosen.push(tier);
        let configured = tier_at(&scored[i], policy.quality_target, policy.fallback_tier);
        unbudgeted += usize::from(configured >= options.limit.tier);
    }
    let h = held(&chosen, options.limit, options.window);
    let (Some(share), Some(deviation)) = (h.share_after_first_window, h.max_rolling_deviation)
    else {
        return Err(Error::Config(format!(
            "a stream of {} decisions is not longer than the window ({})",
            order.len(),
            options.window
        )));
    };

    // Score the decisions after the first window, live and offline at the same share.
    let after = &order[options.window..];
    let stream_items: Vec<Item> = after.iter().map(|&i| items[i].clone()).collect();
    let n = stream_items.len() as f64;
    let live: f64 = after
        .iter()
        .zip(&chosen[options.window..])
        .map(|(&i, &t)| {
            if t >= setup.strong() {
                items[i].strong
            } else {
                items[i].weak
            }
        })
        .sum::<f64>()
        / n;
    let scores: Vec<f64> = after.iter().map(|&i| offline[i]).collect();
    let c = curve(&stream_items, &scores);
    let gap = c.strong - c.weak;
    if gap.abs() < 1e-12 {
        return Err(Error::Config(
            "the weak and strong tiers score the same on the stream: no gap to recover".into(),
        ));
    }
    let pgr = (live - c.weak) / gap;
    let offline_pgr = c.pgr_at_share(share).unwrap_or(f64::NAN);
    Ok(StreamReport {
        tier: tiers[options.limit.tier].name.clone(),
        limit: options.limit.share,
        window: options.window,
        stream: order.len(),
        prompts: items.len(),
        configured_quality_target: policy.quality_target,
        final_quality_target: budget.target(),
        share_after_first_window: share,
        max_rolling_deviation: deviation,
        share_without_budget: unbudgeted as f64 / order.len() as f64,
        pgr,
        offline_pgr_at_share: offline_pgr,
        pgr_difference: pgr - offline_pgr,
    })
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::corpus::{outcome_examples, Scale};

    use crate::eval::{test_record, test_setup};
    use crate::vote::Policy;

    #[test]
    fn the_budget_holds_its_share_and_buys_the_offline_quality() {
        // 90 topics; topic t's 8 seed examples have the small tier pass t % 9 of them, so a
        // held-out prompt's need for large is (t % 9) / 8. Held-out prompts of topic t pass on
        // small exactly when t % 9 ≥ 5 (the router's ranking is informative, not perfect).
        let mut seed = Vec::new();
        let mut held_out = Vec::new();
        for t in 0..90 {
            for i in 0..8 {
                seed.push(test_record(
                    &format!("s{t}-{i}"),
                    &format!("topic{t} example{i}"),
                    "b",
                    None,
                    i < t % 9,
                ));
            }
            held_out.push(test_record(
                &format!("h{t}"),
                &format!("topic{t} held"),
                "b",
                None,
                t % 9 >= 5,
            ));
        }
        let policy = Policy {
            k: 8,
            temperature: 1000.0,
            min_similarity: 0.0,
            quality_target: 0.95,
            ..Policy::default()
        };
        let setup = test_setup(policy);
        let (examples, _) = outcome_examples(&seed, &setup.map, Scale::Auto).unwrap();
        let options = StreamOptions {
            limit: Limit {
                tier: 1,
                share: 0.35,
            },
            window: 200,
            length: 3000,
            seed: 7,
        };
        let r = budget_stream(&setup, examples.clone(), &held_out, &options, &|_, _| {}).unwrap();
        assert_eq!((r.stream, r.prompts, r.tier.as_str()), (3000, 90, "large"));
        // Needs come in steps of 1/9 of the prompts, so the controller alternates between the
        // steps around the limit: on average it holds, window by window it misses by a step.
        assert!(r.share_without_budget > 0.8, "{r:?}");
        assert!((r.share_after_first_window - 0.35).abs() < 0.03, "{r:?}");
        assert!(r.max_rolling_deviation < 0.15, "{r:?}");
        assert!(r.final_quality_target < 0.95, "{r:?}");
        assert!(r.pgr_difference.abs() < 0.05, "{r:?}");

        let short = StreamOptions {
            length: 100,
            ..options
        };
        let err = budget_stream(&setup, examples, &held_out, &short, &|_, _| {}).unwrap_err();
        assert!(
            err.to_string().contains("not longer than the window"),
            "{err}"
        );
    }
}
