//! A cost budget: at most a given share of decisions go to a tier or above, held by moving the
//! quality target.
//!
//! The vote sends a query to tier T or above exactly when every cheaper tier falls short of
//! the bar, i.e. when the query's *need* for T,
//!
//! ```text
//! r_T = max_{t < T} Q(t) / max_t Q(t),
//! ```
//!
//! is below the quality target (see [`need`]). The need depends on the neighbours only, not on
//! the target, so the share of queries sent to T or above at target τ is the share of needs
//! below τ: holding a share s means putting τ at the s-quantile of recent needs
//! ([`target_for_share`]). That is RouteLLM's threshold calibration, for any tier ladder:
//! `calibrate` does it once over a sample, [`Budget`] does it live over a rolling window.
//!
//! A budget is a ceiling: the effective target is the configured one unless a limit needs it
//! lower, and with several limits the lowest wins. Decisions that do not depend on the target
//! (out of distribution: the fallback tier) count towards the share but cannot be moved.

use std::collections::VecDeque;

use crate::tier::Tiers;
use crate::vote::Basis;

/// A share limit: at most `share` of decisions go to `tier` (an index) or above.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub tier: usize,
    pub share: f32,
}

/// A query's need for tier `at` (see the module docs): the quality target must exceed it for
/// the vote to pick `at` or above. `f32::NEG_INFINITY` = it goes there whatever the target
/// (no cheaper tier has a quality, or it was out of distribution with a fallback at or above
/// `at`); `f32::INFINITY` = it never does.
pub fn need(quality: &[Option<f32>], basis: Basis, fallback: usize, at: usize) -> f32 {
    let forced = |tier: usize| {
        if tier >= at {
            f32::NEG_INFINITY
        } else {
            f32::INFINITY
        }
    };
    if basis == Basis::OutOfDistribution {
        return forced(fallback);
    }
    let Some(best) = quality.iter().flatten().copied().reduce(f32::max) else {
        return forced(fallback);
    };
    if best <= 0.0 {
        // Every tier's quality is 0: the cheapest known tier reaches any bar.
        let cheapest = quality.iter().position(Option::is_some).unwrap_or(fallback);
        return forced(cheapest);
    }
    quality[..at.min(quality.len())]
        .iter()
        .flatten()
        .copied()
        .reduce(f32::max)
        .map_or(f32::NEG_INFINITY, |below| below / best)
}

/// The highest quality target that sends at most `share` of the queries with these needs to
/// the tier (`None`: no target in [0, 1] can, e.g. too many are forced there). A target of
/// 1.0 or more means the limit does not bind.
pub fn target_for_share(needs: &[f32], share: f32) -> Option<f32> {
    if needs.is_empty() {
        return Some(f32::INFINITY);
    }
    let mut sorted = needs.to_vec();
    let allowed = (f64::from(share.clamp(0.0, 1.0)) * sorted.len() as f64).floor() as usize;
    if allowed >= sorted.len() {
        return Some(f32::INFINITY);
    }
    // With the target at the (allowed+1)-th smallest need, at most `allowed` needs lie below.
    let (_, &mut t, _) = sorted.select_nth_unstable_by(allowed, f32::total_cmp);
    if t == f32::NEG_INFINITY {
        None
    } else {
        Some(t.max(0.0))
    }
}

/// One routed query as calibration sees it: per-tier quality (tier order) and basis.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub quality: Vec<Option<f32>>,
    pub basis: Basis,
}

/// The tier the vote picks for a scored query at `target` (`fallback` when out of distribution
/// or when no tier has a quality).
pub fn tier_at(scored: &Scored, target: f32, fallback: usize) -> usize {
    if scored.basis == Basis::OutOfDistribution {
        return fallback;
    }
    crate::vote::cheapest_sufficient(&scored.quality, target).unwrap_or(fallback)
}

/// The result of [`calibrate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// The highest quality target (≤ `configured`) that meets every limit; `None` if some
    /// limit cannot be met by any target (then `binding` names it).
    pub quality_target: Option<f32>,
    /// The limit that sets the target (or that cannot be met).
    pub binding: Option<Limit>,
    /// Share of the queries per tier at the calibrated target (at 0 if none meets the limits).
    pub shares: Vec<f32>,
    /// Share per tier at the configured target, for comparison.
    pub shares_configured: Vec<f32>,
}

