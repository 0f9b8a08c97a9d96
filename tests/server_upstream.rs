//! A local upstream for the server tests: `POST /v1/chat/completions` answers a chat
//! completion naming the model it received (streamed as SSE chunks when asked), `/v1/responses`
//! and Anthropic's `/v1/messages` (and `/count_tokens`) answer in their own shapes, and every
//! request is recorded (path, model, key headers, raw body). It can also fail with a
//! status, hang before its headers, or hold its stream after the first chunk until the test
//! releases it, so tests can tell chunk-by-chunk relaying and shutdown mid-stream from
//! buffering without timing assertions.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

/// How the fake answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behavior {
    /// 200 with a completion (SSE when `"stream": true`).
    Answer,
    /// This status with an OpenAI-style error body.
    Fail(u16),
    /// Sends no headers for this long.
    Hang(Duration),
}

/// What one request looked like on arrival.
#[derive(Debug, Clone)]
pub struct Received {
    /// The path below `/v1`, e.g. `chat/completions` or `messages`.
    pub path: String,
    pub model: String,
    pub authorization: Option<String>,
    pub x_api_key: Option<String>,
    pub anthropic_version: Option<String>,
    pub anthropic_beta: Option<String>,
    pub body: String,
}

struct Shared {
    behavior: Behavior,
    name: String,
    received: Mutex<Vec<Received>>,
    /// A streamed answer sends its first chunk at once and each later chunk after taking a
    /// permit here.
    chunks: Arc<Semaphore>,
}

/// A running fake upstream.
pub struct FakeUpstream {
    /// `http://127.0.0.1:PORT/v1`: the `base_url` to configure.
    pub base_url: String,
    shared: Arc<Shared>,
}

/// Chunks of content in a streamed answer (before the final empty one and `[DONE]`).
pub const STREAM_CHUNKS: usize = 4;

impl FakeUpstream {
    /// Starts a fake whose streams flow freely.
    pub async fn start(name: &str, behavior: Behavior) -> FakeUpstream {
        Self::start_with(name, behavior, Semaphore::MAX_PERMITS).await
    }

    /// Starts a fake whose streams stop after their first chunk until [`FakeUpstream::release`].
    pub async fn start_gated(name: &str) -> FakeUpstream {
        Self::start_with(name, Behavior::Answer, 0).await
    }

    async fn start_with(name: &str, behavior: Behavior, permits: usize) -> FakeUpstream {
        let shared = Arc::new(Shared {
            behavior,
            name: name.to_string(),
            received: Mutex::new(Vec::new()),
            chunks: Arc::new(Semaphore::new(permits)),
        });
        let app = axum::Router::new()
            .route(
                "/v1/chat/completions",
                axum::routing::post(chat_completions),
            )
            .route("/v1/responses", axum::routing::post(responses))
            .route("/v1/messages", axum::routing::post(messages))
            .route(
                "/v1/messages/count_tokens",
                axum::routing::post(count_tokens),
            )
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeUpstream {
            base_url: format!("http://{addr}/v1"),
            shared,
        }
    }

    /// Lets every held stream send all its remaining chunks.
    pub fn release(&self) {
        self.shared.chunks.add_permits(1000);
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }
}

/// A `base_url` where nothing listens: connecting is refused.
pub fn refused_base_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/v1")
}

