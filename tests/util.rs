//! Shared helpers: fixture paths, the shared embedder, running the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};

use model_router::config::{Config, Overrides};
use model_router::embed::{load_embedder, Embedder};

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The fixture config, on the CPU unless `ROUTER_DEVICE` names another device (as for the
/// binary, which the CLI tests run with the same environment): `ROUTER_DEVICE=metal cargo test
/// --release --features metal` checks the reference vectors on a Mac's GPU.
pub fn config() -> Config {
    let overrides = Overrides {
        device: device(),
        ..Overrides::default()
    };
    Config::load(&fixture("router.toml"), &overrides).expect("fixture config")
}

/// The device the tests ask for: `ROUTER_DEVICE`, if set.
pub fn device() -> Option<String> {
    std::env::var("ROUTER_DEVICE")
        .ok()
        .filter(|d| !d.is_empty())
}

/// The real model, loaded once for the whole test binary.
pub fn embedder() -> Arc<dyn Embedder> {
    static EMBEDDER: OnceLock<Arc<dyn Embedder>> = OnceLock::new();
    EMBEDDER
        .get_or_init(|| {
            let config = config();
            let device = config.device().expect("a valid device");
            Arc::new(
                load_embedder(&config.model_spec(), device).expect("the embedding model loads"),
            )
        })
        .clone()
}

/// Runs the binary with the fixture config and returns its output.
pub fn run(args: &[&str]) -> Output {
    run_with(&fixture("router.toml"), args)
}

/// Runs the binary with a given config.
pub fn run_with(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_model-router"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Starts `model-router --config CONFIG serve` with `envs`, reads its first line and returns
/// the child and the URL it listens on (`bind = "127.0.0.1:0"` configs).
pub fn spawn_serve(config: &Path, envs: &[(&str, &str)]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_model-router"))
        .args(["--config", config.to_str().unwrap(), "serve"])
        .envs(envs.iter().copied())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (child, url)
}
