//! The typed configuration: `router.toml`, then command-line overrides, validated once at
//! start. Relative paths in the file resolve against the file's own folder, so
//! `--config elsewhere/router.toml` works from any working directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::budget::Limit;
use crate::embed::{DeviceSpec, ModelSpec, DEFAULT_MODEL};
use crate::error::{Error, Result};
use crate::index::{HnswParams, IndexKind};
use crate::tier::{Tier, Tiers};
use crate::vote::Policy;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub embedding: EmbeddingConfig,
    pub routing: RoutingConfig,
    pub tiers: Vec<Tier>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Tier -> outcome keys of per-model records (`ingest --outcomes`, `eval`): the first key
    /// present in a record is the tier's outcome. `--map` flags replace it.
    #[serde(default)]
    pub outcome_map: BTreeMap<String, Vec<String>>,
    /// The decision log (off unless `decisions` names a file).
    #[serde(default)]
    pub log: LogConfig,
    /// A candidate configuration that decides alongside and only logs (`serve`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowConfig>,
    /// A PostgreSQL store shared by several replicas, instead of the examples file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreConfig>,
}

/// `[store]`: the examples (and their vectors) in PostgreSQL, shared by every replica that
/// names it: an example added on one is routable on all. Unset: `routing.examples`, a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `postgres://user:password@host:port/database`. Or leave it out and name an environment
    /// variable that holds it in `url_env`, so the password need not sit in this file.
    pub url: Option<String>,
    pub url_env: Option<String>,
    /// Connections in the pool.
    pub pool_size: usize,
    /// A replica also looks for new examples this often, should a notification be lost.
    pub poll_secs: u64,
    /// Write every routing decision to the store (in batches, off the request path), so
    /// feedback sent to any replica finds its decision. They hold user prompts.
    pub decisions: bool,
    /// Stored decisions older than this many days are deleted (0 = kept forever).
    pub decisions_keep_days: u32,
    /// PEM certificates to trust for the store's TLS, besides the public roots (a managed
    /// service's or a private CA). TLS follows the URL's `sslmode` (`prefer` by default;
    /// `disable`, `require`); a certificate is always verified.
    pub ca_file: Option<PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: None,
            url_env: None,
            pool_size: 8,
            poll_secs: 5,
            decisions: true,
            decisions_keep_days: 30,
            ca_file: None,
        }
    }
}

impl StoreConfig {
    /// The connection URL: `url`, or the value of the variable `url_env` names.
    pub fn resolve_url(&self, env: impl Fn(&str) -> Option<String>) -> Result<String> {
        match (&self.url, &self.url_env) {
            (Some(url), None) => Ok(url.clone()),
            (None, Some(var)) => env(var).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
                Error::Config(format!(
                    "store.url_env names `{var}`, which is unset or empty: set it to the \
                     store's postgres:// URL"
                ))
            }),
            (Some(_), Some(_)) => Err(Error::Config(
                "store: give `url` or `url_env`, not both".into(),
            )),
            (None, None) => Err(Error::Config(
                "store: give `url` (postgres://...) or `url_env` (a variable holding it)".into(),
            )),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.pool_size == 0 || self.poll_secs == 0 {
            return Err(Error::Config(
                "store.pool_size and store.poll_secs must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// `[shadow]`: a candidate router (its own examples and knobs, the same embedding model) that
/// decides every routed query alongside the served one, off the request path, and writes its
/// decisions (same ids) to their own log. Compare the two logs, or `replay`, before switching.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    /// The candidate's config file (relative to this config's folder).
    pub config: PathBuf,
    /// Where the candidate's decisions go, in the decision-log format.
    pub decisions: PathBuf,
}

/// `[log]`: where decisions are written. The log holds user prompts: keep it off, or on a
/// path only the operators can read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// JSONL file for one record per decision, relative to the config's folder; unset = off.
    pub decisions: Option<PathBuf>,
    /// Rotate the file once it reaches this size.
    pub max_bytes: u64,
    /// Rotated files kept (`decisions.jsonl.1` … `.{keep}`).
    pub keep: usize,
    /// Records that may wait for the writer thread; beyond this they are dropped and counted
    /// (`model_router_decision_log_dropped_total`), never waited on.
    pub queue_capacity: usize,
    /// Recent decisions kept in memory for feedback (older ones are looked up in the log).
    pub recent: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            decisions: None,
            max_bytes: 100 << 20,
            keep: 5,
            queue_capacity: 4096,
            recent: 10_000,
        }
    }
}

