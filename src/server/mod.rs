//! The HTTP server: a routing API (`POST /v1/route`), an OpenAI-compatible proxy
//! (`POST /v1/chat/completions`, `GET /v1/models`), live examples (`POST /v1/examples`),
//! `/healthz`, `/readyz` and `/metrics`.
//!
//! [`app`] builds the axum router over an [`AppState`] (for in-process tests), [`serve`] runs it
//! on a listener until a shutdown future resolves, finishing in-flight requests and streams, and
//! [`run`] is the blocking entry point of `model-router serve`: it binds first, loads the model
//! and index in the background (`/readyz` says when they are in), and stops on SIGTERM/Ctrl-C.
//! Handlers are thin: extract, one library call, respond; errors become responses only in
//! [`error`]. This folder is the only place axum, reqwest and tokio appear.

mod auth;
pub mod error;
mod feedback;
mod listener;
pub mod metrics;
pub mod openapi;
mod proxy;
mod replica;
mod route;
mod session;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderName, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::batcher::{BatchObserver, BatchOptions, Batcher, ContextRule, Query, Shadow};
use crate::budget::Budget;
use crate::config::{Config, LogConfig, ServerConfig, UpstreamKind};
use crate::decision_log::{
    find_decision, DecisionLog, DecisionRecord, LogOptions, LoggedPolicy, RecentDecisions,
};
use crate::error::{Error, Result};
use crate::router::{Decision, Router};
use crate::tier::Tiers;
use crate::vote::{cheapest_sufficient, Policy};

use error::ErrorBody;
pub use error::{ApiError, ApiJson};
pub use listener::serve;
pub use metrics::Metrics;

/// The request id header: taken from the client if present, made up (UUID v4) otherwise,
/// echoed on the response and recorded on every log line of the request.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

struct Shared {
    settings: ServerConfig,
    tiers: Tiers,
    /// Per tier (same index), where it is served: its own model and upstream first, then its
    /// alternates on upstreams of other kinds. Empty: it can be routed to but not forwarded.
    targets: Vec<Vec<Target>>,
    /// Sessions and the highest tier each has used.
    sessions: session::Sessions,
    /// Accepted bearer tokens; empty = no auth.
    api_keys: Vec<String>,
    examples_path: std::path::PathBuf,
    /// Field limits for live examples and feedback.
    example_limits: crate::corpus::FieldLimits,
    /// Longest neighbour text in a decision's JSON, in characters.
    neighbor_text_chars: usize,
    engine: OnceLock<Engine>,
    metrics: Arc<Metrics>,
    client: reqwest::Client,
    /// Serialises live additions: id check, append, index insert.
    adding: tokio::sync::Mutex<()>,
    /// The decision log, when `[log] decisions` names a file.
    log: Option<DecisionLog>,
    /// The shadow router's decisions, when `[shadow]` is configured.
    shadow_log: Option<DecisionLog>,
    log_settings: LogConfig,
    /// The last decisions, for feedback without a disk read.
    recent: Mutex<RecentDecisions>,
    /// `[store]`: where writes go and how far this replica has followed it.
    replica: OnceLock<Arc<replica::Replica>>,
    /// `[routing.budget]`, held live.
    budget: Option<Mutex<Budget>>,
    /// Unix seconds at start, the `created` of `/v1/models` entries.
    created: u64,
}

/// An upstream as the proxy uses it: the resolved URL and key.
pub(crate) struct Upstream {
    pub name: String,
    /// e.g. `https://api.openai.com/v1`; endpoints are paths below it.
    pub base_url: String,
    pub kind: UpstreamKind,
    /// The upstream's own key (from its `api_key_env`); never the client's.
    pub api_key: Option<String>,
    /// Time allowed until the response headers, and between two body chunks; `None` = no limit.
    pub timeout: Option<Duration>,
}

