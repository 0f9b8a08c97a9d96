//! The routing API: `POST /v1/route` (a query or a chat, answered with the full decision),
//! `GET /v1/models` (`auto` and the tiers, in OpenAI's list format) and `POST /v1/examples`
//! (validated, persisted atomically, then routable without a restart). Also the reading of
//! OpenAI-style `messages` into a [`Query`], shared with the proxy.

use axum::extract::State;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::session::session_key;
use super::{auth, ApiError, ApiJson, AppState};
use crate::batcher::{ContextRule, Query};
use crate::config::UpstreamKind;
use crate::corpus::{parse_new_examples, update_examples, Example};
use crate::router::{Decision, SyncReport};

/// `POST /v1/route` body: `query` or `messages`, not both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteRequest {
    /// The text to route.
    #[serde(default)]
    #[schema(
        example = "Prove that there are infinitely many primes.",
        pattern = "\\S",
        nullable = false
    )]
    query: Option<String>,
    /// An OpenAI-style chat: the latest user turn is routed, earlier ones are context.
    #[serde(default)]
    #[schema(nullable = false)]
    messages: Option<Vec<Message>>,
    /// Overrides `routing.quality_target` for this request, in [0, 1].
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 1.0)]
    quality_target: Option<f32>,
}

/// One chat message as far as routing cares; other fields (name, tool calls...) are ignored.
/// The same shape reads Anthropic messages and Responses input items; items without a role
/// (tool outputs, reasoning) are not user turns.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Message {
    /// `user` turns are read; `system`, `assistant`, `tool` and the rest are not.
    #[serde(default)]
    #[schema(example = "user")]
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

/// A message's content: a string or a list of parts, of which only text parts are read
/// (`text`; the Responses API's `input_text`). Images, tool results and the rest are not.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

/// A content part; only `text` and `input_text` parts are read.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

impl Message {
    fn text(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => parts
                .iter()
                .filter(|p| p.kind == "text" || p.kind == "input_text")
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// The routing query of a chat: its latest user turn, with earlier user turns as context
/// (see [`Query::conversation`]). System, assistant and tool messages are not read, nor are
/// user turns that carry no text.
pub fn conversation(messages: &[Message], rule: ContextRule) -> Result<Query, ApiError> {
    // A user turn without text (only tool results or images, as in an agent's tool loop) is
    // not a turn the router can read: the latest user turn *with text* is the query.
    let turns: Vec<String> = messages
        .iter()
        .filter(|m| m.role == "user")
        .map(Message::text)
        .filter(|t| !t.trim().is_empty())
        .collect();
    if turns.is_empty() {
        return Err(ApiError::bad_request(
            "missing_query",
            "`messages` has no user message with text to route on",
        ));
    }
    // User text made only of control, zero-width or BOM characters: the same refusal as an
    // empty `query`.
    Ok(Query::conversation(&turns, rule)?)
}

/// A `Server-Timing` header: each phase's duration in milliseconds, e.g.
/// `route;dur=9.812, upstream;dur=0.105`.
pub fn server_timing(phases: &[(&str, Duration)]) -> Option<(HeaderName, HeaderValue)> {
    let value = phases
        .iter()
        .map(|(name, d)| format!("{name};dur={:.3}", d.as_secs_f64() * 1e3))
        .collect::<Vec<_>>()
        .join(", ");
    let value = HeaderValue::from_str(&value).ok()?;
    Some((HeaderName::from_static("server-timing"), value))
}

/// The `x-router-*` headers of a decision.
pub fn decision_headers(tier: &str, model: &str, confidence: f32) -> HeaderMap {
    let mut h = HeaderMap::new();
    // Tier and model names come from the config; a name that is not a valid header value is
    // left out rather than failing the request.
    if let Ok(v) = HeaderValue::from_str(tier) {
        h.insert("x-router-tier", v);
    }
    if let Ok(v) = HeaderValue::from_str(model) {
        h.insert("x-router-model", v);
    }
    h.insert(
        "x-router-confidence",
        HeaderValue::from_str(&format!("{confidence:.4}")).expect("a number is a header value"),
    );
    h
}

/// Routes a query or a chat: the chosen tier and model, the expected quality per tier, the
/// neighbours the vote was based on, and the reason.
#[utoipa::path(
    post, path = "/v1/route", tag = "routing",
    request_body = RouteRequest,
    params(SessionHeader),
    responses(
        (status = 200, description = "The decision", body = Decision, headers(
            ("x-router-tier" = String, description = "The chosen tier"),
            ("x-router-model" = String, description = "Its model"),
            ("x-router-confidence" = String, description = "The decision's confidence"),
            ("x-router-session-tier" = String, description = "The session's tier after this request, when it named one"),
        )),
    ),
    security((), ("bearer" = []), ("api_key" = [])),
)]
pub async fn route(
    State(state): State<AppState>,
    request_headers: HeaderMap,
    ApiJson(req): ApiJson<RouteRequest>,
) -> Result<Response, ApiError> {
    let query = match (req.query, req.messages) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "ambiguous_query",
                "give `query` or `messages`, not both",
            ))
        }
        (Some(q), None) => Query::text(&q)?,
        (None, Some(messages)) => conversation(&messages, state.context_rule())?,
        (None, None) => {
            return Err(ApiError::bad_request(
                "missing_query",
                "the body needs `query` (a string) or `messages` (an OpenAI-style chat)",
            ))
        }
    };
    let id = super::request_id(&request_headers);
    let session = session_key(&request_headers, None, false)
        .map_err(|m| ApiError::bad_request("invalid_session", m))?;
    let decided = state
        .decide(&id, "route", query, req.quality_target, session.as_deref())
        .await?;
    let mut d: Decision = decided.decision;
    let max = state.0.neighbor_text_chars;
    for n in &mut d.neighbors {
        if let Some((cut, _)) = n.text.char_indices().nth(max) {
            n.text.truncate(cut);
            n.text.push('…');
        }
    }
    let mut headers = decision_headers(&d.tier, &d.model, d.confidence);
    headers.extend(server_timing(&[("route", decided.took)]));
    if let Some(v) = decided
        .session_tier
        .as_deref()
        .and_then(|t| HeaderValue::from_str(t).ok())
    {
        headers.insert("x-router-session-tier", v);
    }
    Ok((headers, Json(d)).into_response())
}