impl LogConfig {
    fn validate(&self) -> Result<()> {
        if self.max_bytes < 4096 {
            return Err(Error::Config("log.max_bytes must be at least 4096".into()));
        }
        if self.queue_capacity == 0 {
            return Err(Error::Config(
                "log.queue_capacity must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub bind: String,
    /// Env var holding comma-separated bearer tokens; unset = no auth.
    pub api_keys_env: Option<String>,
    /// Largest request body accepted, in bytes (larger: 413).
    pub body_limit_bytes: usize,
    /// Most queries embedded in one forward pass (1 = no batching).
    pub batch_max_size: usize,
    /// How long a batch may wait for more queries once the first is taken (0 = take what is
    /// queued and go).
    pub batch_max_wait_ms: u64,
    /// Queries that may wait for the embedder; beyond this, 503 with Retry-After.
    pub queue_capacity: usize,
    /// Earlier user turns blended into a conversation's query vector (0 = latest turn only).
    pub context_turns: usize,
    /// Weight of the earlier turns' mean against the latest turn's weight of 1.
    pub context_weight: f32,
    /// On an upstream connect error, timeout or 5xx before the first byte, try the next tier up.
    pub retry_next_tier: bool,
    /// After SIGTERM/Ctrl-C, how long in-flight requests and streams may take to finish.
    pub shutdown_grace_secs: u64,
    /// A session (`x-session-id`, or the body's user field with `session_from_body`) keeps
    /// the highest tier it used for this long after its last request.
    pub session_ttl_secs: u64,
    /// Sessions remembered at once; the least recently used beyond it are forgotten.
    pub session_capacity: usize,
    /// Also take the session key from the body: `user` (OpenAI) or `metadata.user_id`
    /// (Anthropic).
    pub session_from_body: bool,
    /// Connections served at once; beyond, a new connection gets `503` and is closed.
    pub max_connections: usize,
    /// Time for a client to send a request's headers, and to start the next request on a
    /// kept-alive connection; then the connection is closed.
    pub header_read_timeout_secs: u64,
    /// Time for a client to send a request's body once its headers are in (`408`).
    pub body_read_timeout_secs: u64,
    /// Largest request head (request line and headers) read, in bytes; past it, `431`.
    pub max_header_bytes: usize,
    /// A query with more text than this (bytes, after the cut to what the model reads) is
    /// embedded on its own, one between two batches of short queries.
    pub long_query_bytes: usize,
    /// Long queries waiting at once; one more gets `503 overloaded` (short ones still pass).
    pub long_queue_capacity: usize,
    /// Neighbour texts in a decision's JSON are cut to this many characters (`…` marks it).
    pub neighbor_text_chars: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1:8080".into(),
            api_keys_env: None,
            body_limit_bytes: 1 << 20,
            batch_max_size: 32,
            batch_max_wait_ms: 0,
            queue_capacity: 256,
            context_turns: 2,
            context_weight: 0.5,
            retry_next_tier: false,
            shutdown_grace_secs: 30,
            session_ttl_secs: 3600,
            session_capacity: 100_000,
            session_from_body: false,
            max_connections: 1024,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
            max_header_bytes: 64 << 10,
            long_query_bytes: 512,
            long_queue_capacity: 32,
            neighbor_text_chars: 1000,
        }
    }
}

impl ServerConfig {
    fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(format!("server.{m}")));
        if self.body_limit_bytes == 0 {
            return bad("body_limit_bytes must be at least 1");
        }
        if self.batch_max_size == 0 {
            return bad("batch_max_size must be at least 1");
        }
        if self.queue_capacity == 0 {
            return bad("queue_capacity must be at least 1");
        }
        if !(self.context_weight >= 0.0 && self.context_weight.is_finite()) {
            return bad("context_weight must be a finite number >= 0");
        }
        if self.session_capacity == 0 {
            return bad("session_capacity must be at least 1");
        }
        if self.max_connections == 0 {
            return bad("max_connections must be at least 1");
        }
        if self.header_read_timeout_secs == 0 || self.body_read_timeout_secs == 0 {
            return bad("header_read_timeout_secs and body_read_timeout_secs must be at least 1");
        }
        if self.long_queue_capacity == 0 {
            return bad("long_queue_capacity must be at least 1");
        }
        if self.max_header_bytes < 8192 {
            // hyper's smallest read buffer; a request head of a few headers needs ~1 KiB.
            return bad("max_header_bytes must be at least 8192");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddingConfig {
    /// Hub id or local directory.
    pub model: String,
    /// Hub revision.
    pub revision: String,
    /// Expected SHA-256 of model.safetensors (built in for the default model).
    pub sha256: Option<String>,
    /// auto | cpu | cuda | cuda:N | metal | metal:N
    pub device: String,
    /// Models and example embeddings are cached here (default: the user cache folder).
    pub cache_dir: Option<PathBuf>,
}

impl Default for EmbeddingConfig {
    fn default() -> Self {
        EmbeddingConfig {
            model: DEFAULT_MODEL.into(),
            revision: "main".into(),
            sha256: None,
            device: "auto".into(),
            cache_dir: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    pub examples: PathBuf,
    /// Field limits for examples being added (ingest, live examples, feedback).
    #[serde(default)]
    pub example_limits: crate::corpus::FieldLimits,
    #[serde(default = "default_k")]
    pub k: usize,
    #[serde(default = "default_quality_target")]
    pub quality_target: f32,
    #[serde(default = "default_min_similarity")]
    pub min_similarity: f32,
    pub fallback_tier: String,
    /// Softmax temperature over neighbour similarities.
    #[serde(default = "default_temperature")]
    pub temperature: f32,
    /// Count each outcome example's quality relative to its category's mean (the category's
    /// base rate replaced by the mean over all examples). For example sets whose categories
    /// are sources (benchmarks) rather than topics. Default false.
    #[serde(default)]
    pub category_baseline: bool,
    /// auto (exact below 10k examples, HNSW above) | flat | hnsw
    #[serde(default = "default_index")]
    pub index: IndexKind,
    #[serde(default)]
    pub hnsw: HnswParams,
    /// `[routing.budget]`: at most a share of decisions at a tier or above (`serve` holds it
    /// live by lowering the quality target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetConfig>,
}

/// `[routing.budget] large = 0.30, window = 1000`: at most 30% of the last 1,000 decisions go
/// to `large` or above. Each tier key limits that tier and every tier above it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetConfig {
    /// Decisions in the rolling window.
    #[serde(default = "default_budget_window")]
    pub window: usize,
    /// Tier name -> the largest share of decisions at that tier or above, in [0, 1].
    #[serde(flatten)]
    pub shares: BTreeMap<String, f32>,
}

fn default_budget_window() -> usize {
    1000
}

fn default_k() -> usize {
    10
}
fn default_quality_target() -> f32 {
    0.9
}
fn default_min_similarity() -> f32 {
    0.35
}
fn default_temperature() -> f32 {
    Policy::default().temperature
}
fn default_index() -> IndexKind {
    IndexKind::Auto
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub base_url: String,
    /// Env var holding the upstream's API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// The protocol it speaks: `openai` (chat completions, responses; the default) or
    /// `anthropic` (messages).
    #[serde(default)]
    pub kind: UpstreamKind,
}

/// The API family an upstream speaks. A request is only forwarded to an upstream of its own
/// kind: there is no translation between protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKind {
    #[default]
    OpenAI,
    Anthropic,
}

impl std::fmt::Display for UpstreamKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UpstreamKind::OpenAI => "openai",
            UpstreamKind::Anthropic => "anthropic",
        })
    }
}

