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

use crate::harness::{config, json_of, secret, within, TestServer, ROUTER_KEY};
use crate::util;

/// A PostgreSQL cluster of its own, stopped and removed on drop.
struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// TLS on, with a certificate for 127.0.0.1 signed by this CA (PEM).
    ca: Option<PathBuf>,
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
        Self::start_with(false)
    }

    /// [`Postgres::start`] with TLS: a throwaway CA signs the server's certificate.
    fn start_tls() -> Option<Postgres> {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Option<Postgres> {
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
        let mut pg = Postgres {
            dir,
            bin,
            port,
            ca: None,
        };
        pg.run(
            "initdb",
            &["-D", &pg.data(), "-A", "trust", "-U", "router", "--no-sync"],
        );
        if tls {
            pg.ca = Some(pg.make_certificates());
        }
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

    /// A CA and a server certificate for 127.0.0.1 (openssl), readable by the server; returns
    /// the CA's certificate.
    fn make_certificates(&self) -> PathBuf {
        let dir = self.dir.path();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl runs");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let rsa = ["-newkey", "rsa:2048", "-nodes"];
        openssl(
            &[
                &["req", "-x509"][..],
                &rsa,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=model-router test CA",
                ],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"][..],
                &rsa,
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "1",
            "-extfile",
            "server.ext",
        ]);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        if running_as_root() {
            for f in ["server.key", "server.crt"] {
                let status = Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(dir.join(f))
                    .status()
                    .unwrap();
                assert!(status.success());
            }
        }
        dir.join("ca.crt")
    }

    fn start_server(&self) {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        if self.ca.is_some() {
            let dir = self.dir.path().display();
            options += &format!(
                " -c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key"
            );
        }
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
        .write(&examples, &embedder.info().sha256, &vectors)
        .await
        .unwrap();
    examples.len()
}

/// A replica: loaded from the store, then following it and writing its decisions there.
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
    assert!(state.store_decisions(30));
    (TestServer::start_state(state).await, loaded)
}

/// The fixture config as a file for the binary: client keys on, the store at `pg`.
fn process_config(pg: &Postgres, dir: &std::path::Path) -> PathBuf {
    let fixture = util::fixture("router.toml");
    let text = std::fs::read_to_string(&fixture).unwrap();
    let examples = util::fixture("examples.jsonl");
    let text = text
        .replace(
            "[server]\n",
            "[server]\napi_keys_env = \"TEST_ROUTER_KEYS\"\n",
        )
        .replace(
            "examples = \"examples.jsonl\"",
            &format!("examples = {:?}", examples.display().to_string()),
        );
    let path = dir.join("router.toml");
    std::fs::write(
        &path,
        format!("{text}\n[store]\nurl = {:?}\npoll_secs = 1\n", pg.url()),
    )
    .unwrap();
    path
}

/// A replica in its own process (`model-router serve`), killed with SIGKILL on drop.
struct Process {
    child: std::process::Child,
    url: String,
}

