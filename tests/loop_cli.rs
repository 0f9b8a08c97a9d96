//! The learning-loop commands end to end: a decision log written from real routing decisions
//! (the real model, the fixture config, a chat with context turns among them), then the binary's
//! `replay` (same config: every decision reproduced; a candidate example set: the move shows in
//! the matrix; a candidate ladder without a logged tier: counted by name) and `label-queue`
//! (out of distribution first, repeats collapsed, near-duplicates skipped, an empty tier that
//! `ingest` refuses by line until it is filled in).

use std::path::{Path, PathBuf};

use model_router::batcher::{route_queries, ContextRule, Query};
use model_router::decision_log::{DecisionRecord, LoggedPolicy};
use model_router::router::Router;
use serde_json::Value;

use crate::util::{self, fixture, run, run_with, stderr, stdout};

/// Far from every fixture example (checked below: the log must hold an out-of-distribution
/// decision for the label-queue checks to mean anything).
const OOD: &str = "zqxv 48213 blorpt snarfle";
const EASY: &str = "hello! how is your day going so far?";

/// The logged traffic: one entry per decision, a chat's user turns oldest first.
fn traffic() -> Vec<Vec<&'static str>> {
    vec![
        vec![EASY],
        vec!["Prove that every group of prime order p is cyclic."],
        vec!["Write a Python function that parses an RFC 3339 timestamp, with tests."],
        vec![
            "Design a multi-region strongly consistent order database.",
            "and how would you test its failure modes?",
        ],
        vec![OOD],
        vec!["what is the boiling point of water in fahrenheit?"],
        vec!["What's the boiling point of water in Fahrenheit??"],
        vec![EASY],
    ]
}

