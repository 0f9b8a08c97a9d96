//! Replicas sharing one PostgreSQL store, on a real PostgreSQL: a throwaway cluster in a
//! temporary folder on a free loopback port (initdb, pg_ctl), run as the `postgres` user when
//! the tests run as root (PostgreSQL refuses root). Without PostgreSQL's binaries these tests
//! say so and pass, except under `CI=true`, where that is a failure (`.ci/run` installs them).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use model_router::config::Config;
use model_router::corpus::read_examples;
use model_router::router::RouterOptions;
use model_router::server::AppState;
use model_router::store::{self, PgStore};
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{config, secret, within, TestServer};
use crate::util;

/// A PostgreSQL cluster of its own, stopped and removed on drop.
struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

/// The folder with initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/N/bin.
fn postgres_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|p| p.join("initdb").is_file() && p.join("pg_ctl").is_file())
    });
    on_path.or_else(|| {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").is_file())
            .collect();
        versions.sort();
        versions.pop()
    })
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    let probe = tempfile::tempfile().unwrap();
    probe.metadata().unwrap().uid() == 0
}

impl Postgres {
    /// Starts a cluster, or `None` (with a note) when PostgreSQL is not installed outside CI.
    fn start() -> Option<Postgres> {
        let Some(bin) = postgres_bin() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but PostgreSQL's initdb is not installed: .ci/run installs it"
            );
            eprintln!("PostgreSQL is not installed: the store tests do not run");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        if running_as_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown to postgres");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Postgres { dir, bin, port };
        pg.run(
            "initdb",
            &["-D", &pg.data(), "-A", "trust", "-U", "router", "--no-sync"],
        );
        pg.start_server();
        Some(pg)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://router@127.0.0.1:{}/postgres", self.port)
    }

    /// One of PostgreSQL's programs, to run as `postgres` when the tests run as root.
    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        }
    }

    /// Runs one of PostgreSQL's programs, failing on an error.
    fn run(&self, program: &str, args: &[&str]) {
        let out = self.command(program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    fn stop_server(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// The fixture examples written into the store with their vectors, as `store import` does.
async fn import_fixture(store: &PgStore, c: &Config) -> usize {
    store.migrate().await.unwrap();
    let examples = read_examples(&c.routing.examples, &c.tiers().unwrap()).unwrap();
    let embedder = util::embedder();
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let vectors = embedder.embed(&texts).unwrap();
    store
        .write(&examples, false, &embedder.info().sha256, &vectors)
        .await
        .unwrap();
    examples.len()
}

/// A replica: loaded from the store, then following it.
async fn replica(store: &PgStore, c: &Config) -> (TestServer, store::Loaded) {
    let (router, loaded) = store::load_router(
        store,
        util::embedder(),
        c.tiers().unwrap(),
        RouterOptions::from_config(c).unwrap(),
    )
    .await
    .unwrap();
    let state = AppState::new(c, secret).unwrap();
    state.set_router(Arc::new(router));
    assert!(state.follow_store(store.clone(), loaded.seq, Duration::from_millis(500)));
    (TestServer::start_state(state).await, loaded)
}

/// Waits until `server` routes `text` with the example `id` as its nearest neighbour.
async fn routable(server: &TestServer, text: &str, id: &str) -> Duration {
    let started = Instant::now();
    within("the example becomes routable", async {
        loop {
            let (status, _, d) = server.route(json!({"query": text})).await;
            assert_eq!(status, StatusCode::OK, "{d}");
            if d["neighbors"][0]["id"] == id {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

fn example(id: &str, text: &str, tier: &str) -> String {
    json!({"examples": [{"id": id, "text": text, "tier": tier}]}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_examples_and_survive_the_store_going_away() {
    let Some(pg) = Postgres::start() else { return };
    let c = config(&[]);
    let store = PgStore::new(&pg.url(), 4).unwrap();
    let imported = import_fixture(&store, &c).await;
    // Migrations run again (a second replica starting) change nothing.
    store.migrate().await.unwrap();

    let (a, loaded_a) = replica(&store, &c).await;
    let (b, loaded_b) = replica(&store, &c).await;
    // Every vector came from the store: nothing was embedded at start.
    for loaded in [loaded_a, loaded_b] {
        assert_eq!(
            (loaded.examples, loaded.stored_vectors, loaded.embedded),
            (imported, imported, 0)
        );
    }

    // Added on A, routable on B (announced by NOTIFY).
    let text = "what temperature should I bake sourdough bread at";
    let (status, _, body) = a
        .post_json("/v1/examples", example("bread-1", text, "large"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    routable(&a, text, "bread-1").await;
    routable(&b, text, "bread-1").await;
    // The store refuses an id another replica wrote, whichever replica is asked.
    let (status, _, body) = b
        .post_json("/v1/examples", example("bread-1", "other text", "small"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_examples");

    // The store goes away: routing goes on from memory; writes are refused, nothing written.
    pg.stop_server();
    let (status, _, _) = a.route(json!({"query": text})).await;
    assert_eq!(status, StatusCode::OK);
    let refused = a
        .post(
            "/v1/examples",
            example("bread-2", "how long to proof dough", "medium"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    let body: serde_json::Value = serde_json::from_str(&refused.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
    let ready = a
        .client
        .get(format!("{}/readyz", a.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);

    // Back: the refused write was not half-done (its id is free), and B catches up with what
    // was written while it could not listen.
    pg.start_server();
    let text2 = "how long should bread dough proof in the fridge";
    within("a write succeeds again", async {
        loop {
            let (status, _, body) = a
                .post_json("/v1/examples", example("bread-2", text2, "medium"))
                .await;
            match status {
                StatusCode::CREATED => break,
                StatusCode::SERVICE_UNAVAILABLE => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                other => panic!("{other}: {body}"),
            }
        }
    })
    .await;
    routable(&b, text2, "bread-2").await;

    // A replica started now loads everything, in order, from vectors.
    let (c3, loaded) = replica(&store, &c).await;
    assert_eq!(
        (loaded.examples, loaded.embedded),
        (imported + 2, 0),
        "{loaded:?}"
    );
    routable(&c3, text2, "bread-2").await;
    for s in [a, b, c3] {
        s.stop().await;
    }
    drop(pg);
}
