//! The learning loop end to end, over real sockets and the real binary: serve with a decision
//! log, route 50 queries, send feedback for 10 of them (every form, merges, conflicts, bad
//! input, an unknown id), see a fed query cite its `fb-` example, restart and find the examples
//! kept, then join a judge's batch offline with `model-router feedback` and re-decide the log
//! with `model-router replay` under a candidate config.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use model_router::corpus::{read_examples, Label};
use model_router::decision_log::read_decisions;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::util;

const KEY: &str = "loop-key";

/// Fifty queries over a few topics, some close to the fixture examples, some far from all.
fn queries() -> Vec<String> {
    let topics = [
        "the boiling point of water",
        "a proof that the square root of two is irrational",
        "a haiku about autumn rain",
        "the capital of Australia",
        "a distributed rate limiter design",
        "translating 'good night' into Spanish",
        "the causes of the French revolution",
        "a binary search in Rust",
        "how tides work",
        "the rules of chess castling",
    ];
    let forms = [
        "Tell me about {}.",
        "Quick question: {}?",
        "Explain {} to a twelve-year-old.",
        "I need help with {}, please.",
        "Give me a short note on {}.",
    ];
    forms
        .iter()
        .flat_map(|f| topics.iter().map(move |t| f.replace("{}", t)))
        .collect()
}

/// A scratch folder with the fixture examples and a config that logs decisions.
fn scratch() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let examples = dir.path().join("examples.jsonl");
    std::fs::copy(util::fixture("examples.jsonl"), &examples).unwrap();
    let config = dir.path().join("router.toml");
    let text = std::fs::read_to_string(util::fixture("router.toml"))
        .unwrap()
        .replace(
            "bind = \"127.0.0.1:0\"",
            "bind = \"127.0.0.1:0\"\napi_keys_env = \"LOOP_ROUTER_KEYS\"",
        )
        + "\n[log]\ndecisions = \"logs/decisions.jsonl\"\n";
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("logs/decisions.jsonl");
    (dir, config, examples, log)
}

struct Served {
    child: Child,
    url: String,
    client: reqwest::Client,
}

impl Served {
    /// Starts `model-router serve` and waits until it is ready.
    async fn start(config: &Path) -> Served {
        // `ROUTER_DEVICE` reaches the binary through the environment, as for the CLI tests.
        let (child, url) = util::spawn_serve(config, &[("LOOP_ROUTER_KEYS", KEY)]);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{url}/readyz")).send().await {
                if r.status() == StatusCode::OK {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "the server never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Served { child, url, client }
    }

    async fn post(
        &self,
        path: &str,
        body: Value,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.url))
            .bearer_auth(KEY)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (status, headers, body)
    }

    async fn metrics(&self) -> String {
        let r = self.client.get(format!("{}/metrics", self.url)).send();
        r.await.unwrap().text().await.unwrap()
    }

    /// SIGTERM, then waits for the exit.
    fn stop(mut self) {
        let kill = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
    }
}

