//! Bounds and refusals (issue "Hardening"): queries with no visible text are `empty_query` at
//! every entry point, and a huge query is cut before tokenising and says so.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::*;
use crate::util::{run, stderr};

const BLANKS: [&str; 3] = [
    "\u{0}\u{0}\u{0}",
    "\u{200B}\u{FEFF}\u{2060}",
    " \u{1}\u{7f}\u{AD} ",
];

/// A server over a copy of the fixture examples, and a config file for the CLI on the same copy.
struct Served {
    dir: tempfile::TempDir,
    examples: std::path::PathBuf,
    toml: std::path::PathBuf,
    config: model_router::config::Config,
    server: TestServer,
}

async fn served_copy() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let examples = dir.path().join("examples.jsonl");
    std::fs::copy(crate::util::fixture("examples.jsonl"), &examples).unwrap();
    let mut config = config(&[]);
    config.routing.examples = examples.clone();
    let toml = dir.path().join("router.toml");
    let text = std::fs::read_to_string(crate::util::fixture("router.toml"))
        .unwrap()
        .replace(
            "examples = \"examples.jsonl\"",
            &format!("examples = {:?}", examples.display().to_string()),
        );
    std::fs::write(&toml, text).unwrap();
    let router = std::sync::Arc::new(
        model_router::router::Router::from_config(&config, crate::util::embedder(), &|_, _| {})
            .unwrap(),
    );
    let server = TestServer::start(&config, Some(router)).await;
    Served {
        dir,
        examples,
        toml,
        config,
        server,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invisible_queries_are_empty_everywhere() {
    let server = TestServer::start(&config(&[]), Some(fixture_router())).await;
    for blank in BLANKS {
        let r = server.route(json!({"query": blank})).await;
        assert_error(&r, 400, "empty_query");
        let r = server
            .route(json!({"messages": [{"role": "user", "content": blank}]}))
            .await;
        assert_error(&r, 400, "empty_query");
        let r = server
            .post_json("/v1/chat/completions", chat("auto", blank))
            .await;
        assert_error(&r, 400, "empty_query");
        if !blank.contains('\0') {
            // (A NUL cannot be an argument.)
            let out = run(&["route", blank]);
            assert!(!out.status.success(), "the CLI routed {blank:?}");
            assert!(stderr(&out).contains("empty"), "{}", stderr(&out));
        }
    }
    // Zero-width characters inside real text are text.
    let (status, _, d) = server
        .route(json!({"query": "\u{FEFF}hello\u{200B} there"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{d}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_query_is_cut_before_embedding_and_says_so() {
    let server = TestServer::start(&config(&[]), Some(fixture_router())).await;
    let huge = format!("{HARD} {}", "and more words ".repeat(60_000)); // ~900 KB
    let (status, _, d) = server.route(json!({"query": huge})).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    let reason = d["reason"].as_str().unwrap();
    assert!(reason.contains("only its start was embedded"), "{reason}");
    // The same decision as its first 8 KiB alone: nothing past the cut mattered.
    let start: String = huge.chars().take(8192).collect();
    let (_, _, alone) = server.route(json!({"query": start})).await;
    assert_eq!(d["tier"], alone["tier"]);
    assert_eq!(d["neighbors"][0]["id"], alone["neighbors"][0]["id"]);
    let (_, _, short) = server.route(json!({"query": HARD})).await;
    assert!(!short["reason"].as_str().unwrap().contains("only its start"));
    server.stop().await;
}

#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_model-router"))
        .arg("--config")
        .arg(crate::util::fixture("router.toml"))
        .args(["route", "hello"])
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(err.contains("TRACE"), "some log lines: {err}");
    assert!(
        !err.contains('\u{1b}'),
        "ANSI codes in a piped log: {err:?}"
    );
}

/// A server with short read timeouts, room for `connections`, and a long grace period (so a
/// shutdown that waited on a half-sent request would show as a hang).
async fn bounded(connections: usize, header_secs: u64) -> TestServer {
    let mut c = config(&[]);
    c.server.max_connections = connections;
    c.server.header_read_timeout_secs = header_secs;
    c.server.body_read_timeout_secs = 1;
    c.server.shutdown_grace_secs = 300;
    TestServer::start(&c, Some(fixture_router())).await
}

/// Reads until the server closes the connection (or resets it); returns what it sent.
async fn read_to_close(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let _ = within(
        "the server closes the connection",
        stream.read_to_end(&mut got),
    )
    .await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_is_cut_off() {
    use tokio::io::AsyncWriteExt;
    let server = bounded(64, 1).await;
    // Half a request line and a header, then nothing: closed at the header timeout.
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"POST /v1/route HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    read_to_close(&mut slow).await;
    // An idle connection is closed the same way.
    let mut idle = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    read_to_close(&mut idle).await;
    // Headers in, the body never finishes: 408 in JSON.
    let mut partial = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    partial
        .write_all(b"POST /v1/route HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer router-key-1\r\ncontent-length: 100\r\n\r\n{\"query\":")
        .await
        .unwrap();
    let answer = read_to_close(&mut partial).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"body_timeout\""), "{answer}");
    server.stop().await;
}

/// Requests hyper refuses before the app sees them (it cannot parse them) get the same JSON
/// error shape as every other refusal; a valid request before one on the same connection is
/// answered normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparseable_requests_get_json_errors() {
    use tokio::io::AsyncWriteExt;
    let mut c = config(&[]);
    c.server.max_header_bytes = 16 << 10;
    let server = TestServer::start(&c, Some(fixture_router())).await;
    let ok = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    let many: Vec<u8> = (0..120)
        .flat_map(|i| format!("x-h{i}: a\r\n").into_bytes())
        .collect();
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad\x01Name: v\r\n\r\n".to_vec(), "400", "malformed_request"),
        (b"POST /v1/route HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello".to_vec(), "400", "malformed_request"),
        (b"NOT HTTP AT ALL\r\n\r\n".to_vec(), "400", "malformed_request"),
        ([&b"GET /healthz HTTP/1.1\r\nx-big: "[..], &[b'a'; 20_000], b"\r\n\r\n"].concat(), "431", "headers_too_large"),
        ([&b"GET /healthz HTTP/1.1\r\n"[..], &many, b"\r\n"].concat(), "431", "headers_too_large"),
        ([&ok[..], b"GET /healthz HTTP/1.1\r\nBad\x01Name: v\r\n\r\n"].concat(), "400", "malformed_request"),
    ];
    for (request, status, code) in cases {
        let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        s.write_all(&request).await.unwrap();
        let answer = read_to_close(&mut s).await;
        let last = answer.rfind("HTTP/1.1 ").unwrap();
        if last > 0 {
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }
        let (head, body) = answer[last..].split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with(&format!("HTTP/1.1 {status}")), "{answer}");
        assert!(head.contains("content-type: application/json"), "{head}");
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], code, "{json}");
        assert_eq!(json["error"]["type"], "invalid_request_error", "{json}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_limit_new_connections_get_a_fast_503() {
    let server = bounded(4, 300).await;
    let fresh = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    let r = within(
        "an answer past the limit",
        fresh().get(format!("{}/healthz", server.url)).send(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(r.headers(), "retry-after"), "1");
    let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "too_many_connections", "{body}");
    // The idle clients leave: the slots come back.
    drop(idle);
    within("the slots free up", async {
        loop {
            let ok = fresh()
                .get(format!("{}/healthz", server.url))
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK);
            if ok {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    let text = fresh()
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metric(&text, "model_router_connections_refused_total", &[]) >= 1.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drops_half_sent_requests_at_once() {
    use tokio::io::AsyncWriteExt;
    let server = bounded(64, 300).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"POST /v1/route HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        held.push(s);
    }
    // Let the server take them in.
    let (status, _, _) = server.route(json!({"query": HARD})).await;
    assert_eq!(status, StatusCode::OK);
    // A grace period of 300 s would fail `stop`'s patience if they held it.
    server.stop().await;
}

/// An `ingest` while the server runs, then the same id live: refused (checked against the file
/// under its lock), so the file stays loadable; live additions and concurrent ingests all land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_live_additions_never_duplicate_or_lose_an_id() {
    let Served {
        dir,
        examples,
        toml: toml_path,
        config: c,
        server,
    } = served_copy().await;

    let batch = |name: &str, ids: std::ops::Range<usize>| {
        let path = dir.path().join(name);
        let text: String = ids
            .map(|i| format!("{}\n", json!({"id": format!("{name}-{i}"), "text": format!("ingested question {name} {i}"), "tier": "small"})))
            .collect();
        std::fs::write(&path, text).unwrap();
        path
    };
    let race = dir.path().join("race.jsonl");
    std::fs::write(
        &race,
        "{\"id\": \"race-1\", \"text\": \"a raced line\", \"tier\": \"small\"}\n",
    )
    .unwrap();
    let out = crate::util::run_with(&toml_path, &["ingest", race.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let live =
        json!({"examples": [{"id": "race-1", "text": "the same id, live", "tier": "large"}]});
    let r = server.post_json("/v1/examples", live.to_string()).await;
    assert_error(&r, 400, "invalid_examples");

    // Four ingests of 50 lines and live additions, all at once.
    let files: Vec<_> = (0..4).map(|w| batch(&format!("w{w}"), 0..50)).collect();
    let ingests: Vec<_> = files
        .iter()
        .map(|f| {
            let (toml_path, f) = (toml_path.clone(), f.clone());
            std::thread::spawn(move || {
                crate::util::run_with(&toml_path, &["ingest", f.to_str().unwrap()])
            })
        })
        .collect();
    for i in 0..10 {
        let add = json!({"examples": [{"id": format!("live-{i}"), "text": format!("live question {i}"), "tier": "small"}]});
        let (status, _, body) = server.post_json("/v1/examples", add.to_string()).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    for t in ingests {
        let out = t.join().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let all = model_router::corpus::read_examples(&examples, &c.tiers().unwrap()).unwrap();
    let ids: Vec<&String> = all.iter().filter_map(|e| e.id.as_ref()).collect();
    let unique: std::collections::HashSet<&&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no id twice");
    assert_eq!(all.len(), 11 + 1 + 200 + 10, "every line landed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_fields_are_bounded_and_neighbour_texts_cut() {
    let Served {
        dir,
        examples,
        toml: toml_path,
        config: _,
        server,
    } = served_copy().await;
    let before = std::fs::read(&examples).unwrap();
    let one = |field: &str, value: serde_json::Value| {
        let mut e = json!({"id": "x-1", "text": "a fine question", "tier": "small"});
        e[field] = value;
        json!({"examples": [e]}).to_string()
    };
    for (field, value) in [
        ("id", json!("i".repeat(100_000))),
        ("category", json!("c".repeat(200))),
        ("meta", json!({"blob": "m".repeat(20_000)})),
        ("text", json!("t ".repeat(40_000))),
    ] {
        let r = server.post_json("/v1/examples", one(field, value)).await;
        assert_error(&r, 400, "invalid_examples");
        let message = r.2["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("`{field}`"))
                && message.contains(&format!("routing.example_limits.{field}_bytes")),
            "{message}"
        );
    }
    assert_eq!(std::fs::read(&examples).unwrap(), before, "nothing written");
    // The same limits in `ingest`, naming the line.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        format!(
            "{}\n{}\n",
            json!({"text": "fine", "tier": "small"}),
            json!({"id": "i".repeat(300), "text": "long id", "tier": "small"})
        ),
    )
    .unwrap();
    let out = crate::util::run_with(&toml_path, &["ingest", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("line 2") && stderr(&out).contains("`id`"),
        "{}",
        stderr(&out)
    );

    // A long example text comes back cut in a neighbour list.
    let long = format!("{HARD} {}", "with many more words ".repeat(200));
    let add = json!({"examples": [{"id": "long-1", "text": long, "tier": "large"}]});
    let (status, _, body) = server.post_json("/v1/examples", add.to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, _, d) = server.route(json!({"query": long})).await;
    let first = &d["neighbors"][0];
    assert_eq!(first["id"], "long-1");
    let text = first["text"].as_str().unwrap();
    assert_eq!(text.chars().count(), 1001, "1,000 characters and the mark");
    assert!(text.ends_with('…'));
    server.stop().await;
}

/// Lines another process adds to the examples file while the server runs reach the index on
/// `POST /v1/reload`; relabels apply; a second reload changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_picks_up_an_ingest_while_serving() {
    let Served {
        dir,
        examples,
        toml: toml_path,
        config: _,
        server,
    } = served_copy().await;
    let swallow = "What is the airspeed velocity of an unladen swallow?";
    let (_, _, before) = server.route(json!({"query": swallow})).await;
    assert_eq!(before["basis"], "out_of_distribution");

    let new = dir.path().join("new.jsonl");
    std::fs::write(
        &new,
        format!(
            "{}\n{}\n",
            json!({"id": "new-1", "text": swallow, "tier": "small"}),
            json!({"text": "Name three Monty Python films.", "tier": "small"})
        ),
    )
    .unwrap();
    let out = crate::util::run_with(&toml_path, &["ingest", new.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    let (status, _, r) = server.post_json("/v1/reload", "").await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(
        (r["added"].as_u64(), r["relabelled"].as_u64()),
        (Some(2), Some(0)),
        "{r}"
    );
    assert_eq!(r["examples"], 13);
    let (_, _, after) = server.route(json!({"query": swallow})).await;
    assert_eq!(after["neighbors"][0]["id"], "new-1");
    assert_eq!(after["tier"], "small");
    let (_, _, again) = server.post_json("/v1/reload", "").await;
    assert_eq!(
        (again["added"].as_u64(), again["relabelled"].as_u64()),
        (Some(0), Some(0))
    );

    // An edit of a label in the file applies on reload.
    let text = std::fs::read_to_string(&examples).unwrap().replace(
        &json!({"id": "new-1", "text": swallow, "tier": "small"}).to_string(),
        &json!({"id": "new-1", "text": swallow, "tier": "large"}).to_string(),
    );
    std::fs::write(&examples, text).unwrap();
    let (_, _, r) = server.post_json("/v1/reload", "").await;
    assert_eq!(
        (r["added"].as_u64(), r["relabelled"].as_u64()),
        (Some(0), Some(1)),
        "{r}"
    );
    let (_, _, relabelled) = server.route(json!({"query": swallow})).await;
    assert_eq!(relabelled["tier"], "large");
    server.stop().await;
}
