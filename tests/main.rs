//! The integration test binary: slow, end-to-end checks with the real model and the real
//! binary. One binary, so the model loads once per module and the build links once.
//!
//! Run: `cargo test --release` (the model is fetched and verified on first use).

mod cli;
mod default_set;
mod embedding;
mod eval_data;
mod gpu_check;
mod harness;
mod learning_loop;
mod lifecycle;
mod limits;
mod loop_cli;
mod protocols;
mod proxy;
mod server;
mod server_upstream;
mod store;
mod util;