/// A routing decision as a handler gets it.
pub(crate) struct Decided {
    pub decision: Decision,
    /// Queueing, embedding and the vote.
    pub took: Duration,
    /// The session's tier after this request, when the request named a session.
    pub session_tier: Option<String>,
}

/// A tier on one upstream: the model to send it as.
pub(crate) struct Target {
    pub model: String,
    pub upstream: Arc<Upstream>,
}

/// The model and index, once loaded.
pub(crate) struct Engine {
    pub router: Arc<Router>,
    pub batcher: Batcher,
    /// `[shadow]`: the candidate router deciding alongside.
    pub shadow: Option<Arc<Shadow>>,
}

impl AppState {
    /// A state that is not ready yet (see [`AppState::set_router`]). `secret` looks up an
    /// environment variable by name: the client keys (`server.api_keys_env`) and each
    /// upstream's key (`api_key_env`) are read through it, once.
    pub fn new(config: &Config, secret: impl Fn(&str) -> Option<String>) -> Result<AppState> {
        let tiers = config.tiers()?;
        let mut upstreams: std::collections::BTreeMap<&str, Arc<Upstream>> = Default::default();
        for (name, u) in &config.upstreams {
            let api_key = match &u.api_key_env {
                Some(var) => {
                    let key = secret(var).filter(|k| !k.trim().is_empty());
                    if key.is_none() {
                        tracing::warn!(upstream = %name, var = %var, "the upstream's key variable is unset: requests go without a key");
                    }
                    key.map(|k| k.trim().to_string())
                }
                None => None,
            };
            upstreams.insert(
                name,
                Arc::new(Upstream {
                    name: name.clone(),
                    base_url: u.base_url.trim_end_matches('/').to_string(),
                    kind: u.kind,
                    api_key,
                    timeout: (u.timeout_secs > 0).then(|| Duration::from_secs(u.timeout_secs)),
                }),
            );
        }
        let mut targets = Vec::with_capacity(tiers.len());
        for tier in tiers.iter() {
            let own = tier.upstream.iter().map(|u| (&tier.model, u));
            let others = tier.alternates.iter().map(|a| (&a.model, &a.upstream));
            let mut served = Vec::new();
            for (model, name) in own.chain(others) {
                let upstream = upstreams.get(name.as_str()).ok_or_else(|| {
                    Error::Config(format!(
                        "tier `{}` names unknown upstream `{name}`",
                        tier.name
                    ))
                })?;
                served.push(Target {
                    model: model.clone(),
                    upstream: upstream.clone(),
                });
            }
            targets.push(served);
        }
        let api_keys: Vec<String> = match &config.server.api_keys_env {
            Some(var) => {
                let keys: Vec<String> = secret(var)
                    .unwrap_or_default()
                    .split(',')
                    .map(|k| k.trim().to_string())
                    .filter(|k| !k.is_empty())
                    .collect();
                if keys.is_empty() {
                    tracing::warn!(var = %var, "server.api_keys_env names an unset or empty variable: the API is open and /v1/examples is disabled");
                }
                keys
            }
            None => Vec::new(),
        };
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| Error::Config(format!("the HTTP client cannot start: {e}")))?;
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let log = match &config.log.decisions {
            Some(path) => Some(DecisionLog::open(LogOptions {
                path: path.clone(),
                max_bytes: config.log.max_bytes,
                keep: config.log.keep,
                capacity: config.log.queue_capacity,
            })?),
            None => None,
        };
        let shadow_log = match &config.shadow {
            Some(s) => Some(DecisionLog::open(LogOptions {
                path: s.decisions.clone(),
                max_bytes: config.log.max_bytes,
                keep: config.log.keep,
                capacity: config.log.queue_capacity,
            })?),
            None => None,
        };
        let budget = match &config.routing.budget {
            Some(b) => {
                let limits = config.budget_limits(&tiers, b)?;
                let policy = config.policy()?;
                Some(Mutex::new(
                    Budget::new(limits, b.window, policy.quality_target, &tiers)
                        .with_fallback(policy.fallback_tier),
                ))
            }
            None => None,
        };
        Ok(AppState(Arc::new(Shared {
            settings: config.server.clone(),
            tiers,
            targets,
            sessions: session::Sessions::new(
                Duration::from_secs(config.server.session_ttl_secs),
                config.server.session_capacity,
            ),
            api_keys,
            examples_path: config.routing.examples.clone(),
            example_limits: config.routing.example_limits,
            neighbor_text_chars: config.server.neighbor_text_chars,
            engine: OnceLock::new(),
            metrics: Arc::new(Metrics::new()),
            client,
            adding: tokio::sync::Mutex::new(()),
            log,
            shadow_log,
            log_settings: config.log.clone(),
            recent: Mutex::new(RecentDecisions::new(config.log.recent)),
            budget,
            replica: OnceLock::new(),
            created,
        })))
    }

    /// Makes this server a replica of `store`, which it was loaded from up to sequence number
    /// `applied`: writes go to the store, and a task (on the current runtime) follows every
    /// other replica's, checking at least every `poll`. Needs the router set; returns false
    /// (and changes nothing) without it or if a store is set already.
    pub fn follow_store(&self, store: crate::store::PgStore, applied: i64, poll: Duration) -> bool {
        let Ok(engine) = self.engine() else {
            return false;
        };
        let replica = Arc::new(replica::Replica::new(store, applied, poll));
        if self.0.replica.set(replica.clone()).is_err() {
            return false;
        }
        tokio::spawn(replica.follow(engine.router.clone()));
        true
    }

    /// Writes every decision from now on to the store this server follows (`store.decisions`),
    /// keeping `keep_days` days of them (0 = all). False without a store, or if started
    /// already.
    pub fn store_decisions(&self, keep_days: u32) -> bool {
        self.replica()
            .is_some_and(|r| r.start_decisions(self.0.log_settings.queue_capacity, keep_days))
    }

    /// [`AppState::new`] with secrets from the process environment.
    pub fn from_env(config: &Config) -> Result<AppState> {
        Self::new(config, |var| std::env::var(var).ok())
    }

    /// Makes the state ready: starts the batching thread over the router. Returns false (and
    /// changes nothing) if it was ready already.
    pub fn set_router(&self, router: Arc<Router>) -> bool {
        self.set_routers(router, None)
    }

    /// [`AppState::set_router`] with a shadow router deciding alongside (`[shadow]`).
    pub fn set_routers(&self, router: Arc<Router>, shadow: Option<Shadow>) -> bool {
        let s = &self.0.settings;
        let options = BatchOptions {
            max_size: s.batch_max_size,
            max_wait: Duration::from_millis(s.batch_max_wait_ms),
            capacity: s.queue_capacity,
            long_bytes: s.long_query_bytes,
            long_capacity: s.long_queue_capacity,
        };
        let metrics = self.0.metrics.clone();
        let observer: BatchObserver = Arc::new(move |stats| metrics.batch(stats));
        let mut fresh = false;
        self.0.engine.get_or_init(|| {
            fresh = true;
            Engine {
                batcher: Batcher::start(router.clone(), options, Some(observer)),
                router: router.clone(),
                shadow: shadow.map(Arc::new),
            }
        });
        if fresh {
            self.0.metrics.examples.set(router.len() as i64);
            self.0.metrics.ready.set(1);
        }
        fresh
    }

    /// A ready state in one call.
    pub fn with_router(self, router: Arc<Router>) -> AppState {
        self.set_router(router);
        self
    }

    pub fn is_ready(&self) -> bool {
        self.0.engine.get().is_some()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub(crate) fn settings(&self) -> &ServerConfig {
        &self.0.settings
    }

    pub(crate) fn tiers(&self) -> &Tiers {
        &self.0.tiers
    }

    /// Where `tier` is served for requests of `kind`.
    pub(crate) fn target(&self, tier: usize, kind: UpstreamKind) -> Option<&Target> {
        self.0
            .targets
            .get(tier)?
            .iter()
            .find(|t| t.upstream.kind == kind)
    }

    /// The model names that stand for `tier` in requests of `kind`: its own model (unless its
    /// upstream speaks another kind) and its alternates of that kind.
    pub(crate) fn models_for(&self, tier: usize, kind: UpstreamKind) -> Vec<&str> {
        let targets = self.targets(tier);
        let mut models: Vec<&str> = targets
            .iter()
            .filter(|t| t.upstream.kind == kind)
            .map(|t| t.model.as_str())
            .collect();
        if targets.is_empty() {
            models.push(&self.0.tiers[tier].model);
        }
        models
    }

    /// Every place `tier` is served (its own upstream first).
    pub(crate) fn targets(&self, tier: usize) -> &[Target] {
        self.0.targets.get(tier).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn example_limits(&self) -> crate::corpus::FieldLimits {
        self.0.example_limits
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.0.client
    }

    pub(crate) fn engine(&self) -> std::result::Result<&Engine, ApiError> {
        self.0.engine.get().ok_or_else(|| {
            ApiError::unavailable(
                "not_ready",
                "the model and index are still loading: retry shortly",
            )
        })
    }

    pub(crate) fn context_rule(&self) -> ContextRule {
        ContextRule {
            turns: self.0.settings.context_turns,
            weight: self.0.settings.context_weight,
        }
    }

    /// Routes a query through the batcher, with the configured policy or another quality
    /// target, as request `id` of `endpoint`: the decision carries the id, is kept for
    /// feedback and goes to the decision log. A budget, when configured, sets the quality
    /// target unless the request gives one. Also returns how long the decision took
    /// (queueing, embedding, vote).
    pub(crate) async fn decide(
        &self,
        id: &str,
        endpoint: &'static str,
        query: Query,
        quality_target: Option<f32>,
        session: Option<&str>,
    ) -> std::result::Result<Decided, ApiError> {
        let engine = self.engine()?;
        let mut policy: Policy = engine.router.policy().clone();
        if let Some(q) = quality_target {
            if !(0.0..=1.0).contains(&q) {
                return Err(ApiError::bad_request(
                    "invalid_quality_target",
                    format!("quality_target must be in [0, 1], got {q}"),
                ));
            }
            policy.quality_target = q;
        } else if let Some(budget) = &self.0.budget {
            policy.quality_target = lock(budget).target();
        }
        // Cut before anything is kept or tokenised: a 1 MiB query costs what its first 8 KiB
        // cost, in time and in memory (recent decisions, the log).
        let mut query = query;
        let max_tokens = engine.router.embedder().info().max_length;
        let was_cut = query.cut_to(max_tokens);
        let parts = query.parts().to_vec();
        let started = Instant::now();
        let shadow = engine
            .shadow
            .clone()
            .filter(|_| self.0.shadow_log.is_some());
        let (pending, shadow_pending) =
            engine
                .batcher
                .submit_with_shadow(query, policy.clone(), shadow.clone())?;
        let mut decision = pending.await?;
        let took = started.elapsed();
        if let (Some(shadow), Some(pending)) = (shadow, shadow_pending) {
            self.log_shadow(id, endpoint, parts.clone(), shadow, pending, started);
        }
        decision.id = Some(id.to_string());
        if was_cut {
            decision.reason += &format!(
                "; the query is longer than {} bytes: only its start was embedded (the model \
                 reads {max_tokens} tokens)",
                max_tokens * crate::embed::BYTES_PER_TOKEN
            );
        }
        let tiers = self.tiers();
        let session_tier = session.map(|key| {
            let routed = tiers
                .position(&decision.tier)
                .unwrap_or(policy.fallback_tier);
            let sticky = self.0.sessions.escalate(key, routed, Instant::now());
            if sticky.tier != routed {
                decision.reason += &format!(
                    "; session: kept at `{}`, the highest tier it has used (this turn alone: \
                     `{}`)",
                    tiers[sticky.tier].name, decision.tier
                );
                decision.tier = tiers[sticky.tier].name.clone();
                decision.model = tiers[sticky.tier].model.clone();
            }
            let m = &self.0.metrics;
            m.sessions.set(self.0.sessions.len() as i64);
            m.session_evictions.set(self.0.sessions.evictions() as i64);
            tiers[sticky.tier].name.clone()
        });
        let mut logged = LoggedPolicy::new(&policy, tiers);
        if let Some(budget) = &self.0.budget {
            let quality: Vec<Option<f32>> = tiers
                .iter()
                .map(|t| decision.quality.get(&t.name))
                .collect();
            let tier = tiers
                .position(&decision.tier)
                .unwrap_or(policy.fallback_tier);
            let mut budget = lock(budget);
            let configured = budget.configured();
            if quality_target.is_none() && policy.quality_target < configured {
                logged.configured_quality_target = Some(configured);
                let without = cheapest_sufficient(&quality, configured);
                if let Some(without) = without
                    .filter(|&w| w != tier && decision.basis == crate::vote::Basis::Neighbors)
                {
                    decision.reason += &budget.reason(tiers, policy.quality_target, without);
                }
            }
            budget.observe(&quality, decision.basis, tier);
            self.0.metrics.budget_target.set(f64::from(budget.target()));
            for (t, share) in tiers.iter().zip(budget.shares()) {
                self.0
                    .metrics
                    .tier_share
                    .with_label_values(&[t.name.as_str()])
                    .set(f64::from(share));
            }
        }
        self.0.metrics.decision(&decision.tier, took);
        let record = Arc::new(DecisionRecord::new(
            id,
            endpoint,
            &parts,
            &decision,
            logged,
            &engine.router.examples_version(),
            engine.router.embedder().info(),
            took.as_secs_f64() * 1e3,
        ));
        if let Some(log) = &self.0.log {
            // A full queue drops the record (counted); the request never waits on disk.
            log.log((*record).clone());
        }
        if let Some(sink) = self.replica().and_then(|r| r.decisions()) {
            // Likewise: written to the store in batches by the sink's task.
            sink.log(record.clone());
        }
        lock(&self.0.recent).insert(record);
        Ok(Decided {
            decision,
            took,
            session_tier,
        })
    }

    /// A decision that is only looked at (`/v1/messages/count_tokens`): the current policy
    /// (budget included), but not logged, budgeted, or counted in a session.
    pub(crate) async fn peek(&self, query: Query) -> std::result::Result<Decision, ApiError> {
        let engine = self.engine()?;
        let mut policy: Policy = engine.router.policy().clone();
        if let Some(budget) = &self.0.budget {
            policy.quality_target = lock(budget).target();
        }
        let (pending, _) = engine.batcher.submit_with_shadow(query, policy, None)?;
        Ok(pending.await?)
    }

    /// Logs the shadow's decision once it is made (after the request's own is answered).
    fn log_shadow(
        &self,
        id: &str,
        endpoint: &'static str,
        parts: Vec<(String, f32)>,
        shadow: Arc<Shadow>,
        pending: crate::batcher::Pending,
        started: Instant,
    ) {
        let state = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let Some(log) = &state.0.shadow_log else {
                return;
            };
            match pending.await {
                Ok(mut d) => {
                    d.id = Some(id.clone());
                    let router = &shadow.router;
                    log.log(DecisionRecord::new(
                        &id,
                        endpoint,
                        &parts,
                        &d,
                        LoggedPolicy::new(&shadow.policy, router.tiers()),
                        &router.examples_version(),
                        router.embedder().info(),
                        started.elapsed().as_secs_f64() * 1e3,
                    ));
                }
                Err(e) => tracing::warn!(error = %e, "the shadow router failed to decide"),
            }
        });
    }

    /// A decision by id: from memory, else from the decision log (on a blocking thread), else
    /// from the store (another replica's decision).
    pub(crate) async fn find_decision(
        &self,
        id: &str,
    ) -> std::result::Result<Option<Arc<DecisionRecord>>, ApiError> {
        if let Some(d) = lock(&self.0.recent).get(id) {
            return Ok(Some(d));
        }
        if let Some(path) = self.0.log_settings.decisions.clone() {
            let keep = self.0.log_settings.keep;
            let owned = id.to_string();
            let found = tokio::task::spawn_blocking(move || find_decision(&path, keep, &owned))
                .await
                .map_err(ApiError::internal)??;
            if let Some(found) = found {
                return Ok(Some(Arc::new(found)));
            }
        }
        match self.replica() {
            Some(replica) => Ok(replica
                .store
                .decision(id)
                .await
                .map_err(replica::store_error)?
                .map(Arc::new)),
            None => Ok(None),
        }
    }

    /// How long decisions are kept for feedback, in words, for a 404.
    pub(crate) fn decisions_kept(&self) -> String {
        let recent = lock(&self.0.recent);
        let memory = match recent.oldest_time() {
            Some(t) => format!(
                "the last {} decisions in memory (now {}, the oldest from {t})",
                recent.capacity(),
                recent.len()
            ),
            None => format!("the last {} decisions in memory", recent.capacity()),
        };
        let kept = match &self.0.log_settings.decisions {
            Some(path) => format!(
                "{memory}, and those still in the decision log {} and its {} rotated files \
                 ({} bytes each)",
                path.display(),
                self.0.log_settings.keep,
                self.0.log_settings.max_bytes
            ),
            None => format!("{memory}; no decision log is configured ([log] decisions)"),
        };
        match self.replica() {
            Some(_) => format!(
                "{kept}; and the store holds those of every replica with store.decisions on \
                 (written within a moment of the decision)"
            ),
            None => kept,
        }
    }

    pub(crate) fn examples_path(&self) -> &std::path::Path {
        &self.0.examples_path
    }

    pub(crate) fn adding(&self) -> &tokio::sync::Mutex<()> {
        &self.0.adding
    }

    /// The store this server writes to and follows, when `[store]` is configured.
    pub(crate) fn replica(&self) -> Option<&Arc<replica::Replica>> {
        self.0.replica.get()
    }
}

