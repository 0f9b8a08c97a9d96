//! The harness of the server tests: a server over real sockets on 127.0.0.1:0 with the fixture
//! config (client keys on, tiers served by local fake upstreams), and helpers to read answers,
//! errors and metrics without timing assertions.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use model_router::config::{Config, UpstreamConfig};
use model_router::router::Router;
use model_router::server::{serve, AppState};
use reqwest::StatusCode;
use serde_json::Value;

use crate::util;

pub(crate) const ROUTER_KEY: &str = "router-key-1";
pub(crate) const UPSTREAM_KEY: &str = "sk-upstream-secret";
pub(crate) const HARD: &str = "Prove that every group of prime order p is cyclic.";
pub(crate) const EASY: &str = "hello! how is your day going so far?";
/// The longest any single wait in these tests may take before it counts as a hang.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

/// The environment the servers see: client keys and the upstreams' key.
pub(crate) fn secret(var: &str) -> Option<String> {
    match var {
        "TEST_ROUTER_KEYS" => Some(format!(" {ROUTER_KEY}, router-key-2 ,")),
        "TEST_UPSTREAM_KEY" => Some(UPSTREAM_KEY.into()),
        _ => None,
    }
}

/// The fixture config with client keys on and the given tiers served by the given base URLs.
pub(crate) fn config(upstreams: &[(&str, &str)]) -> Config {
    let mut c = util::config();
    c.server.api_keys_env = Some("TEST_ROUTER_KEYS".into());
    for (tier, base_url) in upstreams {
        let name = format!("up-{tier}");
        c.upstreams.insert(
            name.clone(),
            UpstreamConfig {
                base_url: base_url.to_string(),
                api_key_env: Some("TEST_UPSTREAM_KEY".into()),
                timeout_secs: 1,
                kind: Default::default(),
            },
        );
        let t = c.tiers.iter_mut().find(|t| t.name == *tier).unwrap();
        t.upstream = Some(name);
    }
    c.validate().unwrap();
    c
}

/// The fixture router, built once (tests that add examples build their own).
pub(crate) fn fixture_router() -> Arc<Router> {
    static ROUTER: OnceLock<Arc<Router>> = OnceLock::new();
    ROUTER
        .get_or_init(|| {
            Arc::new(Router::from_config(&util::config(), util::embedder(), &|_, _| {}).unwrap())
        })
        .clone()
}

pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) url: String,
    pub(crate) client: reqwest::Client,
    pub(crate) stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub(crate) done: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    /// Serves `config` on 127.0.0.1:0; ready with `router`, not ready without.
    pub(crate) async fn start(config: &Config, router: Option<Arc<Router>>) -> TestServer {
        let state = AppState::new(config, secret).unwrap();
        if let Some(r) = router {
            state.set_router(r);
        }
        Self::start_state(state).await
    }

    pub(crate) async fn start_state(state: AppState) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(serve(listener, state, async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            url: format!("http://{addr}"),
            client: reqwest::Client::new(),
            stop: Some(stop),
            done,
        }
    }

    pub(crate) fn post(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.url))
            .bearer_auth(ROUTER_KEY)
            .body(body)
    }

    pub(crate) fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .get(format!("{}{path}", self.url))
            .bearer_auth(ROUTER_KEY)
    }

    /// POSTs with the router key and reads the JSON answer.
    pub(crate) async fn post_json(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        json_of(self.post(path, body).send().await.unwrap()).await
    }

    /// POSTs [`chat`] to `/v1/chat/completions` with the router key.
    pub(crate) async fn chat(&self, model: &str, text: &str) -> reqwest::Response {
        self.post("/v1/chat/completions", chat(model, text))
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn route(
        &self,
        body: Value,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        self.post_json("/v1/route", body.to_string()).await
    }

    pub(crate) async fn metrics(&self) -> String {
        let r = self
            .client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.text().await.unwrap()
    }

    /// Triggers shutdown without waiting for it.
    pub(crate) fn begin_shutdown(&mut self) {
        let _ = self.stop.take().unwrap().send(());
    }

    /// Shuts down and waits until the server has finished.
    pub(crate) async fn stop(mut self) {
        self.begin_shutdown();
        tokio::time::timeout(PATIENCE, self.done)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
    }
}

/// A chat-completions body: `model` and one user message.
pub(crate) fn chat(model: &str, text: &str) -> String {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": text}]}).to_string()
}

pub(crate) async fn json_of(
    r: reqwest::Response,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: not JSON: {text}"));
    (status, headers, body)
}

pub(crate) fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .unwrap_or_else(|| panic!("no {name} header in {h:?}"))
        .to_str()
        .unwrap()
}

/// Asserts an OpenAI-style error with this status and code.
pub(crate) fn assert_error(
    got: &(StatusCode, reqwest::header::HeaderMap, Value),
    status: u16,
    code: &str,
) {
    let (s, _, body) = got;
    assert_eq!(s.as_u16(), status, "{body}");
    let e = &body["error"];
    assert_eq!(e["code"], code, "{body}");
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(e["type"].as_str().is_some_and(|t| !t.is_empty()), "{body}");
}

/// The value of the sample of `name` whose labels include all of `labels` (0 if none).
pub(crate) fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

pub(crate) async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Reads a streamed body until `needle` has arrived; returns everything read.
pub(crate) async fn read_until(
    stream: &mut (impl futures_util::Stream<Item = reqwest::Result<axum::body::Bytes>> + Unpin),
    needle: &str,
) -> String {
    let mut got = String::new();
    within(&format!("waiting for {needle:?} in the stream"), async {
        while !got.contains(needle) {
            match stream.next().await {
                Some(chunk) => got.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap()),
                None => panic!("the stream ended before {needle:?}: {got}"),
            }
        }
    })
    .await;
    got
}
