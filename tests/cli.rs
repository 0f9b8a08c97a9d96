//! The binary end to end: route, batch route, ingest, embed, model fetch/info, and the
//! failure modes a user meets first.

use std::path::PathBuf;

use crate::util::{fixture, run, run_with, stderr, stdout};

/// A private copy of the fixture config and examples, for commands that write.
fn scratch() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("router.toml");
    let examples = dir.path().join("examples.jsonl");
    std::fs::copy(fixture("router.toml"), &config).unwrap();
    std::fs::copy(fixture("examples.jsonl"), &examples).unwrap();
    (dir, config, examples)
}

#[test]
fn route_prints_a_full_decision() {
    let out = run(&["route", "hello! how is your day going so far?"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let d: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(d["tier"], "small", "{d:#}");
    assert_eq!(d["model"], "test-small");
    assert_eq!(d["basis"], "neighbors");
    let confidence = d["confidence"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&confidence));
    for tier in ["small", "medium", "large"] {
        assert!(d["quality"][tier].is_number(), "quality.{tier} in {d:#}");
    }
    assert!(d["reason"].as_str().unwrap().contains("small"));
    let neighbors = d["neighbors"].as_array().unwrap();
    assert_eq!(neighbors.len(), 5, "k = 5 in the fixture config");
    assert_eq!(neighbors[0]["id"], "f-small-1");
    for n in neighbors {
        assert!(n["text"].is_string() && n["similarity"].is_number());
        assert!(n["tier"].is_string() || n["outcomes"].is_object());
    }
}

#[test]
fn hard_queries_go_to_the_large_tier() {
    let out = run(&[
        "route",
        "Prove that every group of prime order p is cyclic.",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let d: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(d["tier"], "large", "{d:#}");
    // quality_target 0 always picks the cheapest tier.
    let out = run(&[
        "route",
        "--quality-target",
        "0",
        "Prove that every group of prime order p is cyclic.",
    ]);
    let d: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(d["tier"], "small", "{d:#}");
}

#[test]
fn empty_queries_are_refused() {
    for q in ["", "   \t "] {
        let out = run(&["route", q]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("query is empty"), "{}", stderr(&out));
    }
}

#[test]
fn ingest_names_every_bad_line_and_writes_nothing() {
    let (_dir, config, examples) = scratch();
    let before = std::fs::read(&examples).unwrap();
    let input = examples.with_file_name("new.jsonl");
    std::fs::write(
        &input,
        [
            r#"{"id": "n1", "text": "what time is it in Tokyo?", "tier": "small"}"#,
            r#"{"id": "n2", "text": "", "tier": "small"}"#,
            r#"{"id": "n3", "text": "ok", "tier": "gigantic"}"#,
            r#"not json"#,
            r#"{"id": "f-small-1", "text": "an id already in the file", "tier": "small"}"#,
            r#"{"text": "score out of range", "outcomes": {"small": 2}}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let out = run_with(&config, &["ingest", input.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    for line in ["line 2:", "line 3:", "line 4:", "line 5:", "line 6:"] {
        assert!(err.contains(line), "{line} missing from: {err}");
    }
    assert!(!err.contains("line 1:"), "{err}");
    assert!(err.contains("duplicate id `f-small-1`") && err.contains("unknown tier `gigantic`"));
    assert_eq!(
        std::fs::read(&examples).unwrap(),
        before,
        "nothing may be written"
    );
}

#[test]
fn ingest_appends_valid_examples_which_then_route() {
    let (_dir, config, examples) = scratch();
    let input = examples.with_file_name("new.jsonl");
    std::fs::write(
        &input,
        concat!(
            r#"{"id": "n1", "text": "Compose a sonnet about the quiet of a lighthouse keeper's last night on duty.", "tier": "medium"}"#,
            "\n",
            r#"{"text": "List three colours of the rainbow.", "outcomes": {"small": 1, "large": 1}}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = run_with(&config, &["ingest", input.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("added 2 examples"),
        "{}",
        stderr(&out)
    );
    let text = std::fs::read_to_string(&examples).unwrap();
    assert_eq!(text.lines().count(), 13);
    let out = run_with(
        &config,
        &["route", "write a sonnet about a lighthouse keeper"],
    );
    let d: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(d["neighbors"][0]["id"], "n1", "{d:#}");
    assert_eq!(d["tier"], "medium");
    // Ingesting the same ids again is refused.
    let out = run_with(&config, &["ingest", input.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("duplicate id `n1`"));
}

#[test]
fn batch_route_writes_one_line_per_query() {
    batch_route_with_decision_records();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    std::fs::write(
        &input,
        concat!(
            r#"{"id": 7, "prompt": "hey, how's it going?"}"#,
            "\n\n",
            r#"{"text": "Design a strongly consistent multi-region order database."}"#,
            "\n",
            r#"{"id": "q3", "prompt": "Translate 'thank you' into Italian."}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = run(&[
        "route",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["id"], 7);
    // A line without an id gets one, unique to the run.
    assert!(lines[1]["id"].as_str().unwrap().starts_with("route-"));
    assert_eq!(lines[2]["id"], "q3");
    assert_eq!(
        lines
            .iter()
            .map(|l| l["tier"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["small", "large", "small"]
    );
    for l in &lines {
        for key in ["model", "confidence", "quality", "neighbors"] {
            assert!(!l[key].is_null(), "{key} in {l}");
        }
    }
    // A bad line is named and no output is written.
    std::fs::write(&input, "{\"prompt\": \"fine\"}\n{\"prompt\": \"  \"}\n").unwrap();
    let output2 = dir.path().join("out2.jsonl");
    let out = run(&[
        "route",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output2.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("line 2:"), "{}", stderr(&out));
    assert!(!output2.exists());
}

#[test]
fn embed_prints_one_vector_per_line() {
    let out = run(&["embed", "first text", "zweiter Text"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let vectors: Vec<Vec<f64>> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(vectors.len(), 2);
    assert!(vectors.iter().all(|v| v.len() == 384));
}

#[test]
fn model_fetch_prints_the_folder_last_and_info_describes_it() {
    let out = run(&["model", "fetch"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = PathBuf::from(stdout(&out).lines().last().unwrap());
    assert!(dir.join("model.safetensors").is_file(), "{}", dir.display());
    let out = run(&["model", "info"]);
    let info: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    for key in ["name", "source", "dim", "pooling", "max_length", "device"] {
        assert!(!info[key].is_null(), "{key} in {info}");
    }
}

#[test]
fn a_gpu_device_without_the_feature_says_how_to_rebuild() {
    if cfg!(feature = "cuda") {
        return;
    }
    let out = run(&["--device", "cuda", "embed", "x"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--features cuda"), "{}", stderr(&out));
}

#[test]
fn calibrate_finds_the_target_for_a_share() {
    let (dir, config, _) = scratch();
    let sample = dir.path().join("sample.jsonl");
    // Twenty in-domain queries: half near the fixture's large examples, half near small ones.
    let lines: Vec<String> = (0..10)
        .flat_map(|i| {
            [
                serde_json::json!({"prompt": format!("Prove that every group of prime order {i} is cyclic.")}),
                serde_json::json!({"prompt": format!("hey! how's your day going, friend number {i}?")}),
            ]
        })
        .map(|v| v.to_string())
        .collect();
    std::fs::write(&sample, lines.join("\n")).unwrap();
    let calibrate = |share: &str| {
        run_with(
            &config,
            &[
                "calibrate",
                "--input",
                sample.to_str().unwrap(),
                "--share",
                share,
            ],
        )
    };
    let out = calibrate("large=0.2");
    assert!(out.status.success(), "{}", stderr(&out));
    let c: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(c["queries"], 20);
    let target = c["quality_target"].as_f64().unwrap();
    assert!(
        target < 0.9,
        "the configured 0.9 sends about half to large: {c:#}"
    );
    assert!(
        c["shares"]["large"].as_f64().unwrap() <= 0.2 + 1e-6,
        "{c:#}"
    );
    assert!(c["shares_at_configured_target"]["large"].as_f64().unwrap() > 0.2);
    assert_eq!(c["binding"], "large");
    // A loose limit leaves the configured target.
    let out = calibrate("large=0.9");
    let c: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        c["quality_target"].as_f64().unwrap() as f32,
        0.9f32,
        "{c:#}"
    );
    for bad in ["large", "huge=0.3", "large=1.5"] {
        let out = calibrate(bad);
        assert!(!out.status.success(), "{bad}");
        assert!(
            stderr(&out).contains("share") || stderr(&out).contains("huge"),
            "{bad}: {}",
            stderr(&out)
        );
    }
}

/// `route --decisions` writes decision records whose ids match the output's.
fn batch_route_with_decision_records() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    let log = dir.path().join("d.jsonl");
    std::fs::write(
        &input,
        "{\"id\": 7, \"prompt\": \"hey, how's it going?\"}\n{\"text\": \"Prove that every group of prime order p is cyclic.\"}\n",
    )
    .unwrap();
    let (i, o, l) = (
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        log.to_str().unwrap(),
    );
    let out = run(&["route", "--input", i, "--output", o, "--decisions", l]);
    assert!(out.status.success(), "{}", stderr(&out));
    let records = model_router::decision_log::read_decisions(&log).unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].id, "7");
    assert_eq!(records[1].id, lines[1]["id"].as_str().unwrap());
    assert_eq!(records[1].tier, "large");
    assert_eq!(records[1].endpoint, "cli");
    assert_eq!(
        records[1].query,
        "Prove that every group of prime order p is cyclic."
    );
    // --decisions needs a batch.
    let out = run(&["route", "hello", "--decisions", l]);
    assert!(!out.status.success());
}