/// Locks a std mutex; a poisoned one is still usable (its holders never leave it half-done).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The request id the `SetRequestIdLayer` put on the request (a made-up one if it is missing,
/// which only happens to handlers called outside [`app`]).
pub(crate) fn request_id(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:032x}", rand_id()))
}

fn rand_id() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    u128::from(h.finish())
}

/// The HTTP API over a state. Routes under `/v1` need a bearer key when keys are configured;
/// `/healthz`, `/readyz` and `/metrics` are always open.
pub fn app(state: AppState) -> axum::Router {
    let anthropic = axum::Router::new()
        .route("/v1/messages", post(proxy::messages))
        .route("/v1/messages/count_tokens", post(proxy::count_tokens))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ))
        .layer(axum::middleware::from_fn(error::anthropic_errors));
    let api = axum::Router::new()
        .route("/v1/route", post(route::route))
        .route("/v1/chat/completions", post(proxy::chat_completions))
        .route("/v1/responses", post(proxy::responses))
        .route("/v1/models", get(route::models))
        .route("/v1/examples", post(route::add_examples))
        .route("/v1/reload", post(route::reload))
        .route("/v1/feedback", post(feedback::feedback))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ));
    let open = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .route("/openapi.json", get(openapi::document));
    let limit = state.settings().body_limit_bytes;
    api.merge(anthropic)
        .merge(open)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::Extension(error::BodyDeadline(Duration::from_secs(
            state.settings().body_read_timeout_secs,
        ))))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(|req: &Request<_>| {
                            let id = req
                                .headers()
                                .get(REQUEST_ID)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("-");
                            let path = req.uri().path();
                            // Health checks and scrapes come every few seconds from every balancer and
                            // probe: their lines are at debug level, under their own span name.
                            if matches!(path, "/healthz" | "/readyz" | "/metrics") {
                                tracing::info_span!("probe", id, method = %req.method(), path)
                            } else {
                                tracing::info_span!("request", id, method = %req.method(), path)
                            }
                        })
                        .on_response(|res: &Response, latency: Duration, span: &tracing::Span| {
                            let ms = format_args!("{:.3}", latency.as_secs_f64() * 1e3);
                            let status = res.status().as_u16();
                            if span.metadata().is_some_and(|m| m.name() == "probe") {
                                tracing::debug!(status, %ms, "response");
                            } else {
                                tracing::info!(status, %ms, "response");
                            }
                        })
                        // Error statuses are in the response line already; internal errors are logged
                        // with their details where they happen (ApiError::internal).
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
        )
        .with_state(state)
}

