//! Forwarding over real sockets: the upstream's own key and the body untouched, explicit tiers
//! and concrete models, streams relayed chunk by chunk, fast 5xx on upstream failures, and
//! fallback to the next tier up. The upstream is the local fake of `server_upstream.rs`.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::json;

use crate::server_upstream::{refused_base_url, Behavior, FakeUpstream, STREAM_CHUNKS};

use crate::harness::*;

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
    let r = server.chat("auto", EASY).await;
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
    let r = server
        .post("/v1/chat/completions", chat("small", HARD))
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
        .post("/v1/chat/completions", chat("test-medium", HARD))
        .send()
        .await
        .unwrap();
    assert_eq!(header(r.headers(), "x-router-tier"), "medium");
    assert_eq!(medium.received()[0].model, "test-medium");
    // `auto` needs the model: 503 until it is loaded.
    let r = server
        .post_json("/v1/chat/completions", chat("auto", HARD))
        .await;
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
    let call = |model: &str| {
        let req = server.post("/v1/chat/completions", chat(model, "hi"));
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
            .post("/v1/chat/completions", chat("small", "hi"))
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
