//! Forwarding: OpenAI `POST /v1/chat/completions` and `POST /v1/responses`, Anthropic
//! `POST /v1/messages` and `POST /v1/messages/count_tokens`, each only to upstreams of its own
//! kind (no protocol translation: a tier without one is a `400 upstream_protocol_mismatch`).
//!
//! `model: "auto"` routes on the user's text (latest user turn, earlier ones as context; for
//! responses, `input`); a tier name forces that tier; a model a tier is served as passes
//! through to that tier; anything else is a 400. A session (`x-session-id`) only escalates. The body is kept as raw JSON members in order and only `model` is
//! rewritten, so every other field (tools, temperature, response_format...) reaches the
//! upstream byte for byte. The upstream gets its own key, never the client's. The response,
//! streamed or not, is relayed chunk by chunk as it arrives, with `x-router-tier`,
//! `x-router-model` and `x-router-confidence`. A connect error, a timeout or a 5xx before the
//! first byte moves to the next tier up when `server.retry_next_tier` is set, and is otherwise a
//! fast 502/504.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::route::{conversation, decision_headers, server_timing, Message, SessionHeader};
use super::session::session_key;
use super::{ApiError, ApiJson, AppState, Metrics, Upstream};
use crate::batcher::{ContextRule, Query};
use crate::config::UpstreamKind;

/// A JSON object kept as its members' raw text, in their order.
#[derive(Debug)]
pub struct RawObject(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = RawObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawObject, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push(member);
                }
                Ok(RawObject(members))
            }
        }
        d.deserialize_map(Members)
    }
}

impl RawObject {
    fn get(&self, key: &str) -> Option<&RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| &**v)
    }

    /// The object with `model` set (first, if it was missing), every other member unchanged.
    fn with_model(&self, model: &str) -> Vec<u8> {
        let model = serde_json::to_string(model).expect("a string serializes");
        let mut out = String::with_capacity(
            64 + self
                .0
                .iter()
                .map(|(k, v)| k.len() + v.get().len() + 4)
                .sum::<usize>(),
        );
        out.push('{');
        let mut first = true;
        let mut put = |out: &mut String, key: &str, value: &str| {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&serde_json::to_string(key).expect("a string serializes"));
            out.push(':');
            out.push_str(value);
        };
        if self.get("model").is_none() {
            put(&mut out, "model", &model);
        }
        for (k, v) in &self.0 {
            put(&mut out, k, if k == "model" { &model } else { v.get() });
        }
        out.push('}');
        out.into_bytes()
    }
}

/// The APIs the router forwards, each to upstreams of its own kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// OpenAI `POST /v1/chat/completions`.
    Chat,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// Anthropic `POST /v1/messages/count_tokens`.
    CountTokens,
}

impl Api {
    pub const ALL: [Api; 4] = [Api::Chat, Api::Responses, Api::Messages, Api::CountTokens];

    pub fn kind(self) -> UpstreamKind {
        match self {
            Api::Chat | Api::Responses => UpstreamKind::OpenAI,
            Api::Messages | Api::CountTokens => UpstreamKind::Anthropic,
        }
    }

    /// The path below an upstream's base URL.
    fn path(self) -> &'static str {
        match self {
            Api::Chat => "chat/completions",
            Api::Responses => "responses",
            Api::Messages => "messages",
            Api::CountTokens => "messages/count_tokens",
        }
    }

    /// The `endpoint` of the decision log.
    fn endpoint(self) -> &'static str {
        match self {
            Api::Chat => "chat",
            Api::Responses => "responses",
            Api::Messages => "messages",
            Api::CountTokens => "count_tokens",
        }
    }

    /// The router's own path for it.
    pub fn route(self) -> &'static str {
        match self {
            Api::Chat => "/v1/chat/completions",
            Api::Responses => "/v1/responses",
            Api::Messages => "/v1/messages",
            Api::CountTokens => "/v1/messages/count_tokens",
        }
    }

    /// What the router routes on: the user's text, by the multi-turn rule.
    fn query(self, body: &RawObject, rule: ContextRule) -> Result<Query, ApiError> {
        let field = match self {
            Api::Responses => "input",
            _ => "messages",
        };
        let Some(raw) = body.get(field) else {
            return Err(ApiError::bad_request(
                "missing_query",
                format!("`{field}` is required"),
            ));
        };
        if self == Api::Responses {
            if let Ok(text) = serde_json::from_str::<String>(raw.get()) {
                return Ok(Query::text(&text)?);
            }
        }
        let messages: Vec<Message> = serde_json::from_str(raw.get()).map_err(|e| {
            ApiError::bad_request(
                "invalid_messages",
                format!("`{field}` is not a list of messages: {e}"),
            )
        })?;
        conversation(&messages, rule)
    }

    /// The body's own user id, a session key when `server.session_from_body` is set.
    fn body_user(self, body: &RawObject) -> Option<String> {
        match self {
            Api::Chat | Api::Responses => body
                .get("user")
                .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok()),
            Api::Messages | Api::CountTokens => body.get("metadata").and_then(|raw| {
                serde_json::from_str::<serde_json::Value>(raw.get())
                    .ok()?
                    .get("user_id")?
                    .as_str()
                    .map(String::from)
            }),
        }
    }
}