/// RouteLLM's threshold calibration for any tier ladder: the quality target that sends at
/// most each limit's share of `sample` to its tier or above.
pub fn calibrate(
    sample: &[Scored],
    limits: &[Limit],
    configured: f32,
    fallback: usize,
    tiers: usize,
) -> Calibration {
    let mut target = configured;
    let mut binding = None;
    let mut feasible = true;
    for limit in limits {
        let needs: Vec<f32> = sample
            .iter()
            .map(|s| need(&s.quality, s.basis, fallback, limit.tier))
            .collect();
        match target_for_share(&needs, limit.share) {
            Some(t) if t < target => {
                target = t;
                binding = Some(*limit);
            }
            Some(_) => {}
            None => {
                feasible = false;
                binding = Some(*limit);
                target = 0.0;
                break;
            }
        }
    }
    let shares = |t: f32| {
        let mut counts = vec![0usize; tiers];
        for s in sample {
            counts[tier_at(s, t, fallback).min(tiers - 1)] += 1;
        }
        let n = sample.len().max(1) as f32;
        counts
            .into_iter()
            .map(|c| c as f32 / n)
            .collect::<Vec<f32>>()
    };
    Calibration {
        quality_target: feasible.then_some(target.clamp(0.0, 1.0)),
        binding,
        shares: shares(target),
        shares_configured: shares(configured),
    }
}

/// The tiers a live [`Budget`] would choose for a stream of scored queries, in order: each
/// query decided at the target in effect, then observed. What `serve` does, replayed offline
/// (e.g. to measure how closely the share is held on a shuffled held-out stream).
pub fn simulate(stream: &[Scored], mut budget: Budget) -> Vec<usize> {
    stream
        .iter()
        .map(|s| {
            let tier = tier_at(s, budget.target(), budget.fallback);
            budget.observe(&s.quality, s.basis, tier);
            tier
        })
        .collect()
}

/// The live controller: a rolling window of needs per limit and of the tiers chosen.
#[derive(Debug, Clone)]
pub struct Budget {
    limits: Vec<Limit>,
    window: usize,
    /// The configured quality target: the ceiling.
    configured: f32,
    fallback: usize,
    /// Per limit, the needs of the last `window` decisions.
    needs: Vec<VecDeque<f32>>,
    /// The tiers of the last `window` decisions.
    chosen: VecDeque<usize>,
    tiers: usize,
    effective: f32,
}

/// Decisions observed before the window's quantile is trusted.
const MIN_OBSERVED: usize = 50;

/// How hard the controller leans against the window's achieved share: aiming at
/// `limit − GAIN · (achieved − limit)` makes a miss decay by e^−GAIN per window, where the
/// quantile alone would leave the window's sampling noise (±1.4 points at 1,000 decisions
/// and a 30% share, one standard deviation) and any drift in place.
const GAIN: f32 = 4.0;

impl Budget {
    /// A controller over `window` decisions; `configured` is the quality target it never raises.
    pub fn new(limits: Vec<Limit>, window: usize, configured: f32, tiers: &Tiers) -> Self {
        let fallback = 0;
        Budget {
            needs: vec![VecDeque::with_capacity(window); limits.len()],
            limits,
            window: window.max(1),
            configured,
            fallback,
            chosen: VecDeque::with_capacity(window),
            tiers: tiers.len(),
            effective: configured,
        }
    }

    /// The tier out-of-distribution queries go to (they count, but cannot be moved).
    pub fn with_fallback(mut self, fallback: usize) -> Self {
        self.fallback = fallback;
        self
    }

    pub fn fallback(&self) -> usize {
        self.fallback
    }

    pub fn limits(&self) -> &[Limit] {
        &self.limits
    }

    pub fn window(&self) -> usize {
        self.window
    }

    pub fn configured(&self) -> f32 {
        self.configured
    }

    /// The quality target for the next decision.
    pub fn target(&self) -> f32 {
        self.effective
    }

    /// Records a decision (its per-tier quality, in tier order, its basis and chosen tier) and
    /// updates the target for the next ones.
    pub fn observe(&mut self, quality: &[Option<f32>], basis: Basis, tier: usize) {
        for (limit, needs) in self.limits.iter().zip(&mut self.needs) {
            if needs.len() == self.window {
                needs.pop_front();
            }
            needs.push_back(need(quality, basis, self.fallback, limit.tier));
        }
        if self.chosen.len() == self.window {
            self.chosen.pop_front();
        }
        self.chosen.push_back(tier);
        if self.chosen.len() < MIN_OBSERVED.min(self.window) {
            return;
        }
        let mut target = self.configured;
        for (limit, needs) in self.limits.iter().zip(&self.needs) {
            let (a, b) = needs.as_slices();
            let all: Vec<f32> = a.iter().chain(b).copied().collect();
            // A limit no target can meet holds the target at 0 (the cheapest choice everywhere
            // it has any effect); the achieved share in /metrics shows the miss.
            let t = target_for_share(&all, self.aim(*limit)).unwrap_or(0.0);
            target = target.min(t);
        }
        self.effective = target.clamp(0.0, 1.0);
    }