/// Records a request; `Err` is the response its behavior asks for instead of an answer.
async fn receive(
    shared: &Shared,
    path: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<serde_json::Value, Response> {
    let text = String::from_utf8(body.to_vec()).expect("the router sends UTF-8");
    let json: serde_json::Value = serde_json::from_str(&text).expect("the router sends JSON");
    let h = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
    shared.received.lock().unwrap().push(Received {
        path: path.to_string(),
        model: json["model"].as_str().unwrap_or_default().to_string(),
        authorization: h("authorization"),
        x_api_key: h("x-api-key"),
        anthropic_version: h("anthropic-version"),
        anthropic_beta: h("anthropic-beta"),
        body: text,
    });
    match shared.behavior {
        Behavior::Fail(status) => {
            let status = StatusCode::from_u16(status).unwrap();
            let message = format!("{} failed on purpose", shared.name);
            let error = if path.starts_with("messages") {
                serde_json::json!({"type": "error", "error": {"type": "api_error", "message": message}})
            } else {
                serde_json::json!({"error": {
                    "message": message,
                    "type": "fake_error",
                    "code": status.as_u16().to_string(),
                }})
            };
            Err((status, axum::Json(error)).into_response())
        }
        Behavior::Hang(t) => {
            tokio::time::sleep(t).await;
            Ok(json)
        }
        Behavior::Answer => Ok(json),
    }
}

async fn responses(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let json = match receive(&shared, "responses", &headers, &body).await {
        Ok(j) => j,
        Err(r) => return r,
    };
    let model = json["model"].as_str().unwrap_or_default().to_string();
    let text = format!("{} answered with {model}", shared.name);
    if json["stream"].as_bool() == Some(true) {
        let events = [
            (
                "response.created",
                serde_json::json!({"response": {"id": "resp_fake", "model": model}}),
            ),
            (
                "response.output_text.delta",
                serde_json::json!({"delta": text}),
            ),
            (
                "response.completed",
                serde_json::json!({"response": {"id": "resp_fake", "model": model}}),
            ),
        ];
        return sse(&events);
    }
    axum::Json(serde_json::json!({
        "id": "resp_fake",
        "object": "response",
        "model": model,
        "output": [{"type": "message", "role": "assistant",
                    "content": [{"type": "output_text", "text": text}]}],
    }))
    .into_response()
}

async fn messages(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let json = match receive(&shared, "messages", &headers, &body).await {
        Ok(j) => j,
        Err(r) => return r,
    };
    let model = json["model"].as_str().unwrap_or_default().to_string();
    let text = format!("{} answered with {model}", shared.name);
    if json["stream"].as_bool() == Some(true) {
        let events = [
            (
                "message_start",
                serde_json::json!({"message": {"id": "msg_fake", "model": model}}),
            ),
            (
                "content_block_delta",
                serde_json::json!({"index": 0, "delta": {"type": "text_delta", "text": text}}),
            ),
            ("message_stop", serde_json::json!({})),
        ];
        return sse(&events);
    }
    (
        [("request-id", "upstream-msg-1")],
        axum::Json(serde_json::json!({
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
        })),
    )
        .into_response()
}

async fn count_tokens(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match receive(&shared, "messages/count_tokens", &headers, &body).await {
        Ok(_) => axum::Json(serde_json::json!({"input_tokens": 7})).into_response(),
        Err(r) => r,
    }
}

/// Named server-sent events, all at once.
fn sse(events: &[(&str, serde_json::Value)]) -> Response {
    let mut text = String::new();
    for (name, data) in events {
        let mut data = data.clone();
        data["type"] = (*name).into();
        text.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    }
    ([("content-type", "text/event-stream")], text).into_response()
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json = match receive(&shared, "chat/completions", &headers, &body).await {
        Ok(j) => j,
        Err(r) => return r,
    };
    let model = json["model"].as_str().unwrap_or_default().to_string();
    let content = format!("{} answered with {model}", shared.name);
    if json["stream"].as_bool() == Some(true) {
        return stream(shared, model);
    }
    (
        [
            ("x-request-id", "upstream-req-1"),
            ("openai-processing-ms", "3"),
        ],
        axum::Json(serde_json::json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
                "logprobs": null
            }],
            "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
        })),
    )
        .into_response()
}

fn chunk(model: &str, content: Option<&str>) -> Bytes {
    let delta = match content {
        Some(c) => serde_json::json!({"role": "assistant", "content": c}),
        None => serde_json::json!({}),
    };
    let finish = if content.is_some() {
        serde_json::Value::Null
    } else {
        "stop".into()
    };
    let c = serde_json::json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
    });
    Bytes::from(format!("data: {c}\n\n"))
}

fn stream(shared: Arc<Shared>, model: String) -> Response {
    let gate = shared.chunks.clone();
    let body = futures_util::stream::unfold(0usize, move |i| {
        let gate = gate.clone();
        let model = model.clone();
        async move {
            if i > STREAM_CHUNKS + 1 {
                return None;
            }
            if i > 0 {
                gate.acquire().await.expect("the gate stays open").forget();
            }
            let bytes = match i {
                i if i < STREAM_CHUNKS => chunk(&model, Some(&format!("part{i} "))),
                i if i == STREAM_CHUNKS => chunk(&model, None),
                _ => Bytes::from_static(b"data: [DONE]\n\n"),
            };
            Some((Ok::<_, std::io::Error>(bytes), i + 1))
        }
    });
    (
        [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}
