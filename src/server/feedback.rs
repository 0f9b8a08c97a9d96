//! `POST /v1/feedback`: how a routed request went, by its decision id. The decision is found in
//! memory or in the decision log, the feedback becomes (or merges into) the example
//! `fb-<decision id>` through the one ingest path, is persisted atomically, then indexed live,
//! so the next similar query cites it. Authorised like `/v1/examples`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::{auth, ApiError, ApiJson, AppState};
use crate::corpus::{update_examples, ExampleSet, Label};
use crate::error::Error;
use crate::feedback::{apply, Applied, Feedback};

/// `POST /v1/feedback` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeedbackResult {
    /// The example the feedback became, `fb-<decision id>`.
    id: Option<String>,
    /// The decision's id.
    decision: String,
    /// `added`, `merged` or `unchanged`.
    #[schema(example = "added")]
    result: &'static str,
    /// The example's label now: `{tier: score}`, or `{"tier": name}`.
    #[schema(value_type = Object)]
    outcomes: serde_json::Value,
    /// Examples in the index now.
    examples: usize,
}

/// How a routed request went, by its decision id: becomes (or merges into) the example
/// `fb-<decision id>`, persisted, then routable. Exactly one of `outcomes`, `tier`, `score`.
#[utoipa::path(
    post, path = "/v1/feedback", tag = "examples",
    request_body = Feedback,
    responses(
        (status = 201, description = "A new example", body = FeedbackResult),
        (status = 200, description = "Merged into the decision's example, or unchanged", body = FeedbackResult),
        (status = 403, description = "No client keys are configured: feedback is disabled", body = ErrorBody),
        (status = 404, description = "`unknown_decision`: no such decision is kept here", body = ErrorBody),
        (status = 409, description = "`feedback_conflict`: contradicts earlier feedback", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = [])),
)]
pub async fn feedback(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Feedback>,
) -> Result<Response, ApiError> {
    if !auth::has_keys(&state) {
        return Err(ApiError::forbidden(
            "examples_disabled",
            "feedback adds examples, which needs client API keys: set the variable that \
             server.api_keys_env names",
        ));
    }
    let count = |result: &str| state.metrics().feedback.with_label_values(&[result]).inc();
    let engine = state.engine()?;
    let Some(decision) = state.find_decision(&body.id).await? else {
        count("unknown_decision");
        return Err(ApiError::not_found_as(
            "unknown_decision",
            format!(
                "no decision `{}` is known here: the server keeps {}",
                body.id,
                state.decisions_kept()
            ),
        ));
    };
    let outcomes = body
        .outcomes(state.tiers(), &decision.tier)
        .inspect_err(|_| {
            count("invalid");
        })?;
    let _one_at_a_time = state.adding().lock().await;
    let tiers = state.tiers().clone();
    let record = decision.clone();
    let limits = state.example_limits();
    let merge = move |set: &mut ExampleSet| {
        set.set_limits(limits);
        apply(set, &record, outcomes)
    };
    let done = match state.replica() {
        // With a store: merged into the example as committed, under the store's write lock,
        // with the feedback recorded in the same transaction; every replica follows.
        Some(replica) => {
            let sent = serde_json::to_value(&body).expect("feedback serialises");
            let store_tiers = tiers.clone();
            replica
                .write_feedback(&engine.router, &decision, &sent, move |current| {
                    let earlier: Vec<_> = current.into_iter().collect();
                    let mut set = ExampleSet::from_examples(&earlier, &store_tiers)?;
                    merge(&mut set)
                })
                .await
                .map(|w| (w.example, w.applied))
        }
        None => {
            let path = state.examples_path().to_path_buf();
            let done = tokio::task::spawn_blocking(move || update_examples(&path, &tiers, merge))
                .await
                .map_err(ApiError::internal)?;
            if let Ok((example, applied)) = &done {
                if *applied != Applied::Unchanged {
                    let router = engine.router.clone();
                    let indexed = example.clone();
                    tokio::task::spawn_blocking(move || router.upsert(indexed))
                        .await
                        .map_err(ApiError::internal)??;
                }
            }
            done
        }
    };
    let (example, applied) = match done {
        Ok(done) => done,
        Err(e @ Error::FeedbackConflict { .. }) => {
            count("conflict");
            return Err(e.into());
        }
        Err(e) => return Err(super::replica::store_error(e)),
    };
    count(applied.as_str());
    let total = engine.router.len();
    state.metrics().examples.set(total as i64);
    tracing::info!(decision = %decision.id, result = applied.as_str(), "feedback");
    let outcomes = match &example.label {
        Label::Outcomes { outcomes } => serde_json::json!(outcomes),
        Label::Tier { tier } => serde_json::json!({ "tier": tier }),
    };
    let status = if applied == Applied::Added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(FeedbackResult {
            id: example.id,
            decision: decision.id.clone(),
            result: applied.as_str(),
            outcomes,
            examples: total,
        }),
    )
        .into_response())
}