fn default_timeout() -> u64 {
    120
}

/// Command-line values that replace the file's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub examples: Option<PathBuf>,
    pub device: Option<String>,
    pub model: Option<String>,
    pub k: Option<usize>,
    pub quality_target: Option<f32>,
}

impl Config {
    /// Reads, resolves paths, applies overrides and validates.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading config {}", path.display()), e))?;
        let mut config: Config =
            toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.routing.examples = resolve_path(base, &config.routing.examples);
        if let Some(log) = &config.log.decisions {
            config.log.decisions = Some(resolve_path(base, log));
        }
        if let Some(shadow) = &mut config.shadow {
            shadow.config = resolve_path(base, &shadow.config);
            shadow.decisions = resolve_path(base, &shadow.decisions);
        }
        if let Some(dir) = &config.embedding.cache_dir {
            config.embedding.cache_dir = Some(resolve_path(base, dir));
        }
        if let Some(ca) = config.store.as_mut().and_then(|s| s.ca_file.as_mut()) {
            *ca = resolve_path(base, ca);
        }
        // A relative model directory is relative to the config too, if it exists there.
        let local_model = base.join(&config.embedding.model);
        if Path::new(&config.embedding.model).is_relative() && local_model.is_dir() {
            config.embedding.model = local_model.to_string_lossy().into_owned();
        }
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    /// Command-line paths are relative to the working directory, as a user expects.
    pub fn apply(&mut self, o: &Overrides) {
        if let Some(e) = &o.examples {
            self.routing.examples = e.clone();
        }
        if let Some(d) = &o.device {
            self.embedding.device = d.clone();
        }
        if let Some(m) = &o.model {
            self.embedding.model = m.clone();
        }
        if let Some(k) = o.k {
            self.routing.k = k;
        }
        if let Some(q) = o.quality_target {
            self.routing.quality_target = q;
        }
    }