// What the router reads of each forwarded body, for the OpenAPI document: the handlers keep
// the body as a [`RawObject`] and read these members from it (`model` always; the messages or
// input when routing on `auto`); every other member passes through unread.

/// An OpenAI chat completion request. Other members pass through to the upstream unchanged.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ChatRequest {
    /// `auto` (the router chooses), a tier name, or a model a tier is served as.
    #[schema(example = "auto")]
    model: String,
    messages: Vec<Message>,
    /// Relayed as server-sent events when true.
    stream: Option<bool>,
}

/// An OpenAI Responses request. Other members pass through to the upstream unchanged.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ResponsesRequest {
    /// `auto` (the router chooses), a tier name, or a model a tier is served as.
    #[schema(example = "auto")]
    model: String,
    input: ResponsesInput,
    stream: Option<bool>,
}

/// A string, or input items (user items' `input_text` parts are routed on).
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum ResponsesInput {
    Text(String),
    Items(Vec<Message>),
}

/// An Anthropic Messages (or count_tokens) request. Other members (`max_tokens`, `system`,
/// tools...) pass through to the upstream unchanged.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MessagesRequest {
    /// `auto` (the router chooses), a tier name, or a model a tier is served as.
    #[schema(example = "auto")]
    model: String,
    messages: Vec<Message>,
    stream: Option<bool>,
}

/// One server-sent event of a streamed answer, as the upstream sent it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SseEvent {
    event: Option<String>,
    data: String,
    id: Option<String>,
    retry: Option<u64>,
}

/// Forwards an OpenAI chat completion to the chosen tier's OpenAI-kind upstream.
#[utoipa::path(
    post, path = "/v1/chat/completions", tag = "proxy",
    request_body = ChatRequest,
    params(SessionHeader),
    responses(
        (status = 200, description = "The upstream's answer, relayed as it arrives", content(
            (Object = "application/json"),
            (SseEvent = "text/event-stream"),
        ), headers(
            ("x-router-tier" = String, description = "The tier it went to"),
            ("x-router-model" = String, description = "The model it was sent as"),
        )),
        (status = "default", description = "The upstream's own error, relayed with its status"),
    ),
    security((), ("bearer" = []), ("api_key" = [])),
)]
pub async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RawObject>,
) -> Result<Response, ApiError> {
    proxy(state, headers, body, Api::Chat).await
}

/// Forwards an OpenAI Responses request to the chosen tier's OpenAI-kind upstream.
#[utoipa::path(
    post, path = "/v1/responses", tag = "proxy",
    request_body = ResponsesRequest,
    params(SessionHeader),
    responses(
        (status = 200, description = "The upstream's answer, relayed as it arrives", content(
            (Object = "application/json"),
            (SseEvent = "text/event-stream"),
        )),
        (status = "default", description = "The upstream's own error, relayed with its status"),
    ),
    security((), ("bearer" = []), ("api_key" = [])),
)]
pub async fn responses(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RawObject>,
) -> Result<Response, ApiError> {
    proxy(state, headers, body, Api::Responses).await
}

/// Forwards an Anthropic Messages request to the chosen tier's Anthropic-kind upstream.
#[utoipa::path(
    post, path = "/v1/messages", tag = "proxy",
    request_body = MessagesRequest,
    params(SessionHeader),
    responses(
        (status = 200, description = "The upstream's answer, relayed as it arrives", content(
            (Object = "application/json"),
            (SseEvent = "text/event-stream"),
        )),
        (status = "default", description = "The upstream's own error, relayed with its status"),
    ),
    security((), ("bearer" = []), ("api_key" = [])),
)]
pub async fn messages(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RawObject>,
) -> Result<Response, ApiError> {
    proxy(state, headers, body, Api::Messages).await
}

