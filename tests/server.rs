//! The HTTP server over real sockets: routing, auth, every bad input, forwarding (streamed and
//! not, explicit tiers, concrete models, the upstream's own key), upstream failures and
//! fallback, a full queue, 100 concurrent routes, metrics, live examples, readiness, graceful
//! shutdown mid-stream in-process and through the binary on SIGTERM. The upstream is the
//! local fake of `server_upstream.rs`; the model is the real one, loaded once.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use model_router::corpus::read_examples;
use model_router::embed::{Embedder, ModelInfo};
use model_router::error::Result as LibResult;
use model_router::router::{Router, RouterOptions};
use model_router::server::AppState;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::server_upstream::{refused_base_url, Behavior, FakeUpstream, STREAM_CHUNKS};
use crate::util;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_returns_decisions_with_headers() {
    let server = TestServer::start(&config(&[]), Some(fixture_router())).await;
    let (status, h, d) = server.route(json!({"query": HARD})).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert_eq!(d["tier"], "large", "{d:#}");
    assert_eq!(d["model"], "test-large");
    assert_eq!(d["basis"], "neighbors");
    assert_eq!(d["neighbors"].as_array().unwrap().len(), 5);
    assert_eq!(header(&h, "x-router-tier"), "large");
    assert_eq!(header(&h, "x-router-model"), "test-large");
    let confidence: f64 = header(&h, "x-router-confidence").parse().unwrap();
    assert!((confidence - d["confidence"].as_f64().unwrap()).abs() < 1e-3);
    assert_eq!(header(&h, "x-request-id").len(), 36, "a UUID");
    let timing = header(&h, "server-timing");
    let ms: f64 = timing.strip_prefix("route;dur=").unwrap().parse().unwrap();
    assert!(ms > 0.0, "{timing}");

    let (_, _, d) = server.route(json!({"query": EASY})).await;
    assert_eq!(d["tier"], "small", "{d:#}");
    // The cost-quality knob per request: 0 always picks the cheapest tier.
    let (_, _, d) = server
        .route(json!({"query": HARD, "quality_target": 0.0}))
        .await;
    assert_eq!(d["tier"], "small", "{d:#}");

    // A client's request id is kept.
    let r = server
        .post("/v1/route", json!({"query": EASY}).to_string())
        .header("x-request-id", "client-chosen-id")
        .send()
        .await
        .unwrap();
    assert_eq!(header(r.headers(), "x-request-id"), "client-chosen-id");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_ups_inherit_the_conversation() {
    let server = TestServer::start(&config(&[]), Some(fixture_router())).await;
    let follow_up = "and now in Rust?";
    let (_, _, alone) = server.route(json!({"query": follow_up})).await;
    assert_eq!(alone["basis"], "out_of_distribution", "{alone:#}");
    assert_eq!(alone["tier"], "large", "the fallback tier");

    let chat = |first: &str| {
        json!({"messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": first},
            {"role": "assistant", "content": "Here it is: ..."},
            {"role": "user", "content": [{"type": "text", "text": follow_up}]}
        ]})
    };
    let python = "Write a Python function that parses an ISO 8601 duration string into seconds";
    let (status, _, d) = server.route(chat(python)).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert_eq!(d["basis"], "neighbors", "{d:#}");
    assert_eq!(d["tier"], "medium", "{d:#}");
    assert_eq!(d["neighbors"][0]["id"], "f-medium-1");
    let (_, _, d) = server.route(chat("hey! how's your day going?")).await;
    assert_eq!(d["tier"], "small", "{d:#}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_guards_the_api_but_not_health() {
    let server = TestServer::start(&config(&[]), Some(fixture_router())).await;
    let url = |p: &str| format!("{}{p}", server.url);
    let body = json!({"query": EASY}).to_string();
    let none = json_of(
        server
            .client
            .post(url("/v1/route"))
            .body(body.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&none, 401, "missing_api_key");
    assert_eq!(header(&none.1, "www-authenticate"), "Bearer");
    let wrong = server
        .client
        .post(url("/v1/route"))
        .bearer_auth("router-key-3")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_error(&json_of(wrong).await, 401, "invalid_api_key");
    let second = server
        .client
        .post(url("/v1/route"))
        .bearer_auth("router-key-2")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    for path in ["/v1/chat/completions", "/v1/examples"] {
        let r = server.client.post(url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let r = server.client.get(url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "/v1/models");
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = server.client.get(url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path} is open");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_an_openai_style_error() {
    let server = TestServer::start(&config(&[]), Some(fixture_router())).await;
    let send = |path: &'static str, body: Vec<u8>| {
        let req = server.post(path, body);
        async move { json_of(req.send().await.unwrap()).await }
    };
    let route = |body: &str| send("/v1/route", body.as_bytes().to_vec());
    assert_error(&route("{\"query\": ").await, 400, "invalid_json");
    assert_error(&route("").await, 400, "invalid_json");
    assert_error(
        &send("/v1/route", b"{\"query\": \"caf\xe9\"}".to_vec()).await,
        400,
        "invalid_utf8",
    );
    assert_error(&route("{}").await, 400, "missing_query");
    assert_error(&route(r#"{"query": "  \n "}"#).await, 400, "empty_query");
    assert_error(&route(r#"{"query": 42}"#).await, 400, "invalid_request");
    assert_error(&route(r#"{"qurey": "typo"}"#).await, 400, "invalid_request");
    assert_error(
        &route(r#"{"query": "a", "messages": []}"#).await,
        400,
        "ambiguous_query",
    );
    assert_error(
        &route(r#"{"query": "a", "quality_target": 1.5}"#).await,
        400,
        "invalid_quality_target",
    );
    assert_error(
        &route(r#"{"messages": [{"role": "system", "content": "only a system prompt"}]}"#).await,
        400,
        "missing_query",
    );
    let chat = |body: Value| send("/v1/chat/completions", body.to_string().into_bytes());
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let unknown = chat(json!({"model": "gpt-99", "messages": msgs})).await;
    assert_error(&unknown, 400, "model_not_found");
    let message = unknown.2["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("auto") && message.contains("test-small"),
        "{message}"
    );
    assert_error(&chat(json!({"messages": msgs})).await, 400, "missing_model");
    assert_error(
        &chat(json!({"model": 3, "messages": msgs})).await,
        400,
        "invalid_model",
    );
    assert_error(
        &chat(json!({"model": "auto", "messages": "hi"})).await,
        400,
        "invalid_messages",
    );
    assert_error(
        &chat(json!(["not", "an", "object"])).await,
        400,
        "invalid_request",
    );
    // A tier without an upstream can route but not forward.
    assert_error(
        &chat(json!({"model": "small", "messages": msgs})).await,
        502,
        "no_upstream",
    );
    // Unknown tier in a live example.
    let bad_tier = send(
        "/v1/examples",
        json!({"examples": [{"text": "x", "tier": "gigantic"}]})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_error(&bad_tier, 400, "invalid_examples");
    assert!(bad_tier.2["error"]["message"]
        .as_str()
        .unwrap()
        .contains("unknown tier `gigantic`"));
    // Over the 1 MiB default body limit.
    let big = format!("{{\"query\": \"{}\"}}", "a".repeat(1 << 20));
    assert_error(&route(&big).await, 413, "payload_too_large");
    // Unknown paths and methods.
    let r = json_of(server.get("/v2/nothing").send().await.unwrap()).await;
    assert_error(&r, 404, "not_found");
    let r = json_of(server.get("/v1/route").send().await.unwrap()).await;
    assert_error(&r, 405, "method_not_allowed");
    // Still serving after all that.
    assert_eq!(server.route(json!({"query": EASY})).await.0, StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_with_the_upstreams_key_and_the_body_untouched() {
    let small = FakeUpstream::start("small-up", Behavior::Answer).await;
    let medium = FakeUpstream::start("medium-up", Behavior::Answer).await;
    let large = FakeUpstream::start("large-up", Behavior::Answer).await;
    let c = config(&[
        ("small", &small.base_url),
        ("medium", &medium.base_url),
        ("large", &large.base_url),
    ]);
    let server = TestServer::start(&c, Some(fixture_router())).await;
    // Fields the router knows nothing about, odd number spellings and member order included.
    let body = format!(
        r#"{{"messages":[{{"role":"user","content":{}}}],"temperature":0.70,"model":"auto","tools":[{{"type":"function","function":{{"name":"f","parameters":{{"type":"object"}}}}}}],"response_format":{{"type":"json_object"}},"seed":12345678901234567890123,"x_custom":{{"nested":[1,2.50,"three"]}}}}"#,
        json!(HARD)
    );
    let r = server
        .post("/v1/chat/completions", body.clone())
        .send()
        .await
        .unwrap();
    let (status, h, answer) = json_of(r).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(header(&h, "x-router-tier"), "large");
    assert_eq!(header(&h, "x-router-model"), "test-large");
    assert!(header(&h, "x-router-confidence").parse::<f64>().unwrap() > 0.5);
    assert_eq!(header(&h, "x-upstream-request-id"), "upstream-req-1");
    let timing = header(&h, "server-timing");
    assert!(
        timing.starts_with("route;dur=") && timing.contains(", upstream;dur="),
        "{timing}"
    );
    assert_eq!(header(&h, "openai-processing-ms"), "3");
    assert_eq!(answer["model"], "test-large");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "large-up answered with test-large"
    );
    let got = large.received();
    assert_eq!(got.len(), 1);
    assert!(small.received().is_empty() && medium.received().is_empty());
    assert_eq!(got[0].model, "test-large");
    // The upstream's own key; the client's key never leaves the router.
    assert_eq!(
        got[0].authorization.as_deref(),
        Some("Bearer sk-upstream-secret")
    );
    assert!(!got[0].body.contains(ROUTER_KEY));
    // Byte for byte, except the model.
    assert_eq!(
        got[0].body,
        body.replace(r#""model":"auto""#, r#""model":"test-large""#)
    );

    // The cheap path for an easy chat.
    let easy = json!({"model": "auto", "messages": [{"role": "user", "content": EASY}]});
    let r = server
        .post("/v1/chat/completions", easy.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(header(r.headers(), "x-router-tier"), "small");
    assert_eq!(small.received()[0].model, "test-small");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_tiers_and_concrete_models_skip_the_decision() {
    let small = FakeUpstream::start("small-up", Behavior::Answer).await;
    let medium = FakeUpstream::start("medium-up", Behavior::Answer).await;
    let c = config(&[("small", &small.base_url), ("medium", &medium.base_url)]);
    // Not ready (no model loaded): forcing a tier needs no decision, so it still works.
    let server = TestServer::start(&c, None).await;
    let chat = |model: &str| {
        json!({"model": model, "messages": [{"role": "user", "content": HARD}]}).to_string()
    };
    let r = server
        .post("/v1/chat/completions", chat("small"))
        .send()
        .await
        .unwrap();
    let (status, h, answer) = json_of(r).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(header(&h, "x-router-tier"), "small");
    assert_eq!(header(&h, "x-router-confidence"), "1.0000");
    assert!(
        header(&h, "server-timing").starts_with("upstream;dur="),
        "no decision was made"
    );
    assert_eq!(small.received()[0].model, "test-small");
    let r = server
        .post("/v1/chat/completions", chat("test-medium"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(r.headers(), "x-router-tier"), "medium");
    assert_eq!(medium.received()[0].model, "test-medium");
    // `auto` needs the model: 503 until it is loaded.
    let r = server.post_json("/v1/chat/completions", chat("auto")).await;
    assert_error(&r, 503, "not_ready");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_relayed_chunk_by_chunk() {
    let large = FakeUpstream::start_gated("large-up").await;
    let server = TestServer::start(
        &config(&[("large", &large.base_url)]),
        Some(fixture_router()),
    )
    .await;
    let chat =
        json!({"model": "auto", "stream": true, "messages": [{"role": "user", "content": HARD}]});
    let r = server
        .post("/v1/chat/completions", chat.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(r.headers(), "content-type"), "text/event-stream");
    assert_eq!(header(r.headers(), "x-router-tier"), "large");
    let mut stream = r.bytes_stream();
    // The upstream holds everything after its first chunk: if the router buffered, this would
    // never arrive.
    let first = read_until(&mut stream, "part0").await;
    assert!(!first.contains("part1"), "{first}");
    large.release();
    let rest = read_until(&mut stream, "data: [DONE]").await;
    let all = first + &rest;
    for i in 0..STREAM_CHUNKS {
        assert!(all.contains(&format!("part{i} ")), "{all}");
    }
    assert_eq!(all.matches("data: ").count(), STREAM_CHUNKS + 2, "{all}");
    assert!(within("the end of the stream", stream.next())
        .await
        .is_none());
    assert!(large.received()[0].body.contains(r#""stream":true"#));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_are_fast_5xx() {
    let failing = FakeUpstream::start("failing", Behavior::Fail(500)).await;
    let hanging = FakeUpstream::start("hanging", Behavior::Hang(Duration::from_secs(60))).await;
    let refusing = refused_base_url();
    let c = config(&[
        ("small", &refusing),
        ("medium", &failing.base_url),
        ("large", &hanging.base_url),
    ]);
    let server = TestServer::start(&c, Some(fixture_router())).await;
    let chat = |model: &str| {
        json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string()
    };
    let call = |model: &str| {
        let req = server.post("/v1/chat/completions", chat(model));
        async move { json_of(req.send().await.unwrap()).await }
    };
    let down = call("small").await;
    assert_error(&down, 502, "upstream_unavailable");
    assert!(
        !down.2.to_string().contains("127.0.0.1"),
        "no internal addresses: {}",
        down.2
    );
    let failed = call("medium").await;
    assert_error(&failed, 502, "upstream_error");
    assert_eq!(
        failing.received().len(),
        1,
        "no retry without retry_next_tier"
    );
    let started = Instant::now();
    let slow = call("large").await;
    assert_error(&slow, 504, "upstream_timeout");
    // The upstream would take 60 s; the configured timeout is 1 s.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // An upstream's own 4xx is its answer, passed on as it is.
    let rejecting = FakeUpstream::start("rejecting", Behavior::Fail(429)).await;
    let c = config(&[("small", &rejecting.base_url)]);
    let server2 = TestServer::start(&c, Some(fixture_router())).await;
    let r = json_of(
        server2
            .post("/v1/chat/completions", chat("small"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.2["error"]["message"], "rejecting failed on purpose");
    let m = server.metrics().await;
    assert_eq!(
        metric(
            &m,
            "model_router_upstream_errors_total",
            &[("tier", "small"), ("kind", "connect")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "model_router_upstream_errors_total",
            &[("tier", "medium"), ("kind", "status_5xx")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "model_router_upstream_errors_total",
            &[("tier", "large"), ("kind", "timeout")]
        ),
        1.0
    );
    server.stop().await;
    server2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_fall_back_to_the_next_tier_up() {
    let failing = FakeUpstream::start("failing", Behavior::Fail(503)).await;
    let large = FakeUpstream::start("large-up", Behavior::Answer).await;
    let mut c = config(&[
        ("small", &refused_base_url()),
        ("medium", &failing.base_url),
        ("large", &large.base_url),
    ]);
    c.server.retry_next_tier = true;
    let server = TestServer::start(&c, Some(fixture_router())).await;
    let chat =
        json!({"model": "auto", "stream": true, "messages": [{"role": "user", "content": EASY}]});
    let r = server
        .post("/v1/chat/completions", chat.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Routed to small (refused), then medium (503), answered by large.
    assert_eq!(header(r.headers(), "x-router-fallback-from"), "small");
    assert_eq!(header(r.headers(), "x-router-tier"), "large");
    assert_eq!(header(r.headers(), "x-router-model"), "test-large");
    let text = within("the fallback stream", r.text()).await.unwrap();
    assert!(
        text.contains("large-up answered") || text.contains("part0"),
        "{text}"
    );
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(failing.received()[0].model, "test-medium");
    assert_eq!(large.received()[0].model, "test-large");
    // Nothing above large: its failure is the client's.
    let hanging = FakeUpstream::start("hanging", Behavior::Hang(Duration::from_secs(60))).await;
    let mut c = config(&[("small", &failing.base_url), ("large", &hanging.base_url)]);
    c.server.retry_next_tier = true;
    let server2 = TestServer::start(&c, Some(fixture_router())).await;
    let body = json!({"model": "small", "messages": [{"role": "user", "content": "hi"}]});
    let r = json_of(
        server2
            .post("/v1/chat/completions", body.to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&r, 504, "upstream_timeout");
    assert!(r.2["error"]["message"].as_str().unwrap().contains("large"));
    server.stop().await;
    server2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_and_readiness() {
    let server = TestServer::start(&config(&[]), None).await;
    let (status, _, models) = json_of(server.get("/v1/models").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["auto", "small", "medium", "large"]);
    assert_eq!(models["data"][1]["object"], "model");
    assert_eq!(models["data"][3]["upstream_model"], "test-large");

    let health = server
        .client
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = json_of(
        server
            .client
            .get(format!("{}/readyz", server.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&ready, 503, "not_ready");
    assert_eq!(header(&ready.1, "retry-after"), "1");
    assert_error(
        &server.route(json!({"query": EASY})).await,
        503,
        "not_ready",
    );
    assert!(server.metrics().await.contains("model_router_ready 0"));
    server.stop().await;

    // The same state becomes ready when the router arrives.
    let state = AppState::new(&config(&[]), secret).unwrap();
    let server = TestServer::start_state(state.clone()).await;
    assert!(!state.is_ready());
    assert!(state.set_router(fixture_router()));
    assert!(!state.set_router(fixture_router()), "only once");
    let (status, _, ready) = json_of(
        server
            .client
            .get(format!("{}/readyz", server.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ready["examples"], 11);
    assert_eq!(server.route(json!({"query": EASY})).await.0, StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_routes_are_all_answered() {
    let server = Arc::new(TestServer::start(&config(&[]), Some(fixture_router())).await);
    let queries = [
        EASY,
        HARD,
        "Explain how index funds work",
        "Translate 'good night' into German",
    ];
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let server = server.clone();
            let q = format!("{} #{i}", queries[i % queries.len()]);
            tokio::spawn(async move { server.route(json!({"query": q})).await })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let (status, _, d) = within("a concurrent route", t).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{d}");
        let want = if i % 4 == 0 {
            "small"
        } else if i % 4 == 1 {
            "large"
        } else {
            ""
        };
        if !want.is_empty() {
            assert_eq!(d["tier"], want, "query {i}: {d:#}");
        }
    }
    let m = server.metrics().await;
    assert_eq!(
        metric(
            &m,
            "model_router_http_requests_total",
            &[("endpoint", "/v1/route"), ("status", "200")]
        ),
        100.0
    );
    assert_eq!(
        metric(&m, "model_router_batch_size_sum", &[]),
        100.0,
        "every query embedded once"
    );
    assert_eq!(metric(&m, "model_router_decisions_total", &[]), 100.0);
    let batches = metric(&m, "model_router_batch_size_count", &[]);
    eprintln!("100 concurrent routes took {batches} forward passes");
    Arc::into_inner(server).unwrap().stop().await;
}

/// The real model behind a gate that can hold the embedding thread inside `embed`.
struct Gated {
    inner: Arc<dyn Embedder>,
    open: Mutex<bool>,
    changed: Condvar,
    entered: Mutex<usize>,
}

impl Gated {
    fn set_open(&self, open: bool) {
        *self.open.lock().unwrap() = open;
        self.changed.notify_all();
    }
}

impl Embedder for Gated {
    fn info(&self) -> &ModelInfo {
        self.inner.info()
    }
    fn embed(&self, texts: &[&str]) -> LibResult<Vec<Vec<f32>>> {
        *self.entered.lock().unwrap() += 1;
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.changed.wait(open).unwrap();
        }
        drop(open);
        self.inner.embed(texts)
    }
    fn count_tokens(&self, text: &str) -> LibResult<usize> {
        self.inner.count_tokens(text)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after() {
    let mut c = config(&[]);
    c.server.queue_capacity = 1;
    c.server.batch_max_size = 1;
    let gate = Arc::new(Gated {
        inner: util::embedder(),
        open: Mutex::new(true),
        changed: Condvar::new(),
        entered: Mutex::new(0),
    });
    let options = RouterOptions {
        policy: c.policy().unwrap(),
        index: c.routing.index,
        hnsw: c.routing.hnsw,
    };
    let examples = read_examples(&c.routing.examples, &c.tiers().unwrap()).unwrap();
    let router = Router::build(
        gate.clone(),
        c.tiers().unwrap(),
        options,
        examples,
        None,
        &|_, _| {},
    )
    .unwrap();
    let server = Arc::new(TestServer::start(&c, Some(Arc::new(router))).await);
    gate.set_open(false);
    let entered = *gate.entered.lock().unwrap();
    let spawn_route = || {
        let server = server.clone();
        tokio::spawn(async move { server.route(json!({"query": EASY})).await })
    };
    // One query holds the embedding thread, one waits in the queue...
    let held = spawn_route();
    within("the first query reaching the model", async {
        while *gate.entered.lock().unwrap() == entered {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let queued = spawn_route();
    within("the second query being queued", async {
        while metric(&server.metrics().await, "model_router_queue_depth", &[]) < 1.0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // ...so the next is refused at once instead of hanging.
    let refused = within("the refusal", server.route(json!({"query": EASY}))).await;
    assert_error(&refused, 503, "overloaded");
    assert_eq!(header(&refused.1, "retry-after"), "1");
    gate.set_open(true);
    for t in [held, queued] {
        assert_eq!(within("a held query", t).await.unwrap().0, StatusCode::OK);
    }
    assert_eq!(server.route(json!({"query": EASY})).await.0, StatusCode::OK);
    Arc::into_inner(server).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_requests_decisions_latency_batches_and_upstreams() {
    let small = FakeUpstream::start("small-up", Behavior::Answer).await;
    let server = TestServer::start(
        &config(&[("small", &small.base_url)]),
        Some(fixture_router()),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(server.route(json!({"query": HARD})).await.0, StatusCode::OK);
    }
    assert_eq!(server.route(json!({})).await.0, StatusCode::BAD_REQUEST);
    let chat = json!({"model": "auto", "messages": [{"role": "user", "content": EASY}]});
    let r = server
        .post("/v1/chat/completions", chat.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let m = server.metrics().await;
    let count = |name: &str, labels: &[(&str, &str)]| metric(&m, name, labels);
    assert_eq!(
        count(
            "model_router_http_requests_total",
            &[("endpoint", "/v1/route"), ("status", "200")]
        ),
        3.0
    );
    assert_eq!(
        count(
            "model_router_http_requests_total",
            &[("endpoint", "/v1/route"), ("status", "400")]
        ),
        1.0
    );
    assert_eq!(
        count(
            "model_router_http_requests_total",
            &[("endpoint", "/v1/chat/completions"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        count("model_router_decisions_total", &[("tier", "large")]),
        3.0
    );
    assert_eq!(
        count("model_router_decisions_total", &[("tier", "small")]),
        1.0
    );
    assert_eq!(count("model_router_route_seconds_count", &[]), 4.0);
    assert!(count("model_router_route_seconds_sum", &[]) > 0.0);
    assert_eq!(count("model_router_batch_size_sum", &[]), 4.0);
    assert_eq!(
        count("model_router_upstream_seconds_count", &[("tier", "small")]),
        1.0
    );
    assert_eq!(count("model_router_examples", &[]), 11.0);
    assert_eq!(count("model_router_ready", &[]), 1.0);
    assert!(m.contains("# TYPE model_router_route_seconds histogram"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_examples_are_persisted_and_routed_to() {
    let dir = tempfile::tempdir().unwrap();
    let examples = dir.path().join("examples.jsonl");
    std::fs::copy(util::fixture("examples.jsonl"), &examples).unwrap();
    let mut c = config(&[]);
    c.routing.examples = examples.clone();
    let router = Arc::new(Router::from_config(&c, util::embedder(), &|_, _| {}).unwrap());
    let server = Arc::new(TestServer::start(&c, Some(router)).await);
    let swallow = "What is the airspeed velocity of an unladen swallow?";
    let (_, _, before) = server.route(json!({"query": swallow})).await;
    assert_eq!(before["basis"], "out_of_distribution", "{before:#}");
    assert_eq!(before["tier"], "large");

    // Routing goes on while examples are added.
    let routes: Vec<_> = (0..16)
        .map(|i| {
            let server = server.clone();
            tokio::spawn(async move { server.route(json!({"query": format!("{EASY} {i}")})).await })
        })
        .collect();
    let add = json!({"examples": [
        {"id": "live-swallow", "text": swallow, "tier": "small", "category": "trivia"},
        {"text": "Name three Monty Python films.", "outcomes": {"small": 0.9, "large": 1.0}}
    ]});
    let (status, _, added) = server.post_json("/v1/examples", add.to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    assert_eq!(added, json!({"added": 2, "examples": 13}));
    for r in routes {
        assert_eq!(
            within("a route during the addition", r).await.unwrap().0,
            StatusCode::OK
        );
    }
    let (_, _, after) = server.route(json!({"query": swallow})).await;
    assert_eq!(after["tier"], "small", "{after:#}");
    assert_eq!(after["neighbors"][0]["id"], "live-swallow");
    assert!(after["neighbors"][0]["similarity"].as_f64().unwrap() > 0.99);
    // Persisted: the file now has both, and reads back as valid examples.
    let file = read_examples(&examples, &c.tiers().unwrap()).unwrap();
    assert_eq!(file.len(), 13);
    assert_eq!(file[11].id.as_deref(), Some("live-swallow"));
    assert_eq!(file[11].category.as_deref(), Some("trivia"));

    // A reused id is refused and nothing is written.
    let again = json!({"examples": [{"id": "live-swallow", "text": "again", "tier": "small"}]});
    let r = server.post_json("/v1/examples", again.to_string()).await;
    assert_error(&r, 400, "invalid_examples");
    assert!(r.2["error"]["message"]
        .as_str()
        .unwrap()
        .contains("duplicate id"));
    let r = server
        .post_json("/v1/examples", r#"{"examples": []}"#)
        .await;
    assert_error(&r, 400, "no_examples");
    assert_eq!(
        read_examples(&examples, &c.tiers().unwrap()).unwrap().len(),
        13
    );
    assert!(server.metrics().await.contains("model_router_examples 13"));
    Arc::into_inner(server).unwrap().stop().await;

    // Without client keys nobody may write examples.
    let mut open = c.clone();
    open.server.api_keys_env = None;
    let server = TestServer::start(&open, Some(fixture_router())).await;
    let r = server.post_json("/v1/examples", add.to_string()).await;
    assert_error(&r, 403, "examples_disabled");
    server.stop().await;
}

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