    pub fn validate(&self) -> Result<()> {
        let tiers = self.tiers()?;
        let r = &self.routing;
        let bad = |m: String| Err(Error::Config(m));
        if r.k == 0 {
            return bad("routing.k must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&r.quality_target) {
            return bad(format!(
                "routing.quality_target must be in [0, 1], got {}",
                r.quality_target
            ));
        }
        if !(-1.0..=1.0).contains(&r.min_similarity) {
            return bad(format!(
                "routing.min_similarity must be in [-1, 1], got {}",
                r.min_similarity
            ));
        }
        if !(r.temperature > 0.0 && r.temperature.is_finite()) {
            return bad(format!(
                "routing.temperature must be > 0, got {}",
                r.temperature
            ));
        }
        tiers
            .require(&r.fallback_tier)
            .map_err(|e| Error::Config(format!("routing.fallback_tier: {e}")))?;
        if let Some(b) = &r.budget {
            self.budget_limits(&tiers, b)?;
        }
        for t in tiers.iter() {
            let mut kinds = Vec::new();
            let names = t
                .upstream
                .iter()
                .chain(t.alternates.iter().map(|a| &a.upstream));
            for u in names {
                let Some(up) = self.upstreams.get(u) else {
                    return bad(format!(
                        "tier `{}` names upstream `{u}`, which is not in [upstreams]",
                        t.name
                    ));
                };
                if kinds.contains(&up.kind) {
                    return bad(format!(
                        "tier `{}` has two upstreams of kind `{}` (`{u}` is the second): a \
                         request of that kind would only ever reach the first",
                        t.name, up.kind
                    ));
                }
                kinds.push(up.kind);
            }
            if t.upstream.is_none() && !t.alternates.is_empty() {
                return bad(format!(
                    "tier `{}` has alternates but no upstream of its own",
                    t.name
                ));
            }
            if let Some(a) = t.alternates.iter().find(|a| a.model.trim().is_empty()) {
                return bad(format!(
                    "tier `{}`: the alternate on `{}` has an empty model",
                    t.name, a.upstream
                ));
            }
        }
        for (name, u) in &self.upstreams {
            if !(u.base_url.starts_with("http://") || u.base_url.starts_with("https://")) {
                return bad(format!(
                    "upstreams.{name}.base_url must start with http:// or https://"
                ));
            }
        }
        if self.server.bind.parse::<std::net::SocketAddr>().is_err() {
            return bad(format!(
                "server.bind `{}` is not an address like 127.0.0.1:8080",
                self.server.bind
            ));
        }
        if self.embedding.model.trim().is_empty() {
            return bad("embedding.model is empty".into());
        }
        self.device()?;
        self.server.validate()?;
        self.log.validate()?;
        if let Some(store) = &self.store {
            store.validate()?;
        }
        Ok(())
    }

    pub fn tiers(&self) -> Result<Tiers> {
        Tiers::new(self.tiers.clone())
    }

    /// The vote's knobs (call after `validate`).
    pub fn policy(&self) -> Result<Policy> {
        let tiers = self.tiers()?;
        Ok(Policy {
            k: self.routing.k,
            quality_target: self.routing.quality_target,
            min_similarity: self.routing.min_similarity,
            fallback_tier: tiers.require(&self.routing.fallback_tier)?,
            temperature: self.routing.temperature,
            category_baseline: self.routing.category_baseline,
        })
    }

    /// The budget's limits, checked: known tiers, shares in [0, 1], a window of at least 1.
    pub fn budget_limits(&self, tiers: &Tiers, b: &BudgetConfig) -> Result<Vec<Limit>> {
        if b.window == 0 {
            return Err(Error::Config(
                "routing.budget.window must be at least 1".into(),
            ));
        }
        if b.shares.is_empty() {
            return Err(Error::Config(
                "routing.budget names no tier: add e.g. `large = 0.30`".into(),
            ));
        }
        b.shares
            .iter()
            .map(|(name, &share)| {
                let tier = tiers
                    .require(name)
                    .map_err(|e| Error::Config(format!("routing.budget: {e}")))?;
                if !(0.0..=1.0).contains(&share) {
                    return Err(Error::Config(format!(
                        "routing.budget.{name} must be a share in [0, 1], got {share}"
                    )));
                }
                Ok(Limit { tier, share })
            })
            .collect()
    }

    /// The embedding model to resolve and load.
    pub fn model_spec(&self) -> ModelSpec {
        ModelSpec {
            name: self.embedding.model.clone(),
            revision: self.embedding.revision.clone(),
            sha256: self.embedding.sha256.clone(),
            cache_dir: self.cache_dir(),
            offline: false,
        }
    }

    /// The device to embed on (`embedding.device`, or `--device`); checked by `validate`.
    pub fn device(&self) -> Result<DeviceSpec> {
        self.embedding
            .device
            .parse()
            .map_err(|e| Error::Config(format!("embedding.device: {e}")))
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.embedding
            .cache_dir
            .clone()
            .unwrap_or_else(default_cache_dir)
    }
}

/// `$MODEL_ROUTER_CACHE`, else `$XDG_CACHE_HOME/model-router`, else `~/.cache/model-router`.
pub fn default_cache_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = env("MODEL_ROUTER_CACHE") {
        return dir;
    }
    if let Some(dir) = env("XDG_CACHE_HOME") {
        return dir.join("model-router");
    }
    match env("HOME") {
        Some(home) => home.join(".cache").join("model-router"),
        None => PathBuf::from(".cache").join("model-router"),
    }
}