/// Waits until the writer thread has put `n` records into the log.
async fn logged(log: &Path, n: usize) -> Vec<model_router::decision_log::DecisionRecord> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(records) = read_decisions(log) {
            if records.len() >= n {
                return records;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the log never reached {n} records"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_feedback_restart_and_replay() {
    let (dir, config, examples, log) = scratch();
    let tiers = util::config().tiers().unwrap();
    let server = Served::start(&config).await;

    // 1-2. Route 50 queries: each decision has an id, the same as its x-request-id, and is logged.
    let mut ids = Vec::new();
    for (i, q) in queries().iter().enumerate() {
        let (status, headers, d) = server.post("/v1/route", json!({"query": q})).await;
        assert_eq!(status, StatusCode::OK, "{d}");
        let id = d["id"].as_str().unwrap().to_string();
        assert_eq!(headers["x-request-id"].to_str().unwrap(), id, "query {i}");
        ids.push((id, d));
    }
    let records = logged(&log, 50).await;
    assert_eq!(records.len(), 50);
    let first = &records[0];
    assert_eq!(first.id, ids[0].0);
    assert_eq!(first.endpoint, "route");
    assert_eq!(first.query, queries()[0]);
    assert_eq!(first.tier, ids[0].1["tier"].as_str().unwrap());
    assert_eq!(first.policy.k, 5);
    assert_eq!(first.embedder.sha256.len(), 64);
    assert!(first.time.ends_with('Z') && first.route_ms > 0.0);
    assert!(first.neighbors.len() <= 5);
    let version = first.examples_version.clone();
    // A client's own request id becomes the decision id; a chat's earlier turns are logged as
    // its context.
    let r = server
        .client
        .post(format!("{}/v1/route", server.url))
        .bearer_auth(KEY)
        .header("x-request-id", "client-chosen-1")
        .body(json!({"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "and in French?"}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "client-chosen-1");
    let d: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(d["id"], "client-chosen-1");
    let records = logged(&log, 51).await;
    let chat = records.iter().find(|r| r.id == "client-chosen-1").unwrap();
    assert_eq!(chat.query, "and in French?");
    assert_eq!(chat.context[0].text, "hi");

    // 3. Feedback for 10 decisions, in all three forms.
    for (n, (id, d)) in ids.iter().take(10).enumerate() {
        let body = match n % 3 {
            0 => json!({"id": id, "tier": "medium"}),
            1 => json!({"id": id, "outcomes": {"small": 0.0, "large": 1.0}}),
            _ => json!({"id": id, "score": 0.75}),
        };
        let (status, _, answer) = server.post("/v1/feedback", body).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        assert_eq!(answer["id"], format!("fb-{id}"));
        assert_eq!(answer["result"], "added");
        if n % 3 == 2 {
            let served = d["tier"].as_str().unwrap();
            assert_eq!(answer["outcomes"], json!({ served: 0.75 }));
        }
    }
    // A second feedback merges other tiers in; the same values again change nothing; a
    // different value for a scored tier is a 409 showing both.
    let id1 = &ids[1].0;
    let (s, _, a) = server
        .post(
            "/v1/feedback",
            json!({"id": id1, "outcomes": {"medium": 1.0}}),
        )
        .await;
    assert_eq!(
        (s, a["result"].as_str()),
        (StatusCode::OK, Some("merged")),
        "{a}"
    );
    assert_eq!(
        a["outcomes"],
        json!({"small": 0.0, "medium": 1.0, "large": 1.0})
    );
    let (s, _, a) = server
        .post("/v1/feedback", json!({"id": id1, "outcomes": {"small": 0}}))
        .await;
    assert_eq!(
        (s, a["result"].as_str()),
        (StatusCode::OK, Some("unchanged")),
        "{a}"
    );
    let (s, _, a) = server
        .post(
            "/v1/feedback",
            json!({"id": id1, "outcomes": {"small": 1.0}}),
        )
        .await;
    assert_eq!(
        (s, code(&a)),
        (StatusCode::CONFLICT, "feedback_conflict"),
        "{a}"
    );
    let message = a["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("was 0") && message.contains("now 1"),
        "{message}"
    );
    // Bad scores and tiers are 400s; an unknown id is a 404 that says how long ids are kept.
    for bad in [
        json!({"id": ids[20].0, "score": 1.5}),
        json!({"id": ids[20].0, "tier": "huge"}),
        json!({"id": ids[20].0, "tier": "small", "score": 1}),
        json!({"id": ids[20].0, "outcomes": {"small": "yes"}}),
    ] {
        let (s, _, a) = server.post("/v1/feedback", bad.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad} -> {a}");
    }
    // 4. An unknown id.
    let (s, _, a) = server
        .post(
            "/v1/feedback",
            json!({"id": "no-such-decision", "tier": "small"}),
        )
        .await;
    assert_eq!(
        (s, code(&a)),
        (StatusCode::NOT_FOUND, "unknown_decision"),
        "{a}"
    );
    let message = a["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("last") && message.contains("decision log"),
        "{message}"
    );

    // 5. The fed query now cites its fb- example, and the example set's version moved on.
    let fed = &queries()[0];
    let (_, _, again) = server.post("/v1/route", json!({"query": fed})).await;
    assert_eq!(
        again["neighbors"][0]["id"],
        format!("fb-{}", ids[0].0),
        "{again:#}"
    );
    assert!(again["neighbors"][0]["similarity"].as_f64().unwrap() > 0.99);
    assert_eq!(again["neighbors"][0]["outcomes"]["medium"], 1.0);
    let records = logged(&log, 52).await;
    assert_ne!(records.last().unwrap().examples_version, version);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("model_router_feedback_total{result=\"added\"} 10"),
        "{metrics}"
    );
    assert!(metrics.contains("model_router_feedback_total{result=\"conflict\"} 1"));
    assert!(metrics.contains("model_router_decision_log_dropped_total 0"));
    server.stop();

    // 6. After a restart the examples are kept, and older decisions are found in the log.
    let stored = read_examples(&examples, &tiers).unwrap();
    assert_eq!(stored.len(), 11 + 10);
    let fb1 = stored
        .iter()
        .find(|e| e.id.as_deref() == Some(&format!("fb-{id1}")))
        .unwrap();
    assert!(matches!(&fb1.label, Label::Outcomes { outcomes } if outcomes.len() == 3));
    let server = Served::start(&config).await;
    let (_, _, again) = server.post("/v1/route", json!({"query": fed})).await;
    assert_eq!(again["neighbors"][0]["id"], format!("fb-{}", ids[0].0));
    let (s, _, a) = server
        .post("/v1/feedback", json!({"id": ids[30].0, "tier": "large"}))
        .await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "a decision from before the restart, from the log: {a}"
    );
    server.stop();

    // The offline path: a judge's batch joined to the log, all or nothing, lines named.
    let judged = dir.path().join("judged.jsonl");
    std::fs::write(
        &judged,
        format!(
            "{}\n{}\n",
            json!({"id": ids[40].0, "tier": "small"}),
            json!({"id": "nope", "tier": "small"})
        ),
    )
    .unwrap();
    let run = |args: &[&str]| util::run_with(&config, args);
    let out = run(&[
        "feedback",
        judged.to_str().unwrap(),
        "--decisions",
        log.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        util::stderr(&out).contains("line 2"),
        "{}",
        util::stderr(&out)
    );
    assert_eq!(read_examples(&examples, &tiers).unwrap().len(), 22);
    std::fs::write(
        &judged,
        format!("{}\n", json!({"id": ids[40].0, "tier": "small"})),
    )
    .unwrap();
    let out = run(&[
        "feedback",
        judged.to_str().unwrap(),
        "--decisions",
        log.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", util::stderr(&out));
    assert!(
        util::stderr(&out).contains("1 added"),
        "{}",
        util::stderr(&out)
    );
    assert_eq!(read_examples(&examples, &tiers).unwrap().len(), 23);

    // 7. Replay: the same config agrees with itself on the logged decisions made before any
    // feedback... and a candidate whose examples send everything near a topic to `small`
    // moves decisions, which the matrix shows.
    replay_checks(dir.path(), &config, &log);
}

/// A candidate examples file, `candidate.jsonl` in `dir`: every query of [`queries`] labeled
/// `small` (ids `c0`, `c1`, …), so each is its own nearest example.
fn write_candidate_examples(dir: &Path) -> PathBuf {
    let path = dir.join("candidate.jsonl");
    let lines: Vec<String> = queries()
        .iter()
        .enumerate()
        .map(|(i, q)| json!({"id": format!("c{i}"), "text": q, "tier": "small"}).to_string())
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

/// Replays the log under a candidate config and checks the matrix.
fn replay_checks(dir: &Path, config: &Path, log: &Path) {
    let candidate_examples = write_candidate_examples(dir);
    let out = util::run_with(
        config,
        &[
            "--examples",
            candidate_examples.to_str().unwrap(),
            "replay",
            log.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", util::stderr(&out));
    let report: Value = serde_json::from_str(&util::stdout(&out)).unwrap();
    // Every query is now its own nearest example, labeled small: all go to small.
    let after = &report["share"]["after"];
    assert!(after["small"].as_f64().unwrap() > 0.95, "{report:#}");
    let matrix = &report["matrix"];
    let moved_to_small: f64 = ["medium", "large"]
        .iter()
        .map(|from| matrix[from]["small"].as_f64().unwrap_or(0.0))
        .sum();
    assert!(moved_to_small > 0.0, "{report:#}");
    assert!(report["agreement"].as_f64().unwrap() < 1.0);
}

/// `[routing.budget]` in a served config: once enough decisions are in, a limit that the
/// configured target would break lowers the target, the reason says so, /metrics shows the
/// effective target and the shares, and an explicit tier is not budgeted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_lowers_the_target_and_says_so() {
    let (_dir, config, _, _) = scratch();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "fallback_tier = \"large\"",
        "fallback_tier = \"large\"\n\n[routing.budget]\nlarge = 0.2\nwindow = 100",
    );
    std::fs::write(&config, text).unwrap();
    let server = Served::start(&config).await;
    let hard = "Prove that every group of prime order p is cyclic.";
    let mut tiers = Vec::new();
    for _ in 0..80 {
        let (s, _, d) = server.post("/v1/route", json!({"query": hard})).await;
        assert_eq!(s, StatusCode::OK, "{d}");
        tiers.push((d["tier"].as_str().unwrap().to_string(), d["reason"].clone()));
    }
    // Before the controller has seen enough decisions, the configured target decides.
    assert_eq!(tiers[0].0, "large", "{:?}", tiers[0]);
    // Then the same query, all of whose neighbours need `large`, is held to the budget.
    let (last, reason) = tiers.last().unwrap();
    assert_ne!(last, "large");
    let reason = reason.as_str().unwrap();
    assert!(
        reason.contains("budget") && reason.contains("without it: `large`"),
        "{reason}"
    );
    let metrics = server.metrics().await;
    let value = |name: &str| -> f64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing from {metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(value("model_router_budget_quality_target") < 0.9);
    let large_share = value("model_router_budget_tier_share{tier=\"large\"}");
    assert!(large_share < 0.9 && large_share > 0.0, "{large_share}");
    server.stop();
}

/// `[shadow]`: a candidate config decides every routed query alongside, with the same ids, into
/// its own log; the served decisions are its own. A candidate on another embedding model is
/// refused at start, with what to do instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_router_decides_alongside_and_only_logs() {
    let (dir, config, _, log) = scratch();
    write_candidate_examples(dir.path());
    let candidate = dir.path().join("candidate.toml");
    std::fs::write(
        &candidate,
        std::fs::read_to_string(util::fixture("router.toml"))
            .unwrap()
            .replace(
                "examples = \"examples.jsonl\"",
                "examples = \"candidate.jsonl\"",
            ),
    )
    .unwrap();
    let served = std::fs::read_to_string(&config).unwrap()
        + "\n[shadow]\nconfig = \"candidate.toml\"\ndecisions = \"logs/shadow.jsonl\"\n";
    std::fs::write(&config, served).unwrap();
    let server = Served::start(&config).await;
    let hard = queries()[1].clone(); // a proof: large for the served examples
    let (_, _, d) = server.post("/v1/route", json!({"query": hard})).await;
    assert_eq!(d["tier"], "large", "{d:#}");
    for q in queries().iter().skip(2).take(4) {
        server.post("/v1/route", json!({"query": q})).await;
    }
    let served_log = logged(&log, 5).await;
    let shadow_log = logged(&dir.path().join("logs/shadow.jsonl"), 5).await;
    let ids = |log: &[model_router::decision_log::DecisionRecord]| {
        let mut ids: Vec<String> = log.iter().map(|r| r.id.clone()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&served_log), ids(&shadow_log), "the same ids");
    assert!(
        shadow_log.iter().all(|r| r.tier == "small"),
        "{shadow_log:?}"
    );
    let first = shadow_log
        .iter()
        .find(|r| r.id == served_log[0].id)
        .unwrap();
    assert_eq!(first.neighbors[0].id.as_deref(), Some("c1"));
    assert_ne!(first.examples_version, served_log[0].examples_version);
    server.stop();

    // Another embedding model: refused at start.
    let other = std::fs::read_to_string(&candidate)
        .unwrap()
        .replace("sentence-transformers/all-MiniLM-L6-v2", "some/other-model");
    std::fs::write(&candidate, other).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_model-router"))
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env("LOOP_ROUTER_KEYS", KEY)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[shadow]") && err.contains("replay"), "{err}");
}
