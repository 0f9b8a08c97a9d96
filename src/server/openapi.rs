//! The HTTP API as an OpenAPI 3.1 document, `GET /openapi.json`.
//!
//! Generated from the handlers' own request and response types (`ToSchema` derives) and their
//! `#[utoipa::path]` annotations, so a field added to a type is in the document at once. The
//! errors every endpoint of a kind can answer (a bad body, auth, overload) are added here, from
//! one table, rather than repeated on each handler; the error bodies are [`ErrorBody`] (OpenAI's
//! shape) or, on the Anthropic endpoints, [`AnthropicErrorBody`].

use std::sync::OnceLock;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, Object, OpenApi as Document, Ref, ResponseBuilder, Type,
};
use utoipa::{Modify, OpenApi};

use super::error::{AnthropicErrorBody, ErrorBody};
use super::{feedback, proxy, route, AppState};
use crate::config::UpstreamKind;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "model-router",
        description = "Routes each LLM request to the cheapest model tier that answers it well: \
            a routing API, OpenAI- and Anthropic-compatible forwarding, live examples and \
            feedback. Errors the router answers itself have a stable `code`; docs/http.md \
            lists them.",
        license(name = "MIT OR Apache-2.0"),
    ),
    paths(
        route::route,
        proxy::chat_completions,
        proxy::responses,
        proxy::messages,
        proxy::count_tokens,
        route::models,
        route::add_examples,
        route::reload,
        feedback::feedback,
        super::healthz,
        super::readyz,
        super::render_metrics,
        document,
    ),
    components(schemas(ErrorBody, AnthropicErrorBody)),
    modifiers(&Auth, &CommonErrors),
    tags(
        (name = "routing", description = "Routing decisions"),
        (name = "proxy", description = "Forwarding to the chosen tier's upstream"),
        (name = "examples", description = "Growing the example set: live examples, feedback, reload"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    ),
)]
struct ApiDoc;

/// The document, with this build's version.
pub fn spec() -> Document {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

/// [`spec`] as JSON, with what the derives cannot say: `/v1/route` takes exactly one of
/// `query` and `messages` (both optional fields of its struct).
pub fn spec_json() -> Value {
    let mut doc = serde_json::to_value(spec()).expect("the document serialises");
    doc["components"]["schemas"]["RouteRequest"]["oneOf"] =
        json!([{"required": ["query"]}, {"required": ["messages"]}]);
    doc
}

/// This document, for this server: the names its configuration accepts (`model`: `auto`, the
/// tiers and the models they are served as; a label's or feedback's tier: the tiers) are
/// enumerated, so a client or a fuzzer knows them.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses(
    (status = 200, description = "The OpenAPI 3.1 document of this API", body = Object),
))]
pub async fn document(State(state): State<AppState>) -> Response {
    static GENERIC: OnceLock<Value> = OnceLock::new();
    let mut doc = GENERIC.get_or_init(spec_json).clone();
    let tiers: Vec<String> = state.tiers().iter().map(|t| t.name.clone()).collect();
    let mut models = vec!["auto".to_string()];
    for (i, tier) in state.tiers().iter().enumerate() {
        models.push(tier.name.clone());
        models.extend(state.targets(i).iter().map(|t| t.model.clone()));
    }
    let mut seen = std::collections::HashSet::new();
    models.retain(|m| seen.insert(m.clone()));
    name_the_choices(&mut doc, &models, &tiers);
    axum::Json(doc).into_response()
}

/// Enumerates `models` and `tiers` where the generic document says only "a string".
fn name_the_choices(doc: &mut Value, models: &[String], tiers: &[String]) {
    let schemas = &mut doc["components"]["schemas"];
    for name in ["ChatRequest", "ResponsesRequest", "MessagesRequest"] {
        schemas[name]["properties"]["model"]["enum"] = json!(models);
    }
    let scores = json!({"type": "number", "minimum": 0, "maximum": 1});
    let label = &mut schemas["Label"]["oneOf"];
    label[0]["properties"]["tier"]["enum"] = json!(tiers);
    label[1]["properties"]["outcomes"]["propertyNames"] = json!({ "enum": tiers });
    label[1]["properties"]["outcomes"]["additionalProperties"] = scores;
    label[1]["properties"]["outcomes"]["minProperties"] = json!(1);
    let feedback = &mut schemas["Feedback"]["properties"];
    let mut or_null = json!(tiers);
    or_null.as_array_mut().expect("an array").push(Value::Null);
    feedback["tier"]["enum"] = or_null;
    feedback["outcomes"]["propertyNames"] = json!({ "enum": tiers });
}

/// The client key schemes (`server.api_keys_env`): a bearer token, or Anthropic's `x-api-key`.
struct Auth;

impl Modify for Auth {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
    }
}