fn resolve_path(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[routing]
examples = "examples.jsonl"
fallback_tier = "large"

[[tiers]]
name = "small"
model = "m-small"
upstream = "up"

[[tiers]]
name = "large"
model = "m-large"

[upstreams.up]
base_url = "http://localhost:9"
"#;

    fn load(text: &str) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("router.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path, &Overrides::default())
    }

    #[test]
    fn defaults_and_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("router.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        let c = Config::load(&path, &Overrides::default()).unwrap();
        assert_eq!(c.routing.examples, dir.path().join("examples.jsonl"));
        assert_eq!(c.routing.k, 10);
        assert_eq!(c.embedding.model, DEFAULT_MODEL);
        assert_eq!(c.policy().unwrap().fallback_tier, 1);
        assert!(!c.policy().unwrap().category_baseline);
        let with = load(&MINIMAL.replace(
            "fallback_tier = \"large\"",
            "fallback_tier = \"large\"\ncategory_baseline = true",
        ))
        .unwrap();
        assert!(with.policy().unwrap().category_baseline);
        let o = Overrides {
            examples: Some("x.jsonl".into()),
            quality_target: Some(0.5),
            ..Default::default()
        };
        let c = Config::load(&path, &o).unwrap();
        assert_eq!(c.routing.examples, PathBuf::from("x.jsonl"));
        assert_eq!(c.routing.quality_target, 0.5);
        assert_eq!(c.device().unwrap(), DeviceSpec::Auto);
        let spec = c.model_spec();
        assert_eq!(
            (spec.name.as_str(), spec.revision.as_str()),
            (DEFAULT_MODEL, "main")
        );
        assert_eq!(spec.cache_dir, c.cache_dir());
        let o = Overrides {
            device: Some("cuda:1".into()),
            ..Default::default()
        };
        assert_eq!(
            Config::load(&path, &o).unwrap().device().unwrap(),
            DeviceSpec::Cuda(1)
        );
    }

    #[test]
    fn rejects_bad_values_with_their_key() {
        let cases = [
            (
                "fallback_tier = \"large\"",
                "fallback_tier = \"huge\"",
                "fallback_tier",
            ),
            (
                "fallback_tier = \"large\"",
                "fallback_tier = \"large\"\nk = 0",
                "routing.k",
            ),
            (
                "fallback_tier = \"large\"",
                "fallback_tier = \"large\"\nquality_target = 1.5",
                "quality_target",
            ),
            (
                "upstream = \"up\"",
                "upstream = \"nope\"",
                "not in [upstreams]",
            ),
            (
                "fallback_tier = \"large\"",
                "fallback_tier = \"large\"\nbogus = 1",
                "bogus",
            ),
            (
                "[routing]",
                "[embedding]\ndevice = \"gpu\"\n\n[routing]",
                "embedding.device: device: unknown device `gpu`",
            ),
        ];
        for (from, to, expect) in cases {
            let e = load(&MINIMAL.replace(from, to)).unwrap_err().to_string();
            assert!(e.contains(expect), "{expect}: {e}");
        }
    }
}