/// Routes the traffic with the fixture config as the server would (a chat's earlier turns
/// blended in) and writes one decision record per line. Returns the records.
fn write_log(path: &Path) -> Vec<DecisionRecord> {
    let config = util::config();
    let router = Router::from_config(&config, util::embedder(), &|_, _| {}).unwrap();
    let rule = ContextRule {
        turns: config.server.context_turns,
        weight: config.server.context_weight,
    };
    let queries: Vec<(Query, _)> = traffic()
        .iter()
        .map(|turns| {
            let q = Query::conversation(&turns[..], rule).unwrap();
            (q, router.policy().clone())
        })
        .collect();
    let decisions = route_queries(&router, &queries).unwrap();
    let policy = LoggedPolicy::new(router.policy(), router.tiers());
    let records: Vec<DecisionRecord> = queries
        .iter()
        .zip(&decisions)
        .enumerate()
        .map(|(i, ((q, _), d))| {
            DecisionRecord::new(
                &format!("req-{i}"),
                if q.parts().len() > 1 { "chat" } else { "route" },
                q.parts(),
                d,
                policy.clone(),
                &router.examples_version(),
                router.embedder().info(),
                1.0,
            )
        })
        .collect();
    let mut text = String::new();
    for r in &records {
        text.push_str(&serde_json::to_string(r).unwrap());
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
    records
}

fn json(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_str(&stdout(out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

fn tier_of(records: &[DecisionRecord], query: &str) -> String {
    records
        .iter()
        .find(|r| r.query == query)
        .unwrap()
        .tier
        .clone()
}

#[test]
fn replay_reproduces_the_log_and_shows_what_a_candidate_moves() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.jsonl");
    let records = write_log(&log);
    assert_eq!(
        records[3].context.len(),
        1,
        "the chat's earlier turn is logged"
    );
    assert_eq!(tier_of(&records, EASY), "small");
    let log_arg = log.to_str().unwrap();

    // (a) The config that logged the decisions reproduces every one of them.
    let same = json(&run(&["replay", log_arg]));
    assert_eq!(same["records"], 8);
    assert_eq!(same["agreement"], 1.0, "{same:#}");
    assert_eq!(same["changed"], 0);
    assert_eq!(same["logged"]["same_examples"], 8);
    let small = records.iter().filter(|r| r.tier == "small").count();
    assert_eq!(same["matrix"]["small"]["small"], small, "{same:#}");
    assert_eq!(same["matrix"]["small"]["large"], 0);
    assert_eq!(
        same["cost"]["before_per_1000"],
        same["cost"]["after_per_1000"]
    );
    assert!(same["cost"]["before_per_1000"].as_f64().unwrap() > 0.0);
    assert_eq!(same["cost"]["output_tokens_per_request"], 300);
    assert!(same["cost"]["mean_input_tokens"].as_f64().unwrap() > 5.0);
    assert_eq!(same["most_changed"], serde_json::json!([]));

    // (b) A candidate example set that labels the easy greeting large moves both of its
    // decisions, and says so with the new neighbour.
    let examples = dir.path().join("candidate.jsonl");
    let mut text = std::fs::read_to_string(fixture("examples.jsonl")).unwrap();
    text.push_str(&format!(
        "{}\n",
        serde_json::json!({"id": "c-1", "text": EASY, "tier": "large"})
    ));
    std::fs::write(&examples, text).unwrap();
    let out = run(&[
        "--examples",
        examples.to_str().unwrap(),
        "replay",
        log_arg,
        "--output-tokens",
        "100",
        "--top",
        "1",
    ]);
    let moved = json(&out);
    assert_eq!(moved["matrix"]["small"]["large"], 2, "{moved:#}");
    assert_eq!(moved["changed"], 2, "{moved:#}");
    assert!((moved["agreement"].as_f64().unwrap() - 6.0 / 8.0).abs() < 1e-9);
    assert_eq!(moved["logged"]["same_examples"], 0);
    assert_eq!(moved["share"]["before"]["small"], small as f64 / 8.0);
    assert_eq!(moved["share"]["after"]["small"], (small - 2) as f64 / 8.0);
    let (before, after) = (
        moved["cost"]["before_per_1000"].as_f64().unwrap(),
        moved["cost"]["after_per_1000"].as_f64().unwrap(),
    );
    assert!(
        after > before,
        "small -> large costs more: {before} -> {after}"
    );
    assert_eq!(moved["cost"]["output_tokens_per_request"], 100);
    let changes = moved["most_changed"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "--top 1");
    let c = &changes[0];
    assert_eq!(c["query"], EASY);
    assert_eq!(c["jump"], 2);
    assert_eq!(
        (c["before"]["tier"].as_str(), c["after"]["tier"].as_str()),
        (Some("small"), Some("large"))
    );
    assert_eq!(c["before"]["neighbors"][0]["id"], "f-small-1");
    assert!(
        c["before"]["neighbors"][0]["text"].is_null(),
        "the log keeps ids only"
    );
    let first = &c["after"]["neighbors"][0];
    assert_eq!(
        (first["id"].as_str(), first["tier"].as_str()),
        (Some("c-1"), Some("large"))
    );
    assert_eq!(first["text"], EASY);
    assert!(stderr(&out).contains("2 changed"), "{}", stderr(&out));
}

/// A two-tier candidate (small, large) and its examples: the fixture's without medium.
fn two_tier_candidate(dir: &Path) -> PathBuf {
    let config = dir.join("two.toml");
    let toml = std::fs::read_to_string(fixture("router.toml")).unwrap();
    let medium = "[[tiers]]\nname = \"medium\"\nmodel = \"test-medium\"\ninput_price_per_mtok = 0.5\noutput_price_per_mtok = 2.0\n\n";
    assert!(
        toml.contains(medium),
        "the fixture's medium tier moved: update this test"
    );
    std::fs::write(&config, toml.replace(medium, "")).unwrap();
    let examples: String = std::fs::read_to_string(fixture("examples.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.contains("medium"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.join("examples.jsonl"), examples).unwrap();
    config
}

#[test]
fn replay_counts_a_tier_the_candidate_lacks_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.jsonl");
    let records = write_log(&log);
    let medium = records.iter().filter(|r| r.tier == "medium").count();
    assert!(medium > 0, "the log needs a medium decision: {records:#?}");
    let config = two_tier_candidate(dir.path());
    let report = json(&run_with(&config, &["replay", log.to_str().unwrap()]));
    let row = &report["matrix"]["medium"];
    let moved: u64 = ["small", "large"]
        .iter()
        .map(|t| row[*t].as_u64().unwrap())
        .sum();
    assert_eq!(moved as usize, medium, "{report:#}");
    assert!(
        row.get("medium").is_none(),
        "columns are the candidate's tiers"
    );
    assert_eq!(
        report["cost"]["unpriced"].as_u64().unwrap() as usize,
        medium
    );
    assert_eq!(
        report["cost"]["priced"].as_u64().unwrap() as usize,
        8 - medium
    );
    let unknown = report["most_changed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["before"]["tier"] == "medium")
        .unwrap();
    assert!(unknown["jump"].is_null());
}

#[test]
fn label_queue_puts_out_of_distribution_first_and_keeps_the_queue_diverse() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.jsonl");
    let records = write_log(&log);
    assert_eq!(
        records.iter().find(|r| r.query == OOD).unwrap().basis,
        model_router::vote::Basis::OutOfDistribution,
        "the test needs an out-of-distribution query"
    );
    let queue = dir.path().join("queue.jsonl");
    let out = run(&[
        "label-queue",
        "--decisions",
        log.to_str().unwrap(),
        "--limit",
        "20",
        "--output",
        queue.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "--output: nothing on stdout");
    let summary = stderr(&out);
    assert!(summary.contains("from 8 decisions"), "{summary}");
    let text = std::fs::read_to_string(&queue).unwrap();
    let items: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Out of distribution first.
    assert_eq!(items[0]["text"], OOD);
    assert_eq!(items[0]["meta"]["why"], "out_of_distribution");
    assert_eq!(items[0]["id"], "lq-req-4");
    let whys: Vec<&str> = items
        .iter()
        .map(|i| i["meta"]["why"].as_str().unwrap())
        .collect();
    let first_margin = whys.iter().position(|w| *w == "margin").unwrap();
    assert!(
        whys[first_margin..].iter().all(|w| *w == "margin"),
        "{whys:?}"
    );
    // Margins ascend.
    let margins: Vec<f64> = items[first_margin..]
        .iter()
        .map(|i| i["meta"]["margin"].as_f64().unwrap())
        .collect();
    assert!(margins.windows(2).all(|w| w[0] <= w[1]), "{margins:?}");
    // The repeated greeting is one item seen twice; of the two boiling-point rephrasings
    // (cosine above 0.9) only one is kept.
    let easy: Vec<&Value> = items.iter().filter(|i| i["text"] == EASY).collect();
    assert_eq!(easy.len(), 1);
    assert_eq!(easy[0]["meta"]["seen"], 2);
    let boiling = items
        .iter()
        .filter(|i| {
            i["text"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains("boiling point")
        })
        .count();
    assert_eq!(boiling, 1, "{text}");
    assert_eq!(
        items.len(),
        6,
        "8 decisions - 1 repeat - 1 near-duplicate: {text}"
    );
    // The chat is labeled by its latest turn, with the earlier one for the labeler.
    let chat = items
        .iter()
        .find(|i| i["meta"]["decision"] == "req-3")
        .unwrap();
    assert_eq!(chat["text"], "and how would you test its failure modes?");
    assert_eq!(
        chat["meta"]["context"][0],
        "Design a multi-region strongly consistent order database."
    );
    assert!(items.iter().all(|i| i["tier"] == ""));

    // Without --output the queue goes to stdout; --limit caps it, OOD still first.
    let out = run(&[
        "label-queue",
        "--decisions",
        log.to_str().unwrap(),
        "--limit",
        "1",
    ]);
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["text"], OOD);

    // The empty tiers are refused by ingest, each line named, nothing written ...
    let (config, examples) = scratch(dir.path());
    let before = std::fs::read(&examples).unwrap();
    let out = run_with(&config, &["ingest", queue.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    for n in 1..=items.len() {
        assert!(
            err.contains(&format!("line {n}: unknown tier ``")),
            "line {n}: {err}"
        );
    }
    assert_eq!(std::fs::read(&examples).unwrap(), before);
    // ... and once filled in, the queue is an examples file.
    let filled: String = items
        .iter()
        .map(|i| {
            let mut i = i.clone();
            i["tier"] = "medium".into();
            format!("{i}\n")
        })
        .collect();
    std::fs::write(&queue, filled).unwrap();
    let out = run_with(&config, &["ingest", queue.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("added {} examples", items.len())));
}

/// A private copy of the fixture config and examples, for ingest.
fn scratch(dir: &Path) -> (PathBuf, PathBuf) {
    let sub = dir.join("scratch");
    std::fs::create_dir_all(&sub).unwrap();
    let config = sub.join("router.toml");
    let examples = sub.join("examples.jsonl");
    std::fs::copy(fixture("router.toml"), &config).unwrap();
    std::fs::copy(fixture("examples.jsonl"), &examples).unwrap();
    (config, examples)
}

#[test]
fn a_bad_decision_log_is_named_by_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.jsonl");
    write_log(&log);
    let good = std::fs::read_to_string(&log).unwrap();
    let first = good.lines().next().unwrap();
    std::fs::write(&log, format!("{first}\n{{\"id\": \"x\"}}\n{first}\n")).unwrap();
    let log_arg = log.to_str().unwrap();
    for args in [
        vec!["replay", log_arg],
        vec!["label-queue", "--decisions", log_arg, "--limit", "5"],
    ] {
        let out = run(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("line 2: not a decision record"),
            "{args:?}: {err}"
        );
        assert!(err.contains("decisions.jsonl"), "{err}");
        assert!(
            !err.contains("  line 1:") && !err.contains("  line 3:"),
            "{err}"
        );
    }
    let out = run(&["label-queue", "--decisions", log_arg, "--limit", "0"]);
    assert!(stderr(&out).contains("--limit"), "{}", stderr(&out));
}
