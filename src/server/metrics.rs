//! Prometheus metrics: requests by endpoint and status, decisions by tier, route latency,
//! batch sizes, queue depth, upstream latency and errors by tier, indexed examples, the
//! decision log (written, dropped), feedback by result, the budget (target, tier shares) and
//! sessions (held, evicted). One
//! registry per server (tests run several servers in one process), rendered at `/metrics`.

use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::AppState;

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    decisions: IntCounterVec,
    route_seconds: Histogram,
    batch_size: Histogram,
    embed_seconds: Histogram,
    pub(crate) queue_depth: IntGauge,
    upstream_seconds: HistogramVec,
    upstream_errors: IntCounterVec,
    pub(crate) examples: IntGauge,
    pub(crate) ready: IntGauge,
    pub(crate) log_dropped: IntCounter,
    pub(crate) log_written: IntGauge,
    pub(crate) feedback: IntCounterVec,
    pub(crate) budget_target: Gauge,
    pub(crate) tier_share: GaugeVec,
    pub(crate) sessions: IntGauge,
    pub(crate) session_evictions: IntGauge,
    pub(crate) connections_refused: IntCounter,
    store_up: IntGauge,
    store_applied_seq: IntGauge,
    store_decisions: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "model_router_http_requests_total",
                "HTTP requests by endpoint and status.",
            ),
            &["endpoint", "status"],
        )
        .expect("valid metric");
        let decisions = IntCounterVec::new(
            Opts::new("model_router_decisions_total", "Routing decisions by tier."),
            &["tier"],
        )
        .expect("valid metric");
        let route_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "model_router_route_seconds",
                "Time to a routing decision: queueing, embedding and the vote.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56,
            ]),
        )
        .expect("valid metric");
        let batch_size = Histogram::with_opts(
            HistogramOpts::new(
                "model_router_batch_size",
                "Queries embedded per forward pass.",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
        )
        .expect("valid metric");
        let embed_seconds = Histogram::with_opts(
            HistogramOpts::new("model_router_embed_seconds", "Time per forward pass.").buckets(
                vec![
                    0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28,
                ],
            ),
        )
        .expect("valid metric");
        let queue_depth = IntGauge::new(
            "model_router_queue_depth",
            "Queries waiting for the embedder.",
        )
        .expect("valid metric");
        let upstream_seconds = HistogramVec::new(
            HistogramOpts::new(
                "model_router_upstream_seconds",
                "Time from sending a request upstream to its response headers, by tier.",
            )
            .buckets(vec![
                0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["tier"],
        )
        .expect("valid metric");
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "model_router_upstream_errors_total",
                "Upstream failures by tier and kind (connect, timeout, status_5xx, stream).",
            ),
            &["tier", "kind"],
        )
        .expect("valid metric");
        let examples = IntGauge::new("model_router_examples", "Indexed labeled examples.")
            .expect("valid metric");
        let ready = IntGauge::new(
            "model_router_ready",
            "1 once the model and index are loaded.",
        )
        .expect("valid metric");
        let log_dropped = IntCounter::new(
            "model_router_decision_log_dropped_total",
            "Decision records dropped because the log writer was behind.",
        )
        .expect("valid metric");
        let log_written = IntGauge::new(
            "model_router_decision_log_written",
            "Decision records written to the log since start.",
        )
        .expect("valid metric");
        let feedback = IntCounterVec::new(
            Opts::new(
                "model_router_feedback_total",
                "Feedback by result (added, merged, unchanged, unknown_decision, conflict, invalid).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let budget_target = Gauge::new(
            "model_router_budget_quality_target",
            "The quality target in effect: the configured one, or lower to hold [routing.budget].",
        )
        .expect("valid metric");
        let tier_share = GaugeVec::new(
            Opts::new(
                "model_router_budget_tier_share",
                "Share of the budget window's decisions that went to each tier.",
            ),
            &["tier"],
        )
        .expect("valid metric");
        let sessions = IntGauge::new(
            "model_router_sessions",
            "Sessions remembered (their highest tier, within server.session_ttl_secs).",
        )
        .expect("valid metric");
        // A gauge fed from the session map's own count (monotonic, like a counter).
        let session_evictions = IntGauge::new(
            "model_router_session_evictions_total",
            "Sessions forgotten to stay within server.session_capacity.",
        )
        .expect("valid metric");
        let connections_refused = IntCounter::new(
            "model_router_connections_refused_total",
            "Connections answered 503 and closed at server.max_connections.",
        )
        .expect("valid metric");
        let store_up = IntGauge::new(
            "model_router_store_up",
            "With [store]: 1 while the store answers, 0 while it is unreachable.",
        )
        .expect("valid metric");
        let store_applied_seq = IntGauge::new(
            "model_router_store_applied_seq",
            "With [store]: the last sequence number of the store applied to the index.",
        )
        .expect("valid metric");
        // Fed from the sink's own counts (queued is a level; written and dropped only grow).
        let store_decisions = IntGaugeVec::new(
            Opts::new(
                "model_router_store_decisions",
                "With store.decisions: decision records queued for the store, written, dropped.",
            ),
            &["state"],
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(store_up.clone()),
            Box::new(store_applied_seq.clone()),
            Box::new(store_decisions.clone()),
            Box::new(connections_refused.clone()),
            Box::new(sessions.clone()),
            Box::new(session_evictions.clone()),
            Box::new(log_dropped.clone()),
            Box::new(log_written.clone()),
            Box::new(feedback.clone()),
            Box::new(budget_target.clone()),
            Box::new(tier_share.clone()),
            Box::new(decisions.clone()),
            Box::new(route_seconds.clone()),
            Box::new(batch_size.clone()),
            Box::new(embed_seconds.clone()),
            Box::new(queue_depth.clone()),
            Box::new(upstream_seconds.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(examples.clone()),
            Box::new(ready.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            decisions,
            route_seconds,
            batch_size,
            embed_seconds,
            queue_depth,
            upstream_seconds,
            upstream_errors,
            examples,
            ready,
            log_dropped,
            log_written,
            feedback,
            budget_target,
            tier_share,
            sessions,
            session_evictions,
            connections_refused,
            store_up,
            store_applied_seq,
            store_decisions,
        }
    }

    /// The store's figures, as `/readyz` shows them.
    pub(crate) fn store(&self, state: &super::StoreState) {
        self.store_up.set(i64::from(state.error.is_none()));
        self.store_applied_seq.set(state.applied_seq);
        if let Some(d) = &state.decisions {
            for (name, n) in [
                ("queued", d.queued),
                ("written", d.written),
                ("dropped", d.dropped),
            ] {
                self.store_decisions
                    .with_label_values(&[name])
                    .set(n as i64);
            }
        }
    }

    pub fn decision(&self, tier: &str, took: Duration) {
        self.decisions.with_label_values(&[tier]).inc();
        self.route_seconds.observe(took.as_secs_f64());
    }

    pub fn batch(&self, stats: crate::batcher::BatchStats) {
        self.batch_size.observe(stats.jobs as f64);
        self.embed_seconds.observe(stats.embed.as_secs_f64());
    }

    pub fn upstream_ok(&self, tier: &str, took: Duration) {
        self.upstream_seconds
            .with_label_values(&[tier])
            .observe(took.as_secs_f64());
    }

    pub fn upstream_error(&self, tier: &str, kind: &str) {
        self.upstream_errors.with_label_values(&[tier, kind]).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding metrics into memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts every response by the route it matched (`other` for none) and its status.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_string(), |p| p.as_str().to_string());
    let response = next.run(req).await;
    state
        .metrics()
        .requests
        .with_label_values(&[endpoint.as_str(), response.status().as_str()])
        .inc();
    response
}
