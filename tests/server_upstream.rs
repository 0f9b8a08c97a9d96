//! A local OpenAI-compatible upstream for the server tests: `POST /v1/chat/completions`
//! answers a chat completion naming the model it received (streamed as SSE chunks when asked),
//! and records what it received (model, Authorization, raw body). It can also fail with a
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
    pub model: String,
    pub authorization: Option<String>,
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

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let text = String::from_utf8(body.to_vec()).expect("the router sends UTF-8");
    let json: serde_json::Value = serde_json::from_str(&text).expect("the router sends JSON");
    let model = json["model"].as_str().unwrap_or_default().to_string();
    shared.received.lock().unwrap().push(Received {
        model: model.clone(),
        authorization: headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string()),
        body: text,
    });
    match shared.behavior {
        Behavior::Fail(status) => {
            let status = StatusCode::from_u16(status).unwrap();
            let error = serde_json::json!({"error": {
                "message": format!("{} failed on purpose", shared.name),
                "type": "fake_error",
                "code": status.as_u16().to_string(),
            }});
            return (status, axum::Json(error)).into_response();
        }
        Behavior::Hang(t) => tokio::time::sleep(t).await,
        Behavior::Answer => {}
    }
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
