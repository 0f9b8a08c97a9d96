//! The HTTP server over real sockets: routing, auth, every bad input, a full queue, 100
//! concurrent routes, metrics, live examples, readiness. Forwarding is in `proxy.rs`, the other
//! fronts in `protocols.rs`, shutdown in `lifecycle.rs`, bounds in `limits.rs`; they share
//! `harness.rs`. The model is the real one, loaded once.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use model_router::corpus::read_examples;
use model_router::embed::{Embedder, ModelInfo};
use model_router::error::Result as LibResult;
use model_router::router::{Router, RouterOptions};
use model_router::server::AppState;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::server_upstream::{Behavior, FakeUpstream};
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
        defer_graph: false,
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
    let r = server.chat("auto", EASY).await;
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