/// `GET /healthz` answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Health {
    #[schema(example = "ok")]
    status: &'static str,
}

/// `GET /readyz` answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Ready {
    #[schema(example = "ready")]
    status: &'static str,
    /// Examples in the index.
    examples: usize,
    /// `hnsw` or `flat`.
    index: &'static str,
    /// `hnsw` while its graph is being built after start (searches are exact meanwhile).
    #[serde(skip_serializing_if = "Option::is_none")]
    index_pending: Option<&'static str>,
    /// With `[store]`: the store as this replica last found it. Routing stays ready while the
    /// store is away (writes answer `503 store_unavailable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<StoreState>,
}

/// The store, in `GET /readyz`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct StoreState {
    /// `reachable` or `unreachable` (the last exchange with it failed).
    #[schema(example = "reachable")]
    state: &'static str,
    /// host:port/database.
    location: String,
    /// Since when it has been in this state (RFC 3339).
    since: String,
    /// Why it is unreachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The last sequence number this replica has applied.
    applied_seq: i64,
    /// With `store.decisions`: decision records waiting, written and dropped (queue full).
    #[serde(skip_serializing_if = "Option::is_none")]
    decisions: Option<StoreDecisions>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct StoreDecisions {
    queued: u64,
    written: u64,
    dropped: u64,
}