/// The errors an endpoint can answer whatever it does: (status, when, which endpoints).
const COMMON: &[(&str, &str, Applies)] = &[
    (
        "400",
        "The request is wrong: the body is not UTF-8 or JSON, a field is missing or of the \
         wrong type, an empty query... `code` says which",
        Applies::Post,
    ),
    (
        "401",
        "`missing_api_key` / `invalid_api_key`, when client keys are configured",
        Applies::Api,
    ),
    (
        "408",
        "`body_timeout`: the body did not arrive within server.body_read_timeout_secs",
        Applies::Post,
    ),
    (
        "413",
        "`payload_too_large`: over server.body_limit_bytes",
        Applies::Post,
    ),
    (
        "503",
        "`not_ready` (still loading) or `overloaded` (the routing queue is full); retry after \
         Retry-After",
        Applies::Post,
    ),
    (
        "502",
        "`upstream_unavailable`, `upstream_error`, `no_upstream`: the upstream refused, failed \
         before its first byte, or the tier has none",
        Applies::Proxy,
    ),
    (
        "504",
        "`upstream_timeout`: no response headers within the upstream's timeout_secs",
        Applies::Proxy,
    ),
];

#[derive(Clone, Copy)]
enum Applies {
    /// Every `POST` (they all read a JSON body and may need the router).
    Post,
    /// Everything under `/v1/` (auth).
    Api,
    /// The forwarding endpoints.
    Proxy,
}

struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, doc: &mut Document) {
        for (path, item) in doc.paths.paths.iter_mut() {
            let forwarded = proxy::Api::ALL.into_iter().find(|api| api.route() == path);
            let body = match forwarded.map(proxy::Api::kind) {
                Some(UpstreamKind::Anthropic) => "AnthropicErrorBody",
                _ => "ErrorBody",
            };
            let operations = [(false, item.get.as_mut()), (true, item.post.as_mut())];
            for (post, operation) in operations {
                let Some(operation) = operation else { continue };
                for &(status, when, applies) in COMMON {
                    let applies = match applies {
                        Applies::Post => post,
                        Applies::Api => path.starts_with("/v1/"),
                        Applies::Proxy => forwarded.is_some(),
                    };
                    if !applies || operation.responses.responses.contains_key(status) {
                        continue;
                    }
                    let mut response = ResponseBuilder::new().description(when).content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name(body)))
                            .build(),
                    );
                    if status == "503" {
                        response = response.header(
                            "retry-after",
                            HeaderBuilder::new()
                                .schema(Object::with_type(Type::Integer))
                                .description(Some("Seconds to wait"))
                                .build(),
                        );
                    }
                    operation
                        .responses
                        .responses
                        .insert(status.to_string(), response.build().into());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_and_covers_every_endpoint() {
        let doc = spec_json();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
        let paths = doc["paths"].as_object().unwrap();
        for path in [
            "/v1/route",
            "/v1/chat/completions",
            "/v1/responses",
            "/v1/messages",
            "/v1/messages/count_tokens",
            "/v1/models",
            "/v1/examples",
            "/v1/reload",
            "/v1/feedback",
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
        ] {
            assert!(paths.contains_key(path), "{path} is missing");
        }
        let route = &paths["/v1/route"]["post"]["responses"];
        for status in ["200", "400", "401", "408", "413", "503"] {
            assert!(route.get(status).is_some(), "/v1/route lacks {status}");
        }
        let messages = &paths["/v1/messages"]["post"]["responses"]["400"];
        let schema = &messages["content"]["application/json"]["schema"]["$ref"];
        assert_eq!(schema, "#/components/schemas/AnthropicErrorBody");
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for name in [
            "Decision",
            "Neighbor",
            "RouteRequest",
            "Feedback",
            "ErrorBody",
        ] {
            assert!(schemas.contains_key(name), "schema {name} is missing");
        }
        // The deployment's names land on the generic schemas' own members.
        let mut named = doc.clone();
        let tiers = ["small".to_string(), "large".to_string()];
        name_the_choices(&mut named, &["auto".into(), "small".into()], &tiers);
        let s = &named["components"]["schemas"];
        assert_eq!(s["ChatRequest"]["required"], json!(["model", "messages"]));
        assert_eq!(
            s["ChatRequest"]["properties"]["model"]["enum"],
            json!(["auto", "small"])
        );
        assert_eq!(s["Label"]["oneOf"][0]["required"], json!(["tier"]));
        assert_eq!(s["Label"]["oneOf"][1]["required"], json!(["outcomes"]));
        assert_eq!(
            s["Feedback"]["properties"]["tier"]["enum"],
            json!(["small", "large", null])
        );
        assert_eq!(s["Feedback"]["required"], json!(["id"]));
        assert_eq!(
            schemas["RouteRequest"]["oneOf"],
            json!([{"required": ["query"]}, {"required": ["messages"]}])
        );
        // RouteRequest refuses unknown fields, and says so.
        assert_eq!(
            schemas["RouteRequest"]["additionalProperties"],
            serde_json::json!(false)
        );
    }
}
