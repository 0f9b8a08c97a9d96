//! The server's life: graceful shutdown with a stream in flight, in-process and through the
//! binary on SIGTERM.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::server_upstream::{FakeUpstream, STREAM_CHUNKS};
use crate::util;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_a_stream_in_flight() {
    let large = FakeUpstream::start_gated("large-up").await;
    let mut server = TestServer::start(
        &config(&[("large", &large.base_url)]),
        Some(fixture_router()),
    )
    .await;
    let chat =
        json!({"model": "large", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let r = server
        .post("/v1/chat/completions", chat.to_string())
        .send()
        .await
        .unwrap();
    let mut stream = r.bytes_stream();
    let first = read_until(&mut stream, "part0").await;
    server.begin_shutdown();
    // New connections are refused once shutdown has begun...
    let addr = server.addr;
    within("the listener closing", async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        !server.done.is_finished(),
        "the stream in flight holds the server open"
    );
    // ...while the stream in flight runs to its end.
    large.release();
    let rest = read_until(&mut stream, "data: [DONE]").await;
    assert!((first + &rest).contains(&format!("part{} ", STREAM_CHUNKS - 1)));
    within("the server finishing", &mut server.done)
        .await
        .unwrap()
        .unwrap();
}

/// Starts the binary's `serve` with a config file; returns the child and its address.
fn spawn_binary(config: &Path) -> (std::process::Child, String) {
    util::spawn_serve(
        config,
        &[
            ("TEST_ROUTER_KEYS", ROUTER_KEY),
            ("TEST_UPSTREAM_KEY", UPSTREAM_KEY),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_and_stops_gracefully_on_sigterm() {
    let large = FakeUpstream::start_gated("large-up").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("router.toml");
    let fixture = std::fs::read_to_string(util::fixture("router.toml")).unwrap();
    let examples = util::fixture("examples.jsonl");
    let text = fixture
        .replace(
            "examples = \"examples.jsonl\"",
            &format!("examples = {:?}", examples.to_str().unwrap()),
        )
        .replace(
            "bind = \"127.0.0.1:0\"",
            "bind = \"127.0.0.1:0\"\napi_keys_env = \"TEST_ROUTER_KEYS\"",
        )
        .replace(
            "model = \"test-large\"",
            "model = \"test-large\"\nupstream = \"fake\"",
        )
        + &format!(
            "\n[upstreams.fake]\nbase_url = \"{}\"\napi_key_env = \"TEST_UPSTREAM_KEY\"\n",
            large.base_url
        );
    std::fs::write(&path, text).unwrap();
    let (mut child, url) = spawn_binary(&path);
    let client = reqwest::Client::new();
    within("the binary becoming ready", async {
        loop {
            if let Ok(r) = client.get(format!("{url}/readyz")).send().await {
                if r.status() == StatusCode::OK {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let chat =
        json!({"model": "auto", "stream": true, "messages": [{"role": "user", "content": HARD}]});
    let r = client
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(ROUTER_KEY)
        .body(chat.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(r.headers(), "x-router-tier"), "large");
    let mut stream = r.bytes_stream();
    read_until(&mut stream, "part0").await;
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    large.release();
    read_until(&mut stream, "data: [DONE]").await;
    let status = within("the binary exiting", async {
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(status.success(), "{status:?}");
    let got = large.received();
    assert_eq!(
        got[0].authorization.as_deref(),
        Some("Bearer sk-upstream-secret")
    );
}