/// Forwards an Anthropic token count to the chosen tier's Anthropic-kind upstream.
#[utoipa::path(
    post, path = "/v1/messages/count_tokens", tag = "proxy",
    request_body = MessagesRequest,
    params(SessionHeader),
    responses(
        (status = 200, description = "The upstream's count", body = Object),
        (status = "default", description = "The upstream's own error, relayed with its status"),
    ),
    security((), ("bearer" = []), ("api_key" = [])),
)]
pub async fn count_tokens(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RawObject>,
) -> Result<Response, ApiError> {
    proxy(state, headers, body, Api::CountTokens).await
}

/// One forwarding request: pick the tier (`auto` routes; a tier name or a served model forces
/// it), then forward.
async fn proxy(
    state: AppState,
    headers: HeaderMap,
    body: RawObject,
    api: Api,
) -> Result<Response, ApiError> {
    let model: String = match body.get("model") {
        None => {
            return Err(ApiError::bad_request(
                "missing_model",
                "`model` is required: use `auto` to let the router choose",
            ))
        }
        Some(raw) => serde_json::from_str(raw.get())
            .map_err(|_| ApiError::bad_request("invalid_model", "`model` must be a string"))?,
    };
    let stream = body
        .get("stream")
        .and_then(|raw| serde_json::from_str::<bool>(raw.get()).ok())
        .unwrap_or(false);
    let tiers = state.tiers();
    let chosen = if model == "auto" {
        let query = api.query(&body, state.context_rule())?;
        let (decision, took, session_tier) = if api == Api::CountTokens {
            (state.peek(query).await?, None, None)
        } else {
            let session = session_key(
                &headers,
                api.body_user(&body),
                state.settings().session_from_body,
            )
            .map_err(|m| ApiError::bad_request("invalid_session", m))?;
            let id = super::request_id(&headers);
            let d = state
                .decide(
                    &id,
                    api.endpoint(),
                    query,
                    quality_target(&headers)?,
                    session.as_deref(),
                )
                .await?;
            (d.decision, Some(d.took), d.session_tier)
        };
        let tier = tiers.position(&decision.tier).ok_or_else(|| {
            ApiError::internal(format!("decided on unknown tier {}", decision.tier))
        })?;
        Chosen {
            tier,
            confidence: decision.confidence,
            decided_in: took,
            session_tier,
        }
    } else {
        // A tier's name, or a model some tier is served as (on an upstream of this kind).
        let tier = tiers.position(&model).or_else(|| {
            (0..tiers.len()).find(|&t| state.models_for(t, api.kind()).contains(&model.as_str()))
        });
        let Some(tier) = tier else {
            let names = tiers.names().join(", ");
            let models: Vec<&str> = (0..tiers.len())
                .flat_map(|t| state.models_for(t, api.kind()))
                .collect();
            return Err(ApiError::bad_request(
                "model_not_found",
                format!(
                    "the model `{model}` is not served here: use `auto`, a tier ({names}) or a \
                     tier's {} model ({})",
                    api.kind(),
                    models.join(", ")
                ),
            ));
        };
        Chosen {
            tier,
            confidence: 1.0,
            decided_in: None,
            session_tier: None,
        }
    };
    forward(&state, &headers, &body, chosen, stream, api).await
}

/// The tier a request goes to first, and how it was chosen.
struct Chosen {
    tier: usize,
    /// The decision's confidence; 1 for an explicit tier or model.
    confidence: f32,
    /// How long the decision took (`auto` only).
    decided_in: Option<Duration>,
    /// The session's tier, when the request named a session.
    session_tier: Option<String>,
}

/// `x-router-quality-target: 0.5` overrides the quality target for this request (the OpenAI
/// body has no field for it).
fn quality_target(headers: &HeaderMap) -> Result<Option<f32>, ApiError> {
    match headers.get("x-router-quality-target") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<f32>().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_quality_target",
                    "x-router-quality-target must be a number in [0, 1]",
                )
            }),
    }
}

/// Why an upstream attempt failed before its first byte.
enum Failure {
    Connect(String),
    Timeout(Duration),
    Status(StatusCode),
    Request(String),
}

