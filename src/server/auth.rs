//! Key auth for the `/v1` routes (`Authorization: Bearer`, or `x-api-key` as Anthropic's SDK
//! sends it): the tokens come from the variable that
//! `server.api_keys_env` names (comma-separated); with none configured the API is open.
//! Tokens are compared in constant time. The client's key is only ever checked here: the
//! proxy sends each upstream its own key.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;

use super::{ApiError, AppState};

pub async fn require_key(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let keys = &state.0.api_keys;
    if keys.is_empty() {
        return Ok(next.run(req).await);
    }
    // `Authorization: Bearer <key>` (OpenAI clients; the scheme is case-insensitive), or
    // `x-api-key: <key>` (Anthropic clients).
    let headers = req.headers();
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(rest)
        })
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim);
    match token {
        None => Err(ApiError::unauthorized(
            "missing_api_key",
            "this server needs an API key: send `Authorization: Bearer <key>` (or `x-api-key: \
             <key>`)",
        )),
        Some(t) if keys.iter().any(|k| same(k.as_bytes(), t.as_bytes())) => Ok(next.run(req).await),
        Some(_) => Err(ApiError::unauthorized(
            "invalid_api_key",
            "the API key is not valid for this server",
        )),
    }
}

/// Whether client keys are configured (live examples need them).
pub(crate) fn has_keys(state: &AppState) -> bool {
    !state.0.api_keys.is_empty()
}

/// Constant-time equality (the length is not secret).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn compares_whole_tokens() {
        assert!(super::same(b"abc", b"abc"));
        assert!(!super::same(b"abc", b"abd"));
        assert!(!super::same(b"abc", b"abcd"));
        assert!(!super::same(b"", b"a"));
    }
}
