//! model-router sends each LLM request to the cheapest model tier that answers it well.
//!
//! A sentence-embedding model (candle: CPU, CUDA or Metal) embeds the query; an index over
//! labeled example queries finds its nearest neighbours; their labels vote on the tier the
//! query needs. The [`router::Decision`] carries the tier, the per-tier expected quality, the
//! neighbours and a reason, so every decision can be inspected.
//!
//! ```no_run
//! use std::{path::Path, sync::Arc};
//! use model_router::{config::{Config, Overrides}, embed::load_embedder, router::Router};
//!
//! let config = Config::load(Path::new("data/router.toml"), &Overrides::default())?;
//! let embedder = load_embedder(&config.model_spec(), config.device()?)?;
//! let router = Router::from_config(&config, Arc::new(embedder), &|_, _| {})?;
//! println!("{}", router.route("Prove that there are infinitely many primes")?.tier);
//! # Ok::<(), model_router::error::Error>(())
//! ```
//!
//! # Layout
//!
//! Modules only import from modules above them in this list:
//!
//! 1. [`error`], [`tier`], [`corpus`], [`smooth`], [`vote`], [`budget`], [`index`]:
//!    pure, synchronous building blocks: the error type, the tier ladder, the labeled-example
//!    format and its one locked update path, outcome smoothing (a Rasch model over many
//!    models' outcomes), the vote, the cost budget (a share limit held by moving the quality
//!    target), exact and HNSW nearest-neighbour search (the only place hnsw_rs appears).
//! 2. [`embed`]: the `Embedder` trait, the candle BERT model, model resolution and
//!    verification, device choice (the only CUDA- and Metal-specific lines, in
//!    `embed/device.rs`), the embedding cache, the CPU kernels (`embed/kernels.rs`:
//!    packed-weight linear, attention, layer norm, GELU), and `embed::gpu_check` (a GPU's
//!    forward pass against the CPU kernels on the same weights, and both timed). The only
//!    place candle, tokenizers and hf-hub appear. It takes a [`embed::ModelSpec`] and an [`embed::DeviceSpec`], and
//!    knows nothing of the config. Then [`config`]: the typed config, which builds those two.
//! 3. [`router`]: embedder + index + examples + policy. [`batcher`]: concurrent queries
//!    share one embedding forward pass on a dedicated thread, behind a bounded queue.
//!    [`decision_log`]: one JSON line per decision, written off the request path by a writer
//!    thread, with rotation. [`feedback`]: a logged decision plus outcomes becomes an `fb-`
//!    example. [`label_queue`]: the logged queries most worth labeling (out of distribution,
//!    then the smallest vote margins, kept diverse). [`replay`]: logged queries re-decided
//!    under a candidate configuration (agreement, tier matrix, shares, cost, the most
//!    changed, a candidate budget). [`eval`]: measurement on outcome data (`eval/metrics.rs`,
//!    `plot.rs`, `cv.rs`, `learning.rs` the learning curve, `stream.rs` a budget on a live
//!    stream, `loo.rs`), all from one `eval::Setup`. [`gpu_report`]: `gpu-check`'s report,
//!    the embedding checks plus serving throughput through the batcher.
//! 4. [`server`]: the HTTP API (routing, OpenAI-compatible forwarding with streaming, live
//!    examples, feedback, health, Prometheus metrics; `replica.rs` follows a store). The only
//!    place axum and reqwest appear. Beside it, [`store`]: the PostgreSQL store replicas share
//!    (tokio-postgres, the only place it appears). Only these two, and the batcher's oneshot
//!    replies, are async.
//!
//! The binary (`src/main.rs`, `src/cli/`) is the only user of clap and anyhow; it parses
//! flags, calls the library and prints.

pub mod batcher;
pub mod budget;
pub mod config;
pub mod corpus;
pub mod decision_log;
pub mod embed;
pub mod error;
pub mod eval;
pub mod feedback;
pub mod gpu_report;
pub mod index;
pub mod label_queue;
pub mod replay;
pub mod router;
pub mod server;
pub mod smooth;
pub mod store;
pub mod tier;
pub mod vote;
