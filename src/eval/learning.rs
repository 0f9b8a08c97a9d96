//! The learning curve: held-out APGR against the number of in-domain outcome examples in the
//! index, i.e. how many of their own labels a team needs before routing pays.
//!
//! For each domain (a benchmark, or seed benchmarks paired with held-out ones), the index holds
//! every seed record of the *other* benchmarks plus `n` records sampled from the domain's seed
//! records, and routes the domain's held-out records. Each size is drawn with several seeds
//! (samples nest: seed s's first 100 are in its first 300), and the reported APGR is the mean
//! over seeds with a 95% bootstrap interval over the held-out prompts. The held-out records are
//! only routed and scored, never indexed.

use std::collections::BTreeSet;
use std::str::FromStr;

use serde::Serialize;

use crate::corpus::{outcome_examples, OutcomeRecord};
use crate::error::{Error, Result};
use crate::smooth::Smooth;

use super::metrics::{apgr_mean_interval, curve, SplitMix64};
use super::{benchmark_of, items_from_records, Setup};

/// How many in-domain examples to index: a count or all the seed has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Count(usize),
    All,
}

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Size, String> {
        match s.trim() {
            "all" => Ok(Size::All),
            n => n
                .parse()
                .map(Size::Count)
                .map_err(|_| format!("expected a number of examples or `all`, got `{s}`")),
        }
    }
}

/// Seed benchmarks whose records are sampled, and the held-out benchmarks they are scored on.
/// Names match a record's benchmark exactly or as a prefix (`arena-bench-v1` matches
/// `arena-bench-v1 (Chatbot Arena prompts)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub name: String,
    pub seed: Vec<String>,
    pub held_out: Vec<String>,
}

impl FromStr for Domain {
    type Err = String;

    /// `BENCH` (the same benchmark on both sides) or `NAME=SEED[+SEED…]:HELD[+HELD…]`.
    fn from_str(s: &str) -> std::result::Result<Domain, String> {
        let list = |x: &str| -> Vec<String> {
            x.split('+')
                .map(str::trim)
                .filter(|b| !b.is_empty())
                .map(String::from)
                .collect()
        };
        let bad =
            || format!("expected BENCHMARK or NAME=SEED[+SEED]:HELD_OUT[+HELD_OUT], got `{s}`");
        match s.split_once('=') {
            None if !s.trim().is_empty() && !s.contains(':') => Ok(Domain {
                name: s.trim().into(),
                seed: vec![s.trim().into()],
                held_out: vec![s.trim().into()],
            }),
            None => Err(bad()),
            Some((name, sides)) => {
                let (seed, held) = sides.split_once(':').ok_or_else(bad)?;
                let (seed, held_out) = (list(seed), list(held));
                if name.trim().is_empty() || seed.is_empty() || held_out.is_empty() {
                    return Err(bad());
                }
                Ok(Domain {
                    name: name.trim().into(),
                    seed,
                    held_out,
                })
            }
        }
    }
}

fn matches(names: &[String], benchmark: &str) -> bool {
    names
        .iter()
        .any(|n| benchmark == n || benchmark.starts_with(n.as_str()))
}

