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
        let chat = json!({"model": "auto", "messages": [{"role": "user", "content": blank}]});
        let r = server
            .post_json("/v1/chat/completions", chat.to_string())
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