impl StoreState {
    fn of(replica: &replica::Replica) -> StoreState {
        use std::sync::atomic::Ordering::Relaxed;
        let health = replica.health();
        StoreState {
            state: if health.error.is_some() {
                "unreachable"
            } else {
                "reachable"
            },
            location: replica.store.describe(),
            since: crate::decision_log::rfc3339(health.since),
            error: health.error,
            applied_seq: replica.applied(),
            decisions: replica.decisions().map(|sink| StoreDecisions {
                queued: sink.queued(),
                written: sink.counts().written.load(Relaxed),
                dropped: sink.counts().dropped.load(Relaxed),
            }),
        }
    }
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Health)))]
async fn healthz() -> impl IntoResponse {
    axum::Json(Health { status: "ok" })
}

/// Readiness: the model and the index are loaded.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Ready to route", body = Ready),
    (status = 503, description = "`not_ready`: still loading", body = ErrorBody),
))]
async fn readyz(State(state): State<AppState>) -> Response {
    match state.engine() {
        Ok(engine) => axum::Json(Ready {
            status: "ready",
            examples: engine.router.len(),
            index: engine.router.index_kind(),
            index_pending: engine.router.graph_pending().then_some("hnsw"),
            store: state.replica().map(|r| StoreState::of(r)),
        })
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
))]
async fn render_metrics(State(state): State<AppState>) -> Response {
    if let Ok(engine) = state.engine() {
        state
            .metrics()
            .queue_depth
            .set(engine.batcher.queued() as i64);
    }
    if let Some(log) = &state.0.log {
        let m = state.metrics();
        m.log_written.set(log.written() as i64);
        m.log_dropped
            .inc_by(log.dropped().saturating_sub(m.log_dropped.get()));
    }
    if let Some(replica) = state.replica() {
        state.metrics().store(&StoreState::of(replica));
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics().render(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found(
        "no such endpoint: see GET /v1/models, POST /v1/route, POST /v1/chat/completions",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// `model-router serve`: binds `server.bind`, calls `listening` with the bound address, loads
/// the router (and the `[shadow]` router, if any) with `load` on a blocking thread (the API answers 503 `not_ready` meanwhile) and
/// serves until SIGTERM/Ctrl-C. A failed load stops the server with that error.
/// What `serve` loads before it is ready.
pub struct Loaded {
    pub router: Router,
    /// `[shadow]`.
    pub shadow: Option<Shadow>,
    /// `[store]`: the store the router was loaded from, and the last sequence number applied.
    pub store: Option<(crate::store::PgStore, i64)>,
}

/// Builds the router's deferred HNSW graph on a blocking thread; routing goes on (exactly)
/// meanwhile.
fn build_graph(router: Arc<Router>) {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        tracing::info!(
            examples = router.len(),
            "index: building the HNSW graph; searching exactly meanwhile"
        );
        match router.build_pending_graph() {
            Ok(true) => tracing::info!(
                examples = router.len(),
                secs = started.elapsed().as_secs_f32(),
                "index: HNSW graph built and in use"
            ),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "index: building the HNSW graph failed; searching exactly")
            }
        }
    });
}

