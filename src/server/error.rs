//! The one place errors become HTTP responses: [`ApiError`] and its `IntoResponse`, the
//! mapping from library and batcher errors, and [`ApiJson`], a JSON extractor whose rejections
//! (body too large, invalid UTF-8, bad JSON, wrong fields) use the same OpenAI-style shape
//! `{"error": {"message", "type", "code"}}`. Internal details are logged, not returned.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

use crate::batcher::SubmitError;
use crate::error::Error;

/// An error as the client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    /// OpenAI's error `type`, e.g. `invalid_request_error`.
    pub kind: &'static str,
    /// A stable machine-readable code, e.g. `invalid_json`.
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: String) -> Self {
        ApiError {
            status,
            kind,
            code,
            message,
            retry_after: None,
        }
    }

    /// 400: the request is wrong; `code` says how.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message.into(),
        )
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            code,
            message.into(),
        )
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            code,
            message.into(),
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "not_found",
            message.into(),
        )
    }

    /// 404 with its own code, e.g. `unknown_decision`.
    pub fn not_found_as(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            code,
            message.into(),
        )
    }

    /// 409: the request contradicts what the server holds.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            code,
            message.into(),
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            "this endpoint does not accept that method".into(),
        )
    }

    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "payload_too_large",
            "the request body is larger than the server accepts (server.body_limit_bytes)".into(),
        )
    }

    /// 408: the body did not arrive within `server.body_read_timeout_secs`.
    pub fn body_timeout(after: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "body_timeout",
            format!(
                "the request body did not arrive within {}s (server.body_read_timeout_secs)",
                after.as_secs()
            ),
        )
    }

    /// 503 with Retry-After: the server is up but cannot take this request now.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                code,
                message.into(),
            )
        }
    }

    /// The same error with another status (e.g. `414`, `431` for requests too big to parse).
    pub fn with_status(self, status: StatusCode) -> Self {
        ApiError { status, ..self }
    }

    /// 502 or 504: the upstream failed; the message names it but carries nothing secret.
    pub fn upstream(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self::new(status, "upstream_error", code, message.into())
    }

    /// 500. The details go to the log (with the request's span, hence its id), not the client.
    pub fn internal(details: impl std::fmt::Display) -> Self {
        tracing::error!(error = %details, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            "internal error: the server log has the details (look for this request's x-request-id)"
                .into(),
        )
    }
}

/// The body of every error the router answers itself (OpenAI's shape).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub message: String,
    /// e.g. `invalid_request_error`, `authentication_error`, `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Stable and machine-readable, e.g. `empty_query`; the table in docs/http.md lists them.
    pub code: String,
}

/// The body of the router's own errors on the Anthropic endpoints (Anthropic's shape).
#[derive(Debug, Serialize, ToSchema)]
pub struct AnthropicErrorBody {
    /// Always `error`.
    #[serde(rename = "type")]
    #[schema(example = "error")]
    pub kind: String,
    pub error: ErrorDetail,
}

impl ApiError {
    /// The OpenAI-style JSON body, `{"error": {"message", "type", "code"}}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(ErrorBody {
            error: ErrorDetail {
                message: self.message.clone(),
                kind: self.kind.to_string(),
                code: self.code.to_string(),
            },
        })
        .expect("strings serialise")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let status = self.status;
        let retry_after = self.retry_after;
        let mut response = (status, axum::Json(body)).into_response();
        // Kept for [`anthropic_errors`], which re-renders it in Anthropic's shape.
        response.extensions_mut().insert(self);
        let headers = response.headers_mut();
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Anthropic's error `type` for a status, so its SDK raises its own error classes.
fn anthropic_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 405 | 409 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// Middleware for the Anthropic endpoints: the router's own errors (not an upstream's, which
/// are relayed as they are) in Anthropic's shape, `{"type": "error", "error": {"type",
/// "message"}}`, with our stable `code` beside them.
pub async fn anthropic_errors(req: Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(req).await;
    let Some(e) = response.extensions_mut().remove::<ApiError>() else {
        return response;
    };
    let body = AnthropicErrorBody {
        kind: "error".into(),
        error: ErrorDetail {
            message: e.message,
            kind: anthropic_type(e.status).into(),
            code: e.code.into(),
        },
    };
    let mut out = (e.status, axum::Json(body)).into_response();
    for name in [header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(v) = response.headers().get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::EmptyQuery => ApiError::bad_request("empty_query", e.to_string()),
            Error::Feedback(_) => ApiError::bad_request("invalid_feedback", e.to_string()),
            Error::FeedbackConflict { .. } => {
                ApiError::conflict("feedback_conflict", e.to_string())
            }
            Error::UnknownTier { .. } => ApiError::bad_request("unknown_tier", e.to_string()),
            Error::InvalidLines { .. } => ApiError::bad_request("invalid_examples", e.to_string()),
            other => ApiError::internal(other),
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Full { .. } | SubmitError::LongFull { .. } => ApiError::unavailable(
                "overloaded",
                format!("{e}: retry after the Retry-After delay"),
            ),
            SubmitError::Closed => ApiError::internal(e),
        }
    }
}

/// How long a request's body may take to arrive (a request extension the app sets from
/// `server.body_read_timeout_secs`; [`ApiJson`] answers `408 body_timeout` past it).
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline(pub std::time::Duration);

/// A JSON body. Unlike `axum::Json` it needs no content type (curl's `-d` sends a form type),
/// and every rejection is an [`ApiError`].
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let deadline = req.extensions().get::<BodyDeadline>().map(|d| d.0);
        let read = Bytes::from_request(req, state);
        let read = match deadline {
            Some(d) => tokio::time::timeout(d, read)
                .await
                .map_err(|_| ApiError::body_timeout(d))?,
            None => read.await,
        };
        let bytes = read.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large()
            } else {
                ApiError::bad_request("invalid_body", rejection.body_text())
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a request body: UTF-8 first, then JSON syntax, then the expected shape, each with
/// its own code.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ApiError::bad_request(
            "invalid_utf8",
            format!(
                "the body is not valid UTF-8 (first bad byte at offset {})",
                e.valid_up_to()
            ),
        )
    })?;
    serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::bad_request("invalid_request", format!("invalid request: {e}"))
        }
        _ => ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Shape {
        query: String,
    }

    #[test]
    fn body_problems_have_their_own_codes() {
        let code = |b: &[u8]| parse_json::<Shape>(b).unwrap_err().code;
        assert_eq!(code(b"{\"query\": \"a\xff\"}"), "invalid_utf8");
        assert_eq!(code(b"{\"query\": "), "invalid_json");
        assert_eq!(code(b""), "invalid_json");
        assert_eq!(code(b"{\"query\": 3}"), "invalid_request");
        assert!(parse_json::<Shape>(b"{\"query\": \"ok\"}").is_ok());
    }

    #[test]
    fn library_errors_map_to_statuses() {
        let e = ApiError::from(Error::EmptyQuery);
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "empty_query"));
        let e = ApiError::from(Error::Embed("secret detail".into()));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            !e.message.contains("secret"),
            "internal details stay in the log"
        );
        let e = ApiError::from(SubmitError::Full { capacity: 4 });
        assert_eq!(
            (e.status, e.retry_after),
            (StatusCode::SERVICE_UNAVAILABLE, Some(1))
        );
    }
}