    /// The share the next decisions aim at for `limit`: the limit, corrected against the
    /// window's achieved share, by at most half the limit either way (so a burst before the
    /// window filled, e.g. after a restart, is paid back gently).
    fn aim(&self, limit: Limit) -> f32 {
        let achieved = self.share_at_or_above(limit.tier);
        let correction =
            (GAIN * (achieved - limit.share)).clamp(-0.5 * limit.share, 0.5 * limit.share);
        (limit.share - correction).clamp(0.0, 1.0)
    }

    /// The share of the window's decisions that went to each tier (in tier order).
    pub fn shares(&self) -> Vec<f32> {
        let mut counts = vec![0usize; self.tiers];
        for &t in &self.chosen {
            if let Some(c) = counts.get_mut(t) {
                *c += 1;
            }
        }
        let n = self.chosen.len().max(1) as f32;
        counts.into_iter().map(|c| c as f32 / n).collect()
    }

    /// The share of the window's decisions at `tier` or above.
    pub fn share_at_or_above(&self, tier: usize) -> f32 {
        self.shares().iter().skip(tier).sum()
    }

    /// A reason suffix for a decision the budget changed: `used` is the quality target it was
    /// decided with, `without` the tier the configured target would have chosen.
    pub fn reason(&self, tiers: &Tiers, used: f32, without: usize) -> String {
        let limits = self
            .limits
            .iter()
            .map(|l| {
                format!(
                    "`{}` and above ≤ {:.0}%",
                    tiers[l.tier].name,
                    l.share * 100.0
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "; budget ({limits} of the last {} decisions) lowered quality_target from {:.2} to \
             {:.2}; without it: `{}`",
            self.window, self.configured, used, tiers[without].name
        )
    }
}

/// How a limit held over a stream of decisions (chosen tier indices, in order).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Held {
    /// Share of the decisions after the first window at the limit's tier or above.
    pub share_after_first_window: Option<f64>,
    /// The largest distance of the rolling window's share from the limit, after the first
    /// window.
    pub max_rolling_deviation: Option<f64>,
}

/// Measures how `limit` held over `chosen` with a rolling window of `window` decisions. Both
/// figures are `None` until the stream is longer than one window.
pub fn held(chosen: &[usize], limit: Limit, window: usize) -> Held {
    let window = window.max(1);
    let above: Vec<f64> = chosen
        .iter()
        .map(|&t| f64::from(u8::from(t >= limit.tier)))
        .collect();
    if above.len() <= window {
        return Held {
            share_after_first_window: None,
            max_rolling_deviation: None,
        };
    }
    let after = &above[window..];
    let mut sum: f64 = above[..window].iter().sum();
    let mut worst: f64 = 0.0;
    for i in window..above.len() {
        sum += above[i] - above[i - window];
        worst = worst.max((sum / window as f64 - f64::from(limit.share)).abs());
    }
    Held {
        share_after_first_window: Some(after.iter().sum::<f64>() / after.len() as f64),
        max_rolling_deviation: Some(worst),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_measures_after_the_first_window() {
        let limit = Limit {
            tier: 1,
            share: 0.5,
        };
        // Window 4: the first window is all tier 1, then alternating.
        let chosen = [1, 1, 1, 1, 0, 1, 0, 1, 0, 1];
        let h = held(&chosen, limit, 4);
        assert_eq!(h.share_after_first_window, Some(0.5));
        // Windows ending at 5..=10: 3/4, 3/4, 2/4, 2/4, 2/4, 2/4 -> worst 0.25 off.
        assert!((h.max_rolling_deviation.unwrap() - 0.25).abs() < 1e-12);
        assert_eq!(held(&chosen[..4], limit, 4).share_after_first_window, None);
        // Tiers above the limit's count too.
        let h = held(
            &[2, 2, 0, 2],
            Limit {
                tier: 1,
                share: 1.0,
            },
            1,
        );
        assert_eq!(h.share_after_first_window, Some(2.0 / 3.0));
    }
    use crate::tier::test_tiers;

    #[test]
    fn need_is_the_target_that_flips_the_decision() {
        let q = [Some(0.6), Some(0.8), Some(1.0)];
        assert!((need(&q, Basis::Neighbors, 2, 2) - 0.8).abs() < 1e-6);
        assert!((need(&q, Basis::Neighbors, 2, 1) - 0.6).abs() < 1e-6);
        // Nothing cheaper is known: goes to `at` or above whatever the target.
        assert_eq!(
            need(&[None, Some(0.5), Some(1.0)], Basis::Neighbors, 2, 1),
            f32::NEG_INFINITY
        );
        // Out of distribution: forced to the fallback.
        assert_eq!(need(&q, Basis::OutOfDistribution, 2, 2), f32::NEG_INFINITY);
        assert_eq!(need(&q, Basis::OutOfDistribution, 0, 2), f32::INFINITY);
        // And it agrees with the vote: target above the need picks `at` or above.
        let tiers = test_tiers(&["small", "medium", "large"]);
        let evidence = [crate::vote::Evidence {
            similarity: 0.9,
            quality: q.to_vec(),
        }];
        for (target, expect) in [(0.59, 0), (0.61, 1), (0.79, 1), (0.81, 2)] {
            let policy = crate::vote::Policy {
                quality_target: target,
                ..Default::default()
            };
            assert_eq!(
                crate::vote::vote(&evidence, &tiers, &policy).tier,
                expect,
                "{target}"
            );
        }
    }

    #[test]
    fn target_for_share_takes_the_quantile() {
        let needs: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
        let t = target_for_share(&needs, 0.3).unwrap();
        assert!((t - 0.30).abs() < 1e-6);
        assert_eq!(needs.iter().filter(|&&n| n < t).count(), 30);
        assert_eq!(target_for_share(&needs, 1.0), Some(f32::INFINITY));
        assert_eq!(target_for_share(&needs, 0.0), Some(0.0));
        // Half forced upwards: a 30% limit cannot be met.
        let forced: Vec<f32> = (0..100)
            .map(|i| if i < 50 { f32::NEG_INFINITY } else { 0.5 })
            .collect();
        assert_eq!(target_for_share(&forced, 0.3), None);
    }

    /// A fixed sequence in, the achieved share stays within bounds: needs drawn from a
    /// deterministic generator whose distribution shifts halfway, so a fixed target would
    /// drift far off.
    #[test]
    fn holds_the_share_on_a_shifting_stream() {
        let tiers = test_tiers(&["small", "large"]);
        let mut budget = Budget::new(
            vec![Limit {
                tier: 1,
                share: 0.3,
            }],
            1000,
            0.95,
            &tiers,
        )
        .with_fallback(1);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f32 / (1u64 << 53) as f32
        };
        let mut large = VecDeque::new();
        let mut worst: f32 = 0.0;
        for i in 0..7000 {
            // Small's relative quality: easy traffic first, then much harder traffic.
            let small = if i < 3000 {
                0.5 + 0.5 * uniform()
            } else {
                0.8 * uniform()
            };
            let quality = [Some(small), Some(1.0)];
            let tier = usize::from(small < budget.target() - 1e-6);
            budget.observe(&quality, Basis::Neighbors, tier);
            large.push_back(tier);
            if large.len() > 1000 {
                large.pop_front();
            }
            // After the first window the share holds, except while the shift passes through the
            // windows (the needs window, then the measured one): the controller lags by one.
            if i >= 1000 && !(3000..5000).contains(&i) {
                let share = large.iter().sum::<usize>() as f32 / large.len() as f32;
                worst = worst.max((share - 0.3).abs());
            }
        }
        assert!(worst <= 0.03, "share strayed {worst:.3} from 0.30");
        assert!((budget.share_at_or_above(1) - 0.3).abs() <= 0.03);
    }

    #[test]
    fn calibrate_meets_the_share_on_a_sample() {
        // Small's relative quality 0.00, 0.01, … 0.99 against large's 1.
        let sample: Vec<Scored> = (0..100)
            .map(|i| Scored {
                quality: vec![Some(i as f32 / 100.0), Some(1.0)],
                basis: Basis::Neighbors,
            })
            .collect();
        let limit = Limit {
            tier: 1,
            share: 0.3,
        };
        let c = calibrate(&sample, &[limit], 0.9, 1, 2);
        assert!((c.quality_target.unwrap() - 0.3).abs() < 1e-6);
        assert!((c.shares[1] - 0.3).abs() < 1e-6, "{:?}", c.shares);
        assert!((c.shares_configured[1] - 0.9).abs() < 1e-6);
        assert_eq!(c.binding, Some(limit));
        // 40% out of distribution with a large fallback: 30% cannot be met.
        let mut ood = sample.clone();
        for s in ood.iter_mut().take(40) {
            s.basis = Basis::OutOfDistribution;
        }
        let c = calibrate(&ood, &[limit], 0.9, 1, 2);
        assert_eq!(c.quality_target, None);
        assert!((c.shares[1] - 0.4).abs() < 1e-6, "{:?}", c.shares);
    }

    #[test]
    fn never_raises_the_configured_target() {
        let tiers = test_tiers(&["small", "large"]);
        let mut budget = Budget::new(
            vec![Limit {
                tier: 1,
                share: 0.9,
            }],
            100,
            0.5,
            &tiers,
        );
        for i in 0..200 {
            let small = (i % 10) as f32 / 10.0;
            budget.observe(&[Some(small), Some(1.0)], Basis::Neighbors, 0);
        }
        assert_eq!(budget.target(), 0.5, "a loose limit leaves the knob alone");
    }
}