pub fn run(
    config: &Config,
    load: impl FnOnce() -> Result<Loaded> + Send + 'static,
    listening: impl FnOnce(SocketAddr),
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("model-router-http")
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;
    let result = runtime.block_on(async {
        let bind = &config.server.bind;
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|e| Error::io(format!("binding {bind}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the bound address", e))?;
        listening(addr);
        let state = AppState::from_env(config)?;
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<Error>();
        let loading = state.clone();
        let store_settings = config.store.clone().unwrap_or_default();
        tokio::spawn(async move {
            let started = Instant::now();
            match tokio::task::spawn_blocking(load).await {
                Ok(Ok(Loaded {
                    router,
                    shadow,
                    store,
                })) => {
                    tracing::info!(
                        examples = router.len(),
                        index = router.index_kind(),
                        shadow_examples = shadow.as_ref().map(|s| s.router.len()),
                        secs = started.elapsed().as_secs_f32(),
                        "ready"
                    );
                    let router = Arc::new(router);
                    loading.set_routers(router.clone(), shadow);
                    if router.graph_pending() {
                        build_graph(router);
                    }
                    if let Some((store, applied)) = store {
                        let poll = Duration::from_secs(store_settings.poll_secs);
                        loading.follow_store(store, applied, poll);
                        if store_settings.decisions {
                            loading.store_decisions(store_settings.decisions_keep_days);
                        }
                    }
                }
                Ok(Err(e)) => {
                    let _ = failed_tx.send(e);
                }
                Err(e) => {
                    let _ = failed_tx.send(Error::Model(format!("loading panicked: {e}")));
                }
            }
        });
        let (error_tx, error_rx) = tokio::sync::oneshot::channel::<Error>();
        let shutdown = async move {
            tokio::select! {
                () = shutdown_signal() => {}
                Ok(e) = failed_rx => { let _ = error_tx.send(e); }
            }
        };
        serve(listener, state.clone(), shutdown)
            .await
            .map_err(|e| Error::io("serving HTTP", e))?;
        if let Some(sink) = state.replica().and_then(|r| r.decisions()) {
            let left = sink.flush(Duration::from_secs(5)).await;
            if left > 0 {
                tracing::warn!(
                    unwritten = left,
                    "store: decisions not written before exit (the store did not answer)"
                );
            }
        }
        match error_rx.await {
            Ok(e) => Err(e),
            Err(_) => Ok(()),
        }
    });
    // A load still running (interrupted start) must not hold the process up.
    runtime.shutdown_background();
    result
}