/// `x-session-id`: requests of one session never go to a lower tier than it has used.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Read from the headers; declared for the OpenAPI document.
pub struct SessionHeader {
    /// Up to 256 visible ASCII characters.
    #[param(rename = "x-session-id")]
    x_session_id: Option<String>,
}

/// `GET /v1/models`: `auto` and the tiers, in OpenAI's list format.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    #[schema(example = "list")]
    object: &'static str,
    data: Vec<ModelEntry>,
}

/// A model the proxy accepts: `auto` (the router chooses) or a tier.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelEntry {
    id: String,
    #[schema(example = "model")]
    object: &'static str,
    /// Unix seconds: when this server started.
    created: u64,
    owned_by: &'static str,
    /// The tier's own model; `null` for `auto`.
    upstream_model: Option<String>,
    /// Where the tier is forwarded: its own upstream first, then its alternates.
    served_as: Vec<ServedAs>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServedAs {
    model: String,
    upstream: String,
    kind: UpstreamKind,
}

/// Lists `auto` and the tiers, with the upstreams each is served on.
#[utoipa::path(
    get, path = "/v1/models", tag = "proxy",
    responses((status = 200, description = "The models", body = ModelList)),
    security((), ("bearer" = []), ("api_key" = [])),
)]
pub async fn models(State(state): State<AppState>) -> Json<ModelList> {
    let created = state.0.created;
    let entry = |id: &str, model: Option<&str>, served_as: Vec<ServedAs>| ModelEntry {
        id: id.to_string(),
        object: "model",
        created,
        owned_by: "model-router",
        upstream_model: model.map(String::from),
        served_as,
    };
    let mut data = vec![entry("auto", None, Vec::new())];
    data.extend(state.tiers().iter().enumerate().map(|(i, t)| {
        let served = state
            .targets(i)
            .iter()
            .map(|x| ServedAs {
                model: x.model.clone(),
                upstream: x.upstream.name.clone(),
                kind: x.upstream.kind,
            })
            .collect();
        entry(&t.name, Some(&t.model), served)
    }));
    Json(ModelList {
        object: "list",
        data,
    })
}

/// `POST /v1/examples` body: examples in the examples-file format.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddExamples {
    /// Each checked like a line of the examples file (line N = the Nth example).
    #[schema(value_type = Vec<Example>, min_items = 1)]
    examples: Vec<serde_json::Value>,
}

/// How `POST /v1/examples` names its lines in errors.
const EXAMPLES_SOURCE: &str = "`examples` (line N = the Nth example)";

/// `POST /v1/examples` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExamplesAdded {
    /// Examples added by this request.
    added: usize,
    /// Examples in the index now.
    examples: usize,
}