impl Process {
    async fn start(config: &std::path::Path) -> Process {
        let (child, url) = util::spawn_serve(config, &[("TEST_ROUTER_KEYS", ROUTER_KEY)]);
        let p = Process { child, url };
        within("the replica process is ready", async {
            while readyz(&p.url).await.0 != StatusCode::OK {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        p
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post_at(
    url: &str,
    path: &str,
    body: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    let r = client()
        .post(format!("{url}{path}"))
        .bearer_auth(ROUTER_KEY)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(r).await;
    (status, body)
}

async fn readyz(url: &str) -> (StatusCode, serde_json::Value) {
    match client().get(format!("{url}/readyz")).send().await {
        Ok(r) => {
            let (status, _, body) = json_of(r).await;
            (status, body)
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, serde_json::Value::Null),
    }
}

/// Waits until the replica at `url` routes `text` with the example `id` as its nearest
/// neighbour.
async fn routable(url: &str, text: &str, id: &str) -> Duration {
    let started = Instant::now();
    within(&format!("{id} becomes routable at {url}"), async {
        loop {
            let (status, d) = post_at(url, "/v1/route", json!({"query": text})).await;
            assert_eq!(status, StatusCode::OK, "{d}");
            if d["neighbors"][0]["id"] == id {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Adds one example through the replica at `url`; returns the status and answer.
async fn add(url: &str, id: &str, text: &str, tier: &str) -> (StatusCode, serde_json::Value) {
    post_at(
        url,
        "/v1/examples",
        json!({"examples": [{"id": id, "text": text, "tier": tier}]}),
    )
    .await
}

/// Adds one example, retrying while the store is unavailable.
async fn add_when_back(url: &str, id: &str, text: &str, tier: &str) {
    within("a write succeeds again", async {
        loop {
            match add(url, id, text, tier).await {
                (StatusCode::CREATED, _) => break,
                (StatusCode::SERVICE_UNAVAILABLE, _) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                (other, body) => panic!("{other}: {body}"),
            }
        }
    })
    .await;
}

async fn store_state(url: &str) -> String {
    let (status, body) = readyz(url).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["store"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Writes `n` examples with made-up unit vectors for the model, as a store that has been in
/// use a while holds them (the vectors' values do not matter to loading).
async fn write_synthetic(store: &PgStore, n: usize) {
    let model = util::embedder().info().sha256.clone();
    let dim = util::embedder().info().dim;
    let tiers = ["small", "medium", "large"];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for chunk in (0..n).collect::<Vec<_>>().chunks(5_000) {
        let examples: Vec<model_router::corpus::Example> = chunk
            .iter()
            .map(|&i| {
                serde_json::from_value(json!({
                    "id": format!("bulk-{i}"),
                    "text": format!("stored query number {i}"),
                    "tier": tiers[i % 3],
                }))
                .unwrap()
            })
            .collect();
        let vectors: Vec<Vec<f32>> = chunk
            .iter()
            .map(|_| {
                let v: Vec<f32> = (0..dim)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                    })
                    .collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.into_iter().map(|x| x / norm).collect()
            })
            .collect();
        store.write(&examples, &model, &vectors).await.unwrap();
    }
}

/// The scenario: three replicas (the third its own process) share one store; one is
/// killed and catches up on restart; the store goes away and comes back; a fourth replica
/// loads 20,000 stored vectors without embedding them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_store_through_kills_and_outages() {
    let Some(pg) = Postgres::start() else { return };
    let c = config(&[]);
    let store = PgStore::new(&pg.url(), 4).unwrap();
    let imported = import_fixture(&store, &c).await;
    // Migrations run again (a second replica starting) change nothing.
    store.migrate().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c_config = process_config(&pg, dir.path());

    // 1. Three replicas; every vector came from the store: nothing was embedded at start.
    let (a, loaded_a) = replica(&store, &c).await;
    let (b, loaded_b) = replica(&store, &c).await;
    let mut c3 = Process::start(&c_config).await;
    for loaded in [loaded_a, loaded_b] {
        assert_eq!(
            (loaded.examples, loaded.stored_vectors, loaded.embedded),
            (imported, imported, 0)
        );
    }
    let (_, ready) = readyz(&c3.url).await;
    assert_eq!(ready["examples"], imported, "{ready}");
    assert_eq!(ready["store"]["state"], "reachable", "{ready}");

    // 2. Added on A, routable on B and C (announced by NOTIFY).
    let text = "what temperature should I bake sourdough bread at";
    let (status, body) = add(&a.url, "bread-1", text, "large").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for url in [&a.url, &b.url, &c3.url] {
        routable(url, text, "bread-1").await;
    }
    // The store refuses an id another replica wrote, whichever replica is asked.
    let (status, body) = add(&b.url, "bread-1", "other text", "small").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_examples");

    // 3. C is killed; more is added on A; C restarted catches up.
    drop(c3);
    let text2 = "how long should bread dough proof in the fridge";
    let (status, body) = add(&a.url, "bread-2", text2, "medium").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    c3 = Process::start(&c_config).await;
    routable(&c3.url, text2, "bread-2").await;
    routable(&c3.url, text, "bread-1").await;

    // 4. The store goes away: routing goes on from memory; writes are refused, nothing
    // written; /readyz stays 200 and says the store is unreachable.
    pg.stop_server();
    for url in [&a.url, &b.url, &c3.url] {
        let (status, _) = post_at(url, "/v1/route", json!({"query": text})).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, headers, body) = a
        .post_json(
            "/v1/examples",
            json!({"examples": [{"id": "bread-3", "text": "how to shape a baguette", "tier": "medium"}]})
                .to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"));
    assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
    for url in [&a.url, &b.url, &c3.url] {
        within("the replica notices the store is away", async {
            while store_state(url).await != "unreachable" {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
    }

    // Back: the refused write was not half-done (its id is free), every replica catches up
    // with what was written while it could not listen, and nothing earlier was lost.
    pg.start_server();
    let text3 = "how do I shape a baguette before baking";
    add_when_back(&b.url, "bread-3", text3, "medium").await;
    for url in [&a.url, &b.url, &c3.url] {
        routable(url, text3, "bread-3").await;
        routable(url, text2, "bread-2").await;
        within("the replica sees the store again", async {
            while store_state(url).await != "reachable" {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        let (_, ready) = readyz(url).await;
        assert_eq!(ready["examples"], imported + 3, "{ready}");
    }
    assert_eq!(store.examples_after(0).await.unwrap().len(), imported + 3);
    for s in [a, b] {
        s.stop().await;
    }
    drop(c3);

    // 5. A fourth replica against a store of 20,000 more examples loads their vectors.
    write_synthetic(&store, 20_000).await;
    let (d, loaded) = replica(&store, &c).await;
    let total = imported + 3 + 20_000;
    assert_eq!(
        (loaded.examples, loaded.stored_vectors, loaded.embedded),
        (total, total, 0),
        "{loaded:?}"
    );
    routable(&d.url, text3, "bread-3").await;
    d.stop().await;

    // `serve` at this size (HNSW by `index = "auto"`) is ready before its graph is built,
    // searching exactly meanwhile, then switches to the graph.
    let d = Process::start(&c_config).await;
    let (_, ready) = readyz(&d.url).await;
    assert_eq!(
        (&ready["examples"], &ready["index"], &ready["index_pending"]),
        (&json!(total), &json!("flat"), &json!("hnsw")),
        "{ready}"
    );
    routable(&d.url, text3, "bread-3").await;
    // ~7 s alone on 2 cores; more beside the other tests, so more patience than `within`.
    tokio::time::timeout(Duration::from_secs(180), async {
        while readyz(&d.url).await.1["index"] != "hnsw" {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("timed out: the HNSW graph is built and in use");
    let (_, ready) = readyz(&d.url).await;
    assert!(ready.get("index_pending").is_none(), "{ready}");
    routable(&d.url, text3, "bread-3").await;
    drop(d);
    drop(pg);
}

/// Feedback reaches a decision made on another replica (decisions are stored), and feedback
/// on one decision through two replicas at once merges instead of overwriting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_on_any_replica_finds_the_decision_and_merges() {
    let Some(pg) = Postgres::start() else { return };
    let c = config(&[]);
    let store = PgStore::new(&pg.url(), 4).unwrap();
    import_fixture(&store, &c).await;
    let (a, _) = replica(&store, &c).await;
    let (b, _) = replica(&store, &c).await;

    // Decided on A, feedback on B (once A's decision writer has stored it).
    let text = "which wood is best for a backyard pizza oven fire";
    let routed = a
        .post("/v1/route", json!({"query": text}).to_string())
        .header("x-request-id", "dec-1")
        .send()
        .await
        .unwrap();
    assert_eq!(routed.status(), StatusCode::OK);
    let feedback = |url: String, body: serde_json::Value| async move {
        within("the decision reaches the store", async {
            loop {
                let (status, answer) = post_at(&url, "/v1/feedback", body.clone()).await;
                if status != StatusCode::NOT_FOUND {
                    return (status, answer);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    };
    let (status, answer) = feedback(b.url.clone(), json!({"id": "dec-1", "tier": "large"})).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["id"], "fb-dec-1");
    routable(&a.url, text, "fb-dec-1").await;

    // Two replicas, two scores for one decision, at once: both kept.
    let text2 = "how many hours should pizza dough ferment";
    let routed = a
        .post("/v1/route", json!({"query": text2}).to_string())
        .header("x-request-id", "dec-2")
        .send()
        .await
        .unwrap();
    assert_eq!(routed.status(), StatusCode::OK);
    let (status, answer) = feedback(
        b.url.clone(),
        json!({"id": "dec-2", "outcomes": {"medium": 1}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (on_a, on_b) = tokio::join!(
        post_at(
            &a.url,
            "/v1/feedback",
            json!({"id": "dec-2", "outcomes": {"small": 0}})
        ),
        post_at(
            &b.url,
            "/v1/feedback",
            json!({"id": "dec-2", "outcomes": {"large": 1}})
        ),
    );
    assert_eq!(on_a.0, StatusCode::OK, "{}", on_a.1);
    assert_eq!(on_b.0, StatusCode::OK, "{}", on_b.1);
    let stored = store.examples_after(0).await.unwrap();
    let fb = stored
        .iter()
        .find(|s| s.example.id.as_deref() == Some("fb-dec-2"))
        .unwrap();
    let label = serde_json::to_value(&fb.example.label).unwrap();
    assert_eq!(
        label,
        json!({"outcomes": {"small": 0.0, "medium": 1.0, "large": 1.0}})
    );
    // A contradicting score is refused (409), wherever it is sent.
    let (status, answer) = post_at(
        &a.url,
        "/v1/feedback",
        json!({"id": "dec-2", "outcomes": {"large": 0}}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");

    // The history: every accepted piece of feedback, with what it did.
    let (client, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT result FROM router_feedback WHERE decision_id = 'dec-2' ORDER BY n",
            &[],
        )
        .await
        .unwrap();
    let results: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(results.len(), 3, "{results:?}");
    assert_eq!(results[0], "added");
    assert!(results[1..].iter().all(|r| r == "merged"), "{results:?}");

    // /readyz counts the decisions written; `store decisions` writes them out as a log.
    let (_, ready) = readyz(&a.url).await;
    assert!(
        ready["store"]["decisions"]["written"].as_u64().unwrap() >= 2,
        "{ready}"
    );
    let dir = tempfile::tempdir().unwrap();
    let config_file = process_config(&pg, dir.path());
    let out = dir.path().join("decisions.jsonl");
    let o = util::run_with(
        &config_file,
        &["store", "decisions", "--out", out.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", util::stderr(&o));
    let records = model_router::decision_log::read_decisions(&out).unwrap();
    let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    assert!(ids.contains(&"dec-1") && ids.contains(&"dec-2"), "{ids:?}");

    // `store status` says what the store holds, as the tables do.
    let o = util::run_with(&config_file, &["store", "status"]);
    assert!(o.status.success(), "{}", util::stderr(&o));
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(status["migrations"], json!([1, 2]), "{status}");
    assert_eq!(
        status["examples"],
        count("SELECT count(*) FROM router_examples").await,
        "{status}"
    );
    assert_eq!(
        status["last_seq"],
        store.last_seq().await.unwrap(),
        "{status}"
    );
    assert_eq!(
        status["vectors"][0]["model_sha256"],
        util::embedder().info().sha256.as_str(),
        "{status}"
    );
    assert_eq!(
        status["decisions"]["count"],
        count("SELECT count(*) FROM router_decisions").await,
        "{status}"
    );
    assert_eq!(
        status["feedback"],
        count("SELECT count(*) FROM router_feedback").await,
        "{status}"
    );
    assert!(status["feedback"].as_i64().unwrap() >= 3, "{status}");
    assert!(status["database_bytes"].as_i64().unwrap() > 0, "{status}");
    for s in [a, b] {
        s.stop().await;
    }
    drop(pg);
}

/// `ingest --store` killed with SIGKILL inside its transaction: none of its examples become
/// visible, to the store or a replica; run again, all of them are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_mid_write_leaves_nothing() {
    let Some(pg) = Postgres::start() else { return };
    let c = config(&[]);
    let store = PgStore::new(&pg.url(), 4).unwrap();
    let imported = import_fixture(&store, &c).await;
    let (a, _) = replica(&store, &c).await;
    let dir = tempfile::tempdir().unwrap();
    let config_file = process_config(&pg, dir.path());
    let texts = [
        "which glue holds best on a cracked ceramic mug",
        "can I repair a ceramic mug for everyday use",
        "is epoxy food safe after it cures",
    ];
    let file = dir.path().join("new.jsonl");
    let lines: Vec<String> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"id": format!("mug-{i}"), "text": t, "tier": "medium"}).to_string())
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();

    // Hold the writer inside its transaction: an uncommitted insert of the last text's vector
    // makes its own insert of that vector wait, after its example rows are written.
    let (mut holder, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let hold = holder.transaction().await.unwrap();
    let model = util::embedder().info().sha256.clone();
    hold.execute(
        "INSERT INTO router_vectors (model_sha256, text_sha256, dim, vector) VALUES ($1, $2, 1, $3)",
        &[&model, &store::text_sha256(texts[2]), &vec![0u8; 4]],
    )
    .await
    .unwrap();
    let seq_before = store.last_seq().await.unwrap();
    let mut writer = std::process::Command::new(env!("CARGO_BIN_EXE_model-router"))
        .args([
            "--config",
            config_file.to_str().unwrap(),
            "ingest",
            "--store",
        ])
        .arg(&file)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (watcher, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let waiting = "SELECT count(*) FROM pg_stat_activity
                   WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO router_vectors%'";
    within("the writer waits inside its transaction", async {
        loop {
            let n: i64 = watcher.query_one(waiting, &[]).await.unwrap().get(0);
            if n == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // Mid-write: its rows exist in its transaction (numbers taken), invisible to anyone else.
    let taken: i64 = watcher
        .query_one("SELECT last_value FROM router_example_seq", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(taken, seq_before + 3);
    writer.kill().unwrap(); // SIGKILL
    writer.wait().unwrap();
    hold.rollback().await.unwrap();
    within("the killed writer's backend ends", async {
        loop {
            let n: i64 = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'INSERT INTO router_%'
                     AND pid <> pg_backend_pid()",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if n == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(store.last_seq().await.unwrap(), seq_before);
    let n: i64 = watcher
        .query_one(
            "SELECT count(*) FROM router_examples WHERE id LIKE 'mug-%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "a killed write left rows");
    a.post("/v1/reload", "").send().await.unwrap();
    let (_, ready) = readyz(&a.url).await;
    assert_eq!(ready["examples"], imported, "{ready}");

    // Again, to the end: all three, routable on the replica.
    let o = util::run_with(&config_file, &["ingest", "--store", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", util::stderr(&o));
    assert!(
        util::stderr(&o).contains("added 3 examples to the store"),
        "{}",
        util::stderr(&o)
    );
    routable(&a.url, texts[1], "mug-1").await;
    // The same file again is refused whole: its ids are taken.
    let o = util::run_with(&config_file, &["ingest", "--store", file.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(util::stderr(&o).contains("mug-0"), "{}", util::stderr(&o));

    // `store import` refuses ids the store holds before embedding anything; with
    // --skip-existing it imports only what is new, and nothing new is a success.
    let fixture = util::fixture("examples.jsonl");
    let o = util::run_with(
        &config_file,
        &["store", "import", fixture.to_str().unwrap()],
    );
    assert!(!o.status.success());
    assert!(
        util::stderr(&o).contains("ids already in the store"),
        "{}",
        util::stderr(&o)
    );
    let mut more = std::fs::read_to_string(&fixture).unwrap();
    more.push_str(
        &json!({"id": "mug-9", "text": "how hot can a repaired mug get", "tier": "small"})
            .to_string(),
    );
    let more_file = dir.path().join("more.jsonl");
    std::fs::write(&more_file, more).unwrap();
    let skip_existing = || {
        let o = util::run_with(
            &config_file,
            &[
                "store",
                "import",
                "--skip-existing",
                more_file.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", util::stderr(&o));
        util::stdout(&o)
    };
    let first = skip_existing();
    assert!(first.contains("imported 1 examples"), "{first}");
    let again = skip_existing();
    assert!(again.contains("nothing to import"), "{again}");
    routable(&a.url, "how hot can a repaired mug get", "mug-9").await;
    a.stop().await;
    drop(pg);
}

/// TLS to the store: verified against `store.ca_file`; without it the certificate is refused
/// (the error says so); `sslmode=verify-full` URLs are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_over_tls_is_verified() {
    let Some(pg) = Postgres::start_tls() else {
        return;
    };
    let ca = pg.ca.clone().unwrap();
    let url = format!("{}?sslmode=verify-full", pg.url());
    let unverified = PgStore::new(&url, 2).unwrap();
    let err = unverified.migrate().await.unwrap_err().to_string();
    assert!(err.contains("certificate"), "{err}");

    let store = PgStore::connect(&url, 2, Some(&ca)).unwrap();
    // A store nobody has opened: its status reads nothing and creates nothing.
    let status = store.status().await.unwrap();
    assert!(
        status.migrations.is_empty() && status.examples == 0,
        "{status:?}"
    );
    assert!(store.status().await.unwrap().migrations.is_empty());
    store.migrate().await.unwrap();
    assert_eq!(store.last_seq().await.unwrap(), 0);
    assert_eq!(store.status().await.unwrap().migrations, [1, 2]);
    // The pool's connection is encrypted.
    let (plain, connection) = tokio_postgres::connect(
        &format!("{}?sslmode=disable", pg.url()),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let encrypted: i64 = plain
        .query_one("SELECT count(*) FROM pg_stat_ssl WHERE ssl", &[])
        .await
        .unwrap()
        .get(0);
    assert!(encrypted >= 1, "no TLS connection");
    // A file that is not PEM is a config error naming it.
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "not a certificate").unwrap();
    let err = PgStore::connect(&url, 2, Some(bad.path()))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("store.ca_file"), "{err}");
    drop(pg);
}
