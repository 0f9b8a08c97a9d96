//! Cross-validation on outcome records, for tuning on a seed split: N folds by prompt-text
//! hash (in-domain), or one fold per benchmark or subject (a stand-in for out-of-domain
//! traffic).

use std::collections::BTreeMap;

use crate::corpus::{outcome_examples, OutcomeRecord};
use crate::error::{Error, Result};
use crate::smooth::Smooth;

use super::metrics::{Item, Routed};
use super::{items_from_records, Setup};

/// The fold of a prompt: by a hash of its normalised text, so duplicate prompts share a fold
/// and cannot leak answers across it.
pub fn fold_of(prompt: &str, folds: usize) -> usize {
    let normalised = prompt
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    let digest = <sha2::Sha256 as sha2::Digest>::digest(normalised.as_bytes());
    (u64::from_le_bytes(digest[..8].try_into().unwrap()) % folds as u64) as usize
}

/// How cross-validation splits the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folds {
    /// N folds by prompt-text hash ([`fold_of`]): in-domain, every benchmark in every fold.
    Hash(usize),
    /// One fold per group ([`group_of`]): each benchmark (each MMLU subject) is routed with an
    /// index that has none of it, a stand-in for out-of-domain traffic.
    Group,
}

impl std::str::FromStr for Folds {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Folds, String> {
        match s {
            "group" => Ok(Folds::Group),
            n => match n.parse::<usize>() {
                Ok(n) if n >= 2 => Ok(Folds::Hash(n)),
                _ => Err(format!(
                    "expected a number of folds (at least 2) or `group`, got `{s}`"
                )),
            },
        }
    }
}

impl std::fmt::Display for Folds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Folds::Hash(n) => write!(f, "{n}"),
            Folds::Group => f.write_str("group"),
        }
    }
}

/// A record's group for [`Folds::Group`]: its benchmark, and its subject where it has one.
pub fn group_of(record: &OutcomeRecord) -> String {
    let benchmark = record.source_benchmark.as_deref().unwrap_or("unknown");
    match &record.subject {
        Some(subject) => format!("{benchmark}/{subject}"),
        None => benchmark.to_string(),
    }
}

/// Cross-validation on outcome records: each fold is routed with an index built from the
/// other folds. Returns routed items in record order, per policy.
pub fn cross_validate(
    setup: &Setup,
    records: &[OutcomeRecord],
    smooth: Smooth,
    folds: Folds,
    progress: &dyn Fn(usize, usize),
) -> Result<(Vec<Item>, Vec<Vec<Routed>>)> {
    let (items, kept, _) = items_from_records(records, &setup.map, setup.scale)?;
    // Every record's fold, kept or not: records outside the item set (e.g. lacking a model)
    // can still teach the index of the other folds.
    let (record_fold, n_folds): (Vec<usize>, usize) = match folds {
        Folds::Hash(n) if n < 2 => return Err(Error::Config("--cv needs at least 2 folds".into())),
        Folds::Hash(n) => (records.iter().map(|r| fold_of(&r.prompt, n)).collect(), n),
        Folds::Group => {
            let mut ids = BTreeMap::new();
            let fold: Vec<usize> = records
                .iter()
                .map(|r| {
                    let next = ids.len();
                    *ids.entry(group_of(r)).or_insert(next)
                })
                .collect();
            if ids.len() < 2 {
                return Err(Error::Config(
                    "--cv group needs records from at least 2 benchmarks or subjects".into(),
                ));
            }
            (fold, ids.len())
        }
    };
    let fold: Vec<usize> = kept.iter().map(|&i| record_fold[i]).collect();
    let mut routed: Vec<Vec<Option<Routed>>> = setup
        .policies
        .iter()
        .map(|_| (0..items.len()).map(|_| None).collect())
        .collect();
    for f in 0..n_folds {
        let test: Vec<usize> = (0..items.len()).filter(|&j| fold[j] == f).collect();
        if test.is_empty() {
            continue;
        }
        let train: Vec<OutcomeRecord> = records
            .iter()
            .zip(&record_fold)
            .filter(|(_, &rf)| rf != f)
            .map(|(r, _)| r.clone())
            .collect();
        // Only the index side is smoothed: the routed records are scored on their own outcomes.
        let (examples, _) =
            outcome_examples(&smooth.apply(&train, setup.scale), &setup.map, setup.scale)?;
        let router = setup.router(examples, progress)?;
        let prompts: Vec<&str> = test
            .iter()
            .map(|&j| records[kept[j]].prompt.as_str())
            .collect();
        let result = setup.route(&router, &prompts, progress)?;
        for (p, routed_p) in result.into_iter().enumerate() {
            for (&j, r) in test.iter().zip(routed_p) {
                routed[p][j] = Some(r);
            }
        }
    }
    let routed = routed
        .into_iter()
        .map(|v| {
            v.into_iter()
                .map(|r| r.expect("every item is in one fold"))
                .collect()
        })
        .collect();
    Ok((items, routed))
}