impl Failure {
    fn kind(&self) -> &'static str {
        match self {
            Failure::Connect(_) => "connect",
            Failure::Timeout(_) => "timeout",
            Failure::Status(_) => "status_5xx",
            Failure::Request(_) => "request",
        }
    }

    fn into_api(self, tier: &str, upstream: &str) -> ApiError {
        match self {
            Failure::Connect(_) => ApiError::upstream(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                format!("upstream `{upstream}` (tier `{tier}`) cannot be reached"),
            ),
            Failure::Timeout(t) => ApiError::upstream(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!(
                    "upstream `{upstream}` (tier `{tier}`) did not answer within {}s",
                    t.as_secs()
                ),
            ),
            Failure::Status(s) => ApiError::upstream(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                format!("upstream `{upstream}` (tier `{tier}`) answered {s}"),
            ),
            Failure::Request(_) => ApiError::upstream(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                format!("the request to upstream `{upstream}` (tier `{tier}`) failed"),
            ),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect(e) | Failure::Request(e) => f.write_str(e),
            Failure::Timeout(t) => write!(f, "no response headers within {t:?}"),
            Failure::Status(s) => write!(f, "status {s}"),
        }
    }
}

/// Sends to the chosen tier's upstream of the request's kind, climbing to the next tier served
/// by that kind on a failure before the first byte when `retry_next_tier` is set.
async fn forward(
    state: &AppState,
    request_headers: &HeaderMap,
    body: &RawObject,
    chosen: Chosen,
    stream: bool,
    api: Api,
) -> Result<Response, ApiError> {
    let tiers = state.tiers();
    let kind = api.kind();
    let mut tier = chosen.tier;
    loop {
        let name = &tiers[tier].name;
        let Some(target) = state.target(tier, kind) else {
            let served = state.targets(tier);
            if served.is_empty() {
                return Err(ApiError::upstream(
                    StatusCode::BAD_GATEWAY,
                    "no_upstream",
                    format!("tier `{name}` has no upstream: it can be routed to but not forwarded"),
                ));
            }
            let kinds: Vec<String> = served
                .iter()
                .map(|t| format!("`{}` ({})", t.upstream.name, t.upstream.kind))
                .collect();
            return Err(ApiError::bad_request(
                "upstream_protocol_mismatch",
                format!(
                    "{} needs an upstream of kind {kind}, but tier `{name}` is served only by {}: \
                     add a [[tiers.alternates]] entry on a {kind} upstream to that tier (see \
                     docs/http.md)",
                    api.route(),
                    kinds.join(", ")
                ),
            ));
        };
        let upstream = &target.upstream;
        let model = &target.model;
        match send(
            state,
            upstream,
            request_headers,
            body.with_model(model),
            stream,
            api,
        )
        .await
        {
            Ok((response, took)) => {
                state.metrics().upstream_ok(name, took);
                let mut headers = decision_headers(name, model, chosen.confidence);
                if tier != chosen.tier {
                    if let Ok(v) = HeaderValue::from_str(&tiers[chosen.tier].name) {
                        headers.insert("x-router-fallback-from", v);
                    }
                }
                if let Some(v) = chosen
                    .session_tier
                    .as_deref()
                    .and_then(|t| HeaderValue::from_str(t).ok())
                {
                    headers.insert("x-router-session-tier", v);
                }
                let mut phases = Vec::from_iter(chosen.decided_in.map(|d| ("route", d)));
                phases.push(("upstream", took));
                headers.extend(server_timing(&phases));
                tracing::info!(tier = %name, model = %model, status = %response.status(), upstream_ms = took.as_millis() as u64, "forwarded");
                return Ok(relay(
                    response,
                    headers,
                    upstream,
                    state.0.metrics.clone(),
                    name,
                ));
            }
            Err(failure) => {
                state.metrics().upstream_error(name, failure.kind());
                tracing::warn!(tier = %name, upstream = %upstream.name, error = %failure, "upstream failed before the first byte");
                let next = state
                    .settings()
                    .retry_next_tier
                    .then(|| (tier + 1..tiers.len()).find(|&t| state.target(t, kind).is_some()))
                    .flatten();
                match next {
                    Some(up) => tier = up,
                    None => return Err(failure.into_api(name, &upstream.name)),
                }
            }
        }
    }
}

