//! The other fronts over real sockets: Anthropic's Messages API (routing on user text through a
//! tool loop, the upstream's own `x-api-key`, `anthropic-*` headers passed on, streaming,
//! count_tokens, errors in Anthropic's shape, a tier without an Anthropic upstream), OpenAI's
//! Responses API (`input` as a string or items, streaming, `previous_response_id` passed on),
//! and sessions that only escalate.

use model_router::config::{Config, UpstreamConfig, UpstreamKind};
use model_router::tier::Alternate;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::*;
use crate::server_upstream::{Behavior, FakeUpstream};

/// Every tier on the OpenAI fake; `small` and `large` also on the Anthropic fake as
/// `claude-small` and `claude-large`; `medium` has no Anthropic model.
fn two_kinds(openai: &FakeUpstream, anthropic: &FakeUpstream) -> Config {
    let u = openai.base_url.as_str();
    let mut c = config(&[("small", u), ("medium", u), ("large", u)]);
    c.upstreams.insert(
        "anth".into(),
        UpstreamConfig {
            base_url: anthropic.base_url.clone(),
            api_key_env: Some("TEST_UPSTREAM_KEY".into()),
            timeout_secs: 5,
            kind: UpstreamKind::Anthropic,
        },
    );
    for t in &mut c.tiers {
        if t.name != "medium" {
            t.alternates.push(Alternate {
                model: format!("claude-{}", t.name),
                upstream: "anth".into(),
            });
        }
    }
    c.validate().unwrap();
    c
}

/// POSTs as Anthropic's SDK does: `x-api-key`, `anthropic-version`.
async fn anthropic_post(
    server: &TestServer,
    path: &str,
    body: &Value,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let r = server
        .client
        .post(format!("{}{path}", server.url))
        .header("x-api-key", ROUTER_KEY)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "tools-2024-04-04")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status(), r.headers().clone(), r.text().await.unwrap())
}