#[cfg(test)]
mod tests {

    use super::*;

    use crate::eval::metrics::tests::close;
    use crate::eval::{test_record as record, test_setup};
    use crate::vote::Policy;

    #[test]
    fn folds_parse_and_groups_name_benchmark_and_subject() {
        assert_eq!("5".parse::<Folds>(), Ok(Folds::Hash(5)));
        assert_eq!("group".parse::<Folds>(), Ok(Folds::Group));
        assert!("1".parse::<Folds>().is_err());
        assert!("benchmarks".parse::<Folds>().is_err());
        assert_eq!(Folds::Hash(5).to_string(), "5");
        assert_eq!(
            group_of(&record("x", "p", "mmlu", Some("law"), true)),
            "mmlu/law"
        );
        assert_eq!(group_of(&record("x", "p", "arc", None, true)), "arc");
    }

    #[test]
    fn leave_one_group_out_routes_each_group_without_its_own_examples() {
        // Benchmark "a": the small model always fails; "b": it always succeeds. In-domain
        // (hash folds) an "a" prompt has "a" neighbours and looks hard; with one fold per
        // group it only sees "b" examples, which say small is enough (score 0), and the "b"
        // prompts only see "a" examples (score 1).
        let mut records = Vec::new();
        for i in 0..6 {
            records.push(record(
                &format!("a{i}"),
                &format!("solve the puzzle alpha {i}"),
                "a",
                None,
                false,
            ));
            records.push(record(
                &format!("b{i}"),
                &format!("solve the puzzle beta {i}"),
                "b",
                None,
                true,
            ));
        }
        let policy = Policy {
            k: 4,
            temperature: 1000.0,
            ..Policy::default()
        };
        let setup = test_setup(policy);
        let run = |folds| {
            let (items, routed) =
                cross_validate(&setup, &records, Smooth::None, folds, &|_, _| {}).unwrap();
            assert_eq!(items.len(), 12);
            items
                .iter()
                .zip(&routed[0])
                .map(|(it, r)| (it.benchmark.clone(), r.score))
                .collect::<Vec<_>>()
        };
        for (benchmark, score) in run(Folds::Group) {
            let expected = if benchmark == "a" { 0.0 } else { 1.0 };
            assert!(close(score, expected), "{benchmark}: {score}");
        }
        let in_domain = run(Folds::Hash(2));
        assert!(
            in_domain.iter().any(|(b, score)| b == "a" && *score > 0.0),
            "{in_domain:?}"
        );
        let one_group: Vec<OutcomeRecord> = records
            .iter()
            .filter(|r| r.id.starts_with('a'))
            .cloned()
            .collect();
        let err =
            cross_validate(&setup, &one_group, Smooth::None, Folds::Group, &|_, _| {}).unwrap_err();
        assert!(err.to_string().contains("at least 2"), "{err}");
    }
}