/// The `anthropic-version` sent when the client sent none.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// One attempt, up to the response headers. A 5xx is a failure; other statuses (a 400 or 429
/// from the upstream) are the upstream's answer and go back to the client as they are.
async fn send(
    state: &AppState,
    upstream: &Upstream,
    request_headers: &HeaderMap,
    body: Vec<u8>,
    stream: bool,
    api: Api,
) -> Result<(reqwest::Response, Duration), Failure> {
    let mut request = state
        .client()
        .post(format!("{}/{}", upstream.base_url, api.path()))
        .header(CONTENT_TYPE, "application/json")
        .body(body);
    if stream {
        request = request.header(ACCEPT, "text/event-stream");
    }
    match upstream.kind {
        UpstreamKind::OpenAI => {
            if let Some(key) = &upstream.api_key {
                request = request.bearer_auth(key);
            }
        }
        UpstreamKind::Anthropic => {
            if let Some(key) = &upstream.api_key {
                request = request.header("x-api-key", key);
            }
            let version = request_headers
                .get("anthropic-version")
                .cloned()
                .unwrap_or(HeaderValue::from_static(ANTHROPIC_VERSION));
            request = request.header("anthropic-version", version);
            for beta in request_headers.get_all("anthropic-beta") {
                request = request.header("anthropic-beta", beta.clone());
            }
        }
    }
    let started = Instant::now();
    let sent = request.send();
    let result = match upstream.timeout {
        Some(t) => tokio::time::timeout(t, sent)
            .await
            .map_err(|_| Failure::Timeout(t))?,
        None => sent.await,
    };
    let response = result.map_err(|e| {
        if e.is_connect() {
            Failure::Connect(e.to_string())
        } else if e.is_timeout() {
            Failure::Timeout(upstream.timeout.unwrap_or_default())
        } else {
            Failure::Request(e.to_string())
        }
    })?;
    if response.status().is_server_error() {
        return Err(Failure::Status(response.status()));
    }
    Ok((response, started.elapsed()))
}

/// Upstream response headers worth passing on (hop-by-hop and length headers are not: the body
/// is relayed as a stream).
fn forwardable(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(
        n,
        "content-type" | "cache-control" | "retry-after" | "request-id"
    ) || n.starts_with("openai-")
        || n.starts_with("anthropic-")
        || n.starts_with("x-ratelimit-")
}

/// The client's response: the upstream's status and useful headers, our `x-router-*` headers,
/// and the body relayed chunk by chunk (never collected), each chunk within the upstream's
/// timeout of the previous one.
fn relay(
    response: reqwest::Response,
    mut headers: HeaderMap,
    upstream: &Upstream,
    metrics: Arc<Metrics>,
    tier: &str,
) -> Response {
    let status = response.status();
    for (name, value) in response.headers() {
        if forwardable(name) {
            headers.append(name.clone(), value.clone());
        } else if name.as_str() == "x-request-id" {
            headers.insert("x-upstream-request-id", value.clone());
        }
    }
    let body = Body::from_stream(chunks(
        response,
        upstream.timeout,
        metrics,
        tier.to_string(),
    ));
    (status, headers, body).into_response()
}

fn chunks(
    response: reqwest::Response,
    idle: Option<Duration>,
    metrics: Arc<Metrics>,
    tier: String,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures_util::stream::unfold(Some(response.bytes_stream()), move |upstream| {
        let metrics = metrics.clone();
        let tier = tier.clone();
        async move {
            let mut upstream = upstream?;
            let next: Option<Result<Bytes, String>> = match idle {
                Some(t) => match tokio::time::timeout(t, upstream.next()).await {
                    Ok(next) => next.map(|r| r.map_err(|e| e.to_string())),
                    Err(_) => Some(Err(format!("no data for {}s", t.as_secs()))),
                },
                None => upstream.next().await.map(|r| r.map_err(|e| e.to_string())),
            };
            match next {
                None => None,
                Some(Ok(bytes)) => Some((Ok(bytes), Some(upstream))),
                Some(Err(e)) => {
                    // Headers are gone already: all we can do is cut the response short, which
                    // the client sees as an incomplete body.
                    metrics.upstream_error(&tier, "stream");
                    tracing::warn!(tier = %tier, error = %e, "upstream body failed mid-way");
                    Some((Err(std::io::Error::other(e)), None))
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_model_changes() {
        let text = r#"{"messages":[{"role":"user","content":"hi"}], "model" : "auto","temperature":0.70,"n":12345678901234567890123,"tools":[{"type":"function"}]}"#;
        let body: RawObject = serde_json::from_str(text).unwrap();
        let out = String::from_utf8(body.with_model("gpt-x")).unwrap();
        assert_eq!(
            out,
            r#"{"messages":[{"role":"user","content":"hi"}],"model":"gpt-x","temperature":0.70,"n":12345678901234567890123,"tools":[{"type":"function"}]}"#
        );
        let body: RawObject = serde_json::from_str(r#"{"a":1}"#).unwrap();
        assert_eq!(
            String::from_utf8(body.with_model("m")).unwrap(),
            r#"{"model":"m","a":1}"#
        );
        assert!(serde_json::from_str::<RawObject>("[1]").is_err());
    }
}