/// Asserts an Anthropic-shaped error with this status, type and code.
fn assert_anthropic_error(body: &str, kind: &str, code: &str) -> Value {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], kind, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_route_on_user_text_and_go_to_the_anthropic_upstream() {
    let openai = FakeUpstream::start("openai-up", Behavior::Answer).await;
    let anthropic = FakeUpstream::start("anthropic-up", Behavior::Answer).await;
    let server = TestServer::start(&two_kinds(&openai, &anthropic), Some(fixture_router())).await;
    let body = json!({
        "model": "auto",
        "max_tokens": 64,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": HARD}]}],
        "temperature": 0.70,
    });
    let (status, h, text) = anthropic_post(&server, "/v1/messages", &body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(header(&h, "x-router-tier"), "large");
    assert_eq!(header(&h, "x-router-model"), "claude-large");
    assert_eq!(header(&h, "request-id"), "upstream-msg-1");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        answer["content"][0]["text"],
        "anthropic-up answered with claude-large"
    );
    let got = anthropic.received();
    assert_eq!(got.len(), 1);
    assert!(openai.received().is_empty());
    let r = &got[0];
    assert_eq!(
        (r.path.as_str(), r.model.as_str()),
        ("messages", "claude-large")
    );
    // The upstream's own key, the client's version and beta headers; never the client's key.
    assert_eq!(r.x_api_key.as_deref(), Some(UPSTREAM_KEY));
    assert_eq!(r.authorization, None);
    assert_eq!(r.anthropic_version.as_deref(), Some("2023-06-01"));
    assert_eq!(r.anthropic_beta.as_deref(), Some("tools-2024-04-04"));
    assert_eq!(
        r.body,
        body.to_string()
            .replace(r#""model":"auto""#, r#""model":"claude-large""#)
    );

    // An agent's tool loop: the latest user turn holds only a tool result; the router reads the
    // latest user turn with text, not the tool output.
    let tool_loop = json!({
        "model": "auto",
        "max_tokens": 64,
        "messages": [
            {"role": "user", "content": EASY},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": HARD}]},
        ],
    });
    let (status, h, text) = anthropic_post(&server, "/v1/messages", &tool_loop).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(header(&h, "x-router-tier"), "small");

    // Streamed: Anthropic's events relayed as they are.
    let mut stream = body.clone();
    stream["stream"] = json!(true);
    let (status, h, text) = anthropic_post(&server, "/v1/messages", &stream).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&h, "content-type"), "text/event-stream");
    assert!(text.starts_with("event: message_start\n"), "{text}");
    assert!(text.contains("event: content_block_delta") && text.contains("event: message_stop"));

    // A tier name or a tier's Anthropic model forces it.
    for (model, tier, sent) in [
        ("small", "small", "claude-small"),
        ("claude-large", "large", "claude-large"),
    ] {
        let forced = json!({"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": EASY}]});
        let (status, h, text) = anthropic_post(&server, "/v1/messages", &forced).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(header(&h, "x-router-tier"), tier);
        assert_eq!(anthropic.received().last().unwrap().model, sent);
    }

    // count_tokens goes to the routed tier's upstream.
    let (status, _, text) = anthropic_post(&server, "/v1/messages/count_tokens", &body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["input_tokens"],
        7
    );
    let last = anthropic.received().pop().unwrap();
    assert_eq!(
        (last.path.as_str(), last.model.as_str()),
        ("messages/count_tokens", "claude-large")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_endpoints_answer_errors_in_anthropic_shape() {
    let openai = FakeUpstream::start("openai-up", Behavior::Answer).await;
    let anthropic = FakeUpstream::start("anthropic-up", Behavior::Fail(429)).await;
    let server = TestServer::start(&two_kinds(&openai, &anthropic), Some(fixture_router())).await;
    let chat = |model: &str| json!({"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": HARD}]});

    let (status, _, text) = anthropic_post(&server, "/v1/messages", &json!({"messages": []})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_anthropic_error(&text, "invalid_request_error", "missing_model");
    let r = server
        .client
        .post(format!("{}/v1/messages", server.url))
        .header("x-api-key", ROUTER_KEY)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_anthropic_error(
        &r.text().await.unwrap(),
        "invalid_request_error",
        "invalid_json",
    );
    let r = server
        .client
        .post(format!("{}/v1/messages", server.url))
        .body(chat("auto").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_anthropic_error(
        &r.text().await.unwrap(),
        "authentication_error",
        "missing_api_key",
    );

    // `medium` has no Anthropic upstream: no translation, a clear refusal naming both kinds.
    let (status, _, text) = anthropic_post(&server, "/v1/messages", &chat("medium")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let v = assert_anthropic_error(&text, "invalid_request_error", "upstream_protocol_mismatch");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("`medium`") && m.contains("anthropic") && m.contains("openai"),
        "{m}"
    );
    assert!(anthropic.received().is_empty(), "nothing was sent");
    // An OpenAI-only model name is not an Anthropic model.
    let (status, _, text) = anthropic_post(&server, "/v1/messages", &chat("test-medium")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_anthropic_error(&text, "invalid_request_error", "model_not_found");

    // The upstream's own error (a 429 in Anthropic's shape) is relayed as it is.
    let (status, _, text) = anthropic_post(&server, "/v1/messages", &chat("large")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["message"], "anthropic-up failed on purpose");
    assert!(v["error"].get("code").is_none(), "not re-rendered: {v}");

    // The OpenAI endpoints keep the OpenAI shape.
    let r = server.post_json("/v1/chat/completions", "{}").await;
    assert_error(&r, 400, "missing_model");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_route_on_input_and_pass_everything_else_on() {
    let openai = FakeUpstream::start("openai-up", Behavior::Answer).await;
    let anthropic = FakeUpstream::start("anthropic-up", Behavior::Answer).await;
    let server = TestServer::start(&two_kinds(&openai, &anthropic), Some(fixture_router())).await;
    let body =
        json!({"model": "auto", "input": HARD, "previous_response_id": "resp_0", "store": false});
    let (status, h, answer) = server.post_json("/v1/responses", body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(header(&h, "x-router-tier"), "large");
    assert_eq!(
        answer["output"][0]["content"][0]["text"],
        "openai-up answered with test-large"
    );
    let r = openai.received().pop().unwrap();
    assert_eq!(r.path, "responses");
    assert_eq!(
        r.authorization.as_deref(),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );
    assert_eq!(
        r.body,
        body.to_string()
            .replace(r#""model":"auto""#, r#""model":"test-large""#)
    );

    // Items: user messages with input_text parts are read; tool outputs and instructions not.
    let items = json!({
        "model": "auto",
        "instructions": HARD,
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": EASY}]},
            {"type": "function_call_output", "call_id": "c1", "output": HARD},
        ],
        "stream": true,
    });
    let r = server
        .post("/v1/responses", items.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(r.headers(), "x-router-tier"), "small");
    assert_eq!(header(r.headers(), "content-type"), "text/event-stream");
    let text = r.text().await.unwrap();
    assert!(text.contains("event: response.output_text.delta"), "{text}");
    assert!(
        text.contains("openai-up answered with test-small"),
        "{text}"
    );

    let r = server
        .post_json("/v1/responses", json!({"model": "auto"}).to_string())
        .await;
    assert_error(&r, 400, "missing_query");
    let r = server
        .post_json(
            "/v1/responses",
            json!({"model": "auto", "input": [{"type": "function_call_output", "output": "x"}]})
                .to_string(),
        )
        .await;
    assert_error(&r, 400, "missing_query");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_escalate_and_never_step_down() {
    let openai = FakeUpstream::start("openai-up", Behavior::Answer).await;
    let anthropic = FakeUpstream::start("anthropic-up", Behavior::Answer).await;
    let mut c = two_kinds(&openai, &anthropic);
    c.server.session_from_body = true;
    let server = TestServer::start(&c, Some(fixture_router())).await;
    let chat = |text: &str, session: Option<&str>| {
        let mut r = server.post("/v1/chat/completions", chat("auto", text));
        if let Some(s) = session {
            r = r.header("x-session-id", s);
        }
        r.send()
    };
    // Without a session an easy turn goes to small.
    let r = chat(EASY, None).await.unwrap();
    assert_eq!(header(r.headers(), "x-router-tier"), "small");
    assert!(r.headers().get("x-router-session-tier").is_none());
    // A hard first turn, then "thanks!": the session stays on the hard tier, and says so.
    let r = chat(HARD, Some("s-1")).await.unwrap();
    assert_eq!(header(r.headers(), "x-router-tier"), "large");
    assert_eq!(header(r.headers(), "x-router-session-tier"), "large");
    let r = chat(EASY, Some("s-1")).await.unwrap();
    assert_eq!(header(r.headers(), "x-router-tier"), "large");
    assert_eq!(header(r.headers(), "x-router-session-tier"), "large");
    assert_eq!(openai.received().last().unwrap().model, "test-large");
    let mut route = server.post("/v1/route", json!({"query": EASY}).to_string());
    route = route.header("x-session-id", "s-1");
    let (status, h, d) = json_of(route.send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (d["tier"].as_str(), header(&h, "x-router-session-tier")),
        (Some("large"), "large")
    );
    let reason = d["reason"].as_str().unwrap();
    assert!(
        reason.contains("session") && reason.contains("`small`"),
        "{reason}"
    );

    // An explicit tier overrides the session and is not recorded.
    let r = server
        .post(
            "/v1/chat/completions",
            json!({"model": "large", "messages": [{"role": "user", "content": EASY}]}).to_string(),
        )
        .header("x-session-id", "s-2")
        .send()
        .await
        .unwrap();
    assert_eq!(header(r.headers(), "x-router-tier"), "large");
    let r = chat(EASY, Some("s-2")).await.unwrap();
    assert_eq!(header(r.headers(), "x-router-tier"), "small");

    // With session_from_body, Anthropic's metadata.user_id names the session.
    let turn = |text: &str| json!({"model": "auto", "max_tokens": 8, "metadata": {"user_id": "u-7"}, "messages": [{"role": "user", "content": text}]});
    let (_, h, _) = anthropic_post(&server, "/v1/messages", &turn(HARD)).await;
    assert_eq!(header(&h, "x-router-tier"), "large");
    let (_, h, _) = anthropic_post(&server, "/v1/messages", &turn(EASY)).await;
    assert_eq!(
        (
            header(&h, "x-router-tier"),
            header(&h, "x-router-session-tier")
        ),
        ("large", "large")
    );

    let long = "x".repeat(300);
    let r = chat(EASY, Some(&long)).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let text = server.metrics().await;
    assert_eq!(
        metric(&text, "model_router_sessions", &[]),
        3.0,
        "s-1, s-2, u-7"
    );
    assert_eq!(
        metric(&text, "model_router_session_evictions_total", &[]),
        0.0
    );
    server.stop().await;
}