/// Adds examples: checked against the file and the index, persisted atomically, then
/// routable. Needs client keys to be configured.
#[utoipa::path(
    post, path = "/v1/examples", tag = "examples",
    request_body = AddExamples,
    responses(
        (status = 201, description = "Added", body = ExamplesAdded),
        (status = 403, description = "No client keys are configured: adding is disabled", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = [])),
)]
pub async fn add_examples(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<AddExamples>,
) -> Result<Response, ApiError> {
    if !auth::has_keys(&state) {
        return Err(ApiError::forbidden(
            "examples_disabled",
            "adding examples needs client API keys: set the variable that server.api_keys_env names",
        ));
    }
    let engine = state.engine()?;
    if body.examples.is_empty() {
        return Err(ApiError::bad_request("no_examples", "`examples` is empty"));
    }
    // One JSON object per line, so the file format's validation (and its line numbers, here
    // positions in the list) applies unchanged.
    let lines: Vec<String> = body.examples.iter().map(|v| v.to_string()).collect();
    let _one_at_a_time = state.adding().lock().await;
    let added = match state.replica() {
        Some(replica) => {
            // The store checks ids against every replica's writes; this checks the rest.
            let examples = parse_new_examples(
                &lines.join("\n"),
                state.tiers(),
                &engine.router.ids(),
                &state.example_limits(),
            )
            .map_err(|errors| {
                ApiError::from(crate::error::Error::InvalidLines {
                    source_name: EXAMPLES_SOURCE.into(),
                    errors,
                })
            })?;
            let added = examples.len();
            replica.write(&engine.router, examples).await?;
            added
        }
        None => {
            // Checked against the file and the index, persisted first: once the client hears
            // 201 the examples survive a restart.
            let path = state.examples_path().to_path_buf();
            let tiers = state.tiers().clone();
            let indexed = engine.router.ids();
            let limits = state.example_limits();
            let examples = tokio::task::spawn_blocking(move || {
                update_examples(&path, &tiers, |set| {
                    set.set_limits(limits);
                    set.add_lines(&lines.join("\n"), EXAMPLES_SOURCE, &indexed)
                })
            })
            .await
            .map_err(ApiError::internal)??;
            let added = examples.len();
            // Embedding happens outside the index lock: routing goes on meanwhile.
            let router = engine.router.clone();
            tokio::task::spawn_blocking(move || router.add(examples))
                .await
                .map_err(ApiError::internal)??;
            added
        }
    };
    let total = engine.router.len();
    state.metrics().examples.set(total as i64);
    tracing::info!(added, total, "examples added");
    Ok((
        StatusCode::CREATED,
        Json(ExamplesAdded {
            added,
            examples: total,
        }),
    )
        .into_response())
}

/// `POST /v1/reload` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Reloaded {
    #[serde(flatten)]
    report: SyncReport,
    /// Examples in the index now.
    examples: usize,
}

/// `POST /v1/reload`: brings the index up to the examples file (after an `ingest` by another
/// process, or an edit): new examples become routable, changed labels apply. Read under the
/// file's lock, so a writer is never seen half-way.
#[utoipa::path(
    post, path = "/v1/reload", tag = "examples",
    responses(
        (status = 200, description = "What changed", body = Reloaded),
        (status = 403, description = "No client keys are configured: reloading is disabled", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = [])),
)]
pub async fn reload(State(state): State<AppState>) -> Result<Response, ApiError> {
    if !auth::has_keys(&state) {
        return Err(ApiError::forbidden(
            "examples_disabled",
            "reloading examples needs client API keys: set the variable that server.api_keys_env names",
        ));
    }
    let engine = state.engine()?;
    let _one_at_a_time = state.adding().lock().await;
    if let Some(replica) = state.replica() {
        let added = replica
            .catch_up(&engine.router)
            .await
            .map_err(super::replica::store_error)?;
        let total = engine.router.len();
        state.metrics().examples.set(total as i64);
        return Ok(Json(Reloaded {
            report: SyncReport {
                added,
                ..SyncReport::default()
            },
            examples: total,
        })
        .into_response());
    }
    let path = state.examples_path().to_path_buf();
    let tiers = state.tiers().clone();
    let router = engine.router.clone();
    let report = tokio::task::spawn_blocking(move || {
        let examples = update_examples(&path, &tiers, |set| Ok(set.examples().cloned().collect()))?;
        router.sync(examples)
    })
    .await
    .map_err(ApiError::internal)??;
    let total = engine.router.len();
    state.metrics().examples.set(total as i64);
    tracing::info!(?report, total, "examples reloaded");
    Ok(Json(Reloaded {
        report,
        examples: total,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_on_user_turns_only() {
        let messages: Vec<Message> = serde_json::from_value(serde_json::json!([
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer", "tool_calls": []},
            {"role": "user", "content": [
                {"type": "text", "text": "look at"},
                {"type": "image_url", "image_url": {"url": "http://x"}},
                {"type": "text", "text": "this"}
            ]},
            {"role": "tool", "content": "tool output", "tool_call_id": "t1"}
        ]))
        .unwrap();
        let rule = ContextRule {
            turns: 1,
            weight: 0.5,
        };
        let q = conversation(&messages, rule).unwrap();
        let texts: Vec<&str> = q.parts().iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(texts, ["look at\nthis", "first question"]);
        let only_system: Vec<Message> =
            serde_json::from_value(serde_json::json!([{"role": "system", "content": "x"}]))
                .unwrap();
        assert_eq!(
            conversation(&only_system, rule).unwrap_err().code,
            "missing_query"
        );
    }
}