/// The domains when none are named: every held-out benchmark that the seed also has.
pub fn default_domains(seed: &[OutcomeRecord], held_out: &[OutcomeRecord]) -> Vec<Domain> {
    let seeded: BTreeSet<String> = seed.iter().map(benchmark_of).collect();
    let held: BTreeSet<String> = held_out.iter().map(benchmark_of).collect();
    seeded
        .intersection(&held)
        .map(|b| Domain {
            name: b.clone(),
            seed: vec![b.clone()],
            held_out: vec![b.clone()],
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct LearningOptions {
    pub sizes: Vec<Size>,
    /// Samples drawn per size (a size that takes every in-domain record is drawn once).
    pub seeds: usize,
    /// Bootstrap resamples for the intervals (0: none).
    pub resamples: usize,
    /// How the index side's outcomes are smoothed (fitted once on all seed records).
    pub smooth: Smooth,
}

/// One size on a domain's curve.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// In-domain examples in the index.
    pub labels: usize,
    /// Whether that is every in-domain seed record.
    pub all: bool,
    /// Mean held-out APGR over the samples.
    pub apgr: f64,
    pub apgr_ci95: Option<(f64, f64)>,
    /// Each sample's APGR.
    pub apgr_per_seed: Vec<f64>,
}

/// A domain's learning curve.
#[derive(Debug, Clone, Serialize)]
pub struct DomainCurve {
    pub domain: String,
    pub seed_benchmarks: Vec<String>,
    pub held_out_benchmarks: Vec<String>,
    /// In-domain seed records available.
    pub available: usize,
    /// Seed records of other benchmarks, always in the index.
    pub other_examples: usize,
    /// Held-out prompts scored.
    pub held_out: usize,
    pub points: Vec<Point>,
}

impl DomainCurve {
    /// The fewest in-domain labels on the curve whose mean APGR reaches `apgr` (`None`: no
    /// size reached it).
    pub fn labels_to_reach(&self, apgr: f64) -> Option<usize> {
        self.points
            .iter()
            .filter(|p| p.apgr >= apgr)
            .map(|p| p.labels)
            .min()
    }
}

/// Runs the curve for each domain with the setup's first policy. `seed` records feed the index;
/// `held_out` records are routed and scored.
pub fn learning_curve(
    setup: &Setup,
    seed: &[OutcomeRecord],
    held_out: &[OutcomeRecord],
    domains: &[Domain],
    options: &LearningOptions,
    progress: &dyn Fn(usize, usize),
) -> Result<Vec<DomainCurve>> {
    if domains.is_empty() {
        return Err(Error::Config(
            "no domain for the learning curve: no held-out benchmark is in the seed records \
             (name one with --domain NAME=SEED:HELD_OUT)"
                .into(),
        ));
    }
    if options.sizes.is_empty() {
        return Err(Error::Config(
            "--learning-curve needs at least one size".into(),
        ));
    }
    let smoothed = options.smooth.apply(seed, setup.scale);
    let (items, kept, _) = items_from_records(held_out, &setup.map, setup.scale)?;
    let mut curves = Vec::new();
    for domain in domains {
        let (inside, others): (Vec<&OutcomeRecord>, Vec<&OutcomeRecord>) = smoothed
            .iter()
            .partition(|r| matches(&domain.seed, &benchmark_of(r)));
        let scored: Vec<usize> = (0..items.len())
            .filter(|&j| matches(&domain.held_out, &items[j].benchmark))
            .collect();
        if inside.is_empty() || scored.is_empty() {
            return Err(Error::Config(format!(
                "domain `{}`: {} seed records match {:?} and {} held-out records with both \
                 outcomes match {:?}; both must be non-empty",
                domain.name,
                inside.len(),
                domain.seed,
                scored.len(),
                domain.held_out
            )));
        }
        let domain_items: Vec<_> = scored.iter().map(|&j| items[j].clone()).collect();
        let prompts: Vec<&str> = scored
            .iter()
            .map(|&j| held_out[kept[j]].prompt.as_str())
            .collect();
        let mut labels: Vec<usize> = options
            .sizes
            .iter()
            .map(|s| match *s {
                Size::Count(n) => n.min(inside.len()),
                Size::All => inside.len(),
            })
            .collect();
        labels.sort_unstable();
        labels.dedup();
        let mut points = Vec::new();
        for &n in &labels {
            let all = n == inside.len();
            let draws = if all || n == 0 {
                1
            } else {
                options.seeds.max(1)
            };
            let mut rankings: Vec<Vec<f64>> = Vec::new();
            for s in 0..draws {
                let mut order: Vec<usize> = (0..inside.len()).collect();
                SplitMix64(0x1ea2_0000 + s as u64).shuffle(&mut order);
                let index: Vec<OutcomeRecord> = others
                    .iter()
                    .copied()
                    .chain(order[..n].iter().map(|&i| inside[i]))
                    .cloned()
                    .collect();
                let (examples, _) = outcome_examples(&index, &setup.map, setup.scale)?;
                let router = setup.router(examples, progress)?;
                let routed = setup.route(&router, &prompts, progress)?;
                rankings.push(routed[0].iter().map(|r| r.score).collect());
            }
            let apgr_per_seed: Vec<f64> = rankings
                .iter()
                .map(|r| curve(&domain_items, r).apgr().unwrap_or(f64::NAN))
                .collect();
            let refs: Vec<&[f64]> = rankings.iter().map(Vec::as_slice).collect();
            points.push(Point {
                labels: n,
                all,
                apgr: apgr_per_seed.iter().sum::<f64>() / apgr_per_seed.len() as f64,
                apgr_ci95: apgr_mean_interval(&domain_items, &refs, options.resamples),
                apgr_per_seed,
            });
        }
        curves.push(DomainCurve {
            domain: domain.name.clone(),
            seed_benchmarks: domain.seed.clone(),
            held_out_benchmarks: domain.held_out.clone(),
            available: inside.len(),
            other_examples: others.len(),
            held_out: domain_items.len(),
            points,
        });
    }
    Ok(curves)
}

#[cfg(test)]
mod tests {

    use super::*;

    use crate::eval::{test_record, test_setup};
    use crate::vote::Policy;

    #[test]
    fn sizes_and_domains_parse() {
        assert_eq!("300".parse::<Size>(), Ok(Size::Count(300)));
        assert_eq!("all".parse::<Size>(), Ok(Size::All));
        assert!("lots".parse::<Size>().is_err());
        let d: Domain = "mmlu".parse().unwrap();
        assert_eq!(
            (d.seed, d.held_out),
            (vec!["mmlu".into()], vec!["mmlu".into()])
        );
        let d: Domain = "chat=arena-bench-v1:alpaca_eval+mt_bench".parse().unwrap();
        assert_eq!(d.name, "chat");
        assert_eq!(d.seed, ["arena-bench-v1"]);
        assert_eq!(d.held_out, ["alpaca_eval", "mt_bench"]);
        assert!("chat=arena".parse::<Domain>().is_err());
        assert!("=a:b".parse::<Domain>().is_err());
        assert!(matches(
            &["arena-bench-v1".into()],
            "arena-bench-v1 (Chatbot Arena prompts)"
        ));
    }

    #[test]
    fn in_domain_labels_lift_the_curve() {
        // Domain "d": prompts about apples are hard for small, about pears easy. The other
        // benchmark "o" says the opposite for words that also appear in "d" prompts, so without
        // in-domain labels the router ranks "d" backwards; with them it ranks it right.
        let mut seed = Vec::new();
        let mut held = Vec::new();
        for i in 0..40 {
            let hard = i % 2 == 0;
            let fruit = if hard { "apple" } else { "pear" };
            seed.push(test_record(
                &format!("d{i}"),
                &format!("{fruit} question {i}"),
                "d",
                None,
                !hard,
            ));
            seed.push(test_record(
                &format!("o{i}"),
                &format!("{fruit} trivia {i}"),
                "o",
                None,
                hard,
            ));
            if i < 20 {
                held.push(test_record(
                    &format!("h{i}"),
                    &format!("{fruit} question held {i}"),
                    "d",
                    None,
                    !hard,
                ));
            }
        }
        let policy = Policy {
            k: 8,
            temperature: 1000.0,
            min_similarity: 0.0,
            ..Policy::default()
        };
        let setup = test_setup(policy);
        let options = LearningOptions {
            sizes: vec![
                Size::Count(0),
                Size::Count(10),
                Size::All,
                Size::Count(1000),
            ],
            seeds: 3,
            resamples: 50,
            smooth: Smooth::None,
        };
        let domains = default_domains(&seed, &held);
        assert_eq!(domains.len(), 1, "only `d` is on both sides");
        let curves = learning_curve(&setup, &seed, &held, &domains, &options, &|_, _| {}).unwrap();
        let c = &curves[0];
        assert_eq!((c.available, c.other_examples, c.held_out), (40, 40, 20));
        let labels: Vec<usize> = c.points.iter().map(|p| p.labels).collect();
        assert_eq!(labels, [0, 10, 40], "sizes past `all` collapse into it");
        assert_eq!(c.points[1].apgr_per_seed.len(), 3);
        assert_eq!(c.points[0].apgr_per_seed.len(), 1);
        assert!(c.points[2].all && !c.points[1].all);
        assert!(c.points[0].apgr < 0.5, "{:?}", c.points[0]);
        assert!(c.points[2].apgr > c.points[0].apgr + 0.2, "{:?}", c.points);
        let (lo, hi) = c.points[2].apgr_ci95.unwrap();
        assert!(lo <= c.points[2].apgr && c.points[2].apgr <= hi);
        let bar = c.points[2].apgr;
        let first_above = if c.points[1].apgr >= bar { 10 } else { 40 };
        assert_eq!(c.labels_to_reach(bar), Some(first_above));
        assert_eq!(c.labels_to_reach(1.5), None);

        let none = learning_curve(&setup, &seed, &held, &[], &options, &|_, _| {}).unwrap_err();
        assert!(none.to_string().contains("--domain"), "{none}");
        let missing: Domain = "x=zzz:d".parse().unwrap();
        let err =
            learning_curve(&setup, &seed, &held, &[missing], &options, &|_, _| {}).unwrap_err();
        assert!(err.to_string().contains("0 seed records"), "{err}");
    }
}
