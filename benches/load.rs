//! Load benchmark of the HTTP server on loopback: routes/s and p50/p99 latency of
//! `POST /v1/route` at concurrency 1, 8 and 64 for short queries, with batching on
//! (`batch_max_size = 32`) and off (`batch_max_size = 1`); then the forwarding overhead: p50 of
//! `POST /v1/chat/completions` through the router, minus the decision time, against the same
//! local upstream called directly.
//!
//! Then the fronts: forwarding overhead p50 of `/v1/messages` (to an Anthropic-kind upstream)
//! and `/v1/responses` against `/v1/chat/completions`, each against the same local upstream
//! called directly, in alternating rounds.
//!
//! Then huge queries: route p50 at concurrency 4 alone, and again while two other clients
//! send ~1 MiB queries back to back (each is cut to 8 KiB before tokenising), with the
//! process's RSS before and after (`LOAD_ONLY=huge`).
//!
//! A soak (`LOAD_ONLY=soak`, `SOAK_SECS`, default 60): 16 clients for the whole time, mixing
//! routes, `auto` and forced chat completions through the local upstream, and bad inputs;
//! prints requests/s, unexpected answers (a bad input must get its 4xx, everything else 200)
//! and RSS at start and end. Not part of the default run.
//!
//! Last, the cost of the decision log: route p50 with `[log] decisions` on vs off, in
//! alternating rounds so that drift of a shared machine falls on both alike.
//!
//! Run: `cargo bench --bench load` (env: `LOAD_SECS` seconds per point, default 5;
//! `LOAD_CONCURRENCY` e.g. `1,8,64`; `LOAD_ONLY=log` or `LOAD_ONLY=fronts` for that phase alone;
//! `ROUTER_DEVICE` as for the CLI). It uses the default
//! config and examples (`data/router.toml`), the real model, an in-process server started with
//! `model_router::server::serve`, and an in-process closed-loop client: C tasks each send a
//! request as soon as their previous one is answered. Client, server and the embedding thread
//! share the machine's cores, as they would on a small host.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use model_router::config::{Config, Overrides, UpstreamConfig};
use model_router::embed::{load_embedder, Embedder};
use model_router::router::Router;
use model_router::server::{serve, AppState};

/// Short queries (≤ 16 tokens) from benches/texts.json, cycled through.
fn queries() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/texts.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("benches/texts.json")).unwrap();
    let texts = v["batch"].as_array().unwrap();
    let tokens = v["batch_tokens"].as_array().unwrap();
    let short: Vec<String> = texts
        .iter()
        .zip(tokens)
        .filter(|(_, n)| n.as_u64().unwrap() <= 16)
        .map(|(t, _)| t.as_str().unwrap().to_string())
        .collect();
    assert!(short.len() >= 8, "enough short queries in texts.json");
    short
}

/// An instant upstream of both kinds: a fixed small chat completion, response or message.
async fn start_upstream() -> String {
    fn json(body: &'static str) -> axum::response::Response {
        axum::response::IntoResponse::into_response(([("content-type", "application/json")], body))
    }
    async fn answer(_body: Bytes) -> axum::response::Response {
        json(
            r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}"#,
        )
    }
    async fn response(_body: Bytes) -> axum::response::Response {
        json(
            r#"{"id":"resp_1","object":"response","status":"completed","model":"m","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"ok"}]}]}"#,
        )
    }
    async fn message(_body: Bytes) -> axum::response::Response {
        json(
            r#"{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn","usage":{"input_tokens":9,"output_tokens":1}}"#,
        )
    }
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(answer))
        .route("/v1/responses", axum::routing::post(response))
        .route("/v1/messages", axum::routing::post(message));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v1")
}

fn config(upstream: &str, batch: usize) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/router.toml");
    let overrides = Overrides {
        device: std::env::var("ROUTER_DEVICE").ok(),
        ..Overrides::default()
    };
    let mut c = Config::load(&path, &overrides).expect("data/router.toml");
    c.server.api_keys_env = None;
    c.server.batch_max_size = batch;
    c.upstreams.clear();
    c.upstreams.insert(
        "local".into(),
        UpstreamConfig {
            base_url: upstream.into(),
            api_key_env: None,
            timeout_secs: 30,
            kind: Default::default(),
        },
    );
    c.upstreams.insert(
        "local-anthropic".into(),
        UpstreamConfig {
            base_url: upstream.into(),
            api_key_env: None,
            timeout_secs: 30,
            kind: model_router::config::UpstreamKind::Anthropic,
        },
    );
    for t in &mut c.tiers {
        t.upstream = Some("local".into());
        t.alternates = vec![model_router::tier::Alternate {
            model: t.model.clone(),
            upstream: "local-anthropic".into(),
        }];
    }
    c
}

struct Server {
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
}

async fn start_server(config: &Config, router: Arc<Router>) -> Server {
    let state = AppState::new(config, |_| None).unwrap().with_router(router);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, state, async move {
        let _ = stopped.await;
    }));
    Server { url, stop }
}

/// The `route` phase of a `Server-Timing` header (the decision time), if any.
fn route_phase(headers: &reqwest::header::HeaderMap) -> Duration {
    headers
        .get("server-timing")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .find_map(|p| p.trim().strip_prefix("route;dur="))
                .and_then(|ms| ms.parse::<f64>().ok())
        })
        .map_or(Duration::ZERO, |ms| Duration::from_secs_f64(ms / 1e3))
}

/// Latencies of a closed loop: `concurrency` tasks sending `make(i)` to `url` for `secs`.
/// Returns (requests per second, sorted latencies, sorted latencies less the decision time
/// the server reported).
async fn closed_loop(
    client: &reqwest::Client,
    url: &str,
    concurrency: usize,
    secs: f64,
    make: Arc<dyn Fn(usize) -> String + Send + Sync>,
) -> (f64, Vec<Duration>, Vec<Duration>) {
    // Warm-up: open the connections and fill the caches.
    let warm = Instant::now() + Duration::from_secs_f64((secs / 5.0).min(1.0));
    let run = |until: Instant| {
        let tasks: Vec<_> = (0..concurrency)
            .map(|w| {
                let client = client.clone();
                let url = url.to_string();
                let make = make.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut i = w;
                    while Instant::now() < until {
                        let started = Instant::now();
                        let r = client.post(&url).body(make(i)).send().await.unwrap();
                        assert!(r.status().is_success(), "{}", r.status());
                        let decision = route_phase(r.headers());
                        r.bytes().await.unwrap();
                        let took = started.elapsed();
                        latencies.push((took, took.saturating_sub(decision)));
                        i += concurrency;
                    }
                    latencies
                })
            })
            .collect();
        async move {
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            all
        }
    };
    run(warm).await;
    let started = Instant::now();
    let all = run(started + Duration::from_secs_f64(secs)).await;
    let took = started.elapsed().as_secs_f64();
    let (mut total, mut less): (Vec<Duration>, Vec<Duration>) = all.into_iter().unzip();
    total.sort();
    less.sort();
    (total.len() as f64 / took, total, less)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn main() {
    let secs: f64 = std::env::var("LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let levels: Vec<usize> = std::env::var("LOAD_CONCURRENCY")
        .ok()
        .map(|s| s.split(',').map(|x| x.trim().parse().unwrap()).collect())
        .unwrap_or_else(|| vec![1, 8, 64]);
    let queries = Arc::new(queries());

    // Server and client on separate runtimes, two workers each.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let upstream = server_rt.block_on(start_upstream());
    let base = config(&upstream, 32);
    let embedder =
        load_embedder(&base.model_spec(), base.device().expect("device")).expect("the model loads");
    let embedder: Arc<dyn Embedder> = Arc::new(embedder);
    eprintln!(
        "building the router over {} ...",
        base.routing.examples.display()
    );
    let router = Arc::new(Router::from_config(&base, embedder, &|_, _| {}).unwrap());
    eprintln!(
        "{} examples, {} index, {} short queries, {secs} s per point",
        router.len(),
        router.index_kind(),
        queries.len()
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()
        .unwrap();

    let bench = Bench {
        server_rt,
        client_rt,
        client,
        router,
        upstream,
        queries,
        secs,
    };
    let only = std::env::var("LOAD_ONLY").unwrap_or_default();
    if only.is_empty() {
        throughput_and_forwarding(&bench, &levels);
    }
    if only.is_empty() || only == "fronts" {
        fronts_overhead(&bench);
    }
    if only.is_empty() || only == "huge" {
        huge_queries(&bench);
    }
    if only == "soak" {
        soak(&bench);
        return;
    }
    if only.is_empty() || only == "log" {
        decision_log_cost(&bench);
    }
}

/// What every phase shares: the runtimes, the client, the router and the upstream.
struct Bench {
    server_rt: tokio::runtime::Runtime,
    client_rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    router: Arc<Router>,
    upstream: String,
    queries: Arc<Vec<String>>,
    /// Seconds per measured point.
    secs: f64,
}

/// See the module docs: mixed traffic for `SOAK_SECS`, unexpected answers counted.
fn soak(b: &Bench) {
    let Bench {
        server_rt,
        client_rt,
        client,
        router,
        upstream,
        queries,
        ..
    } = b;
    let secs: f64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60.0);
    let server = server_rt.block_on(start_server(&config(upstream, 32), router.clone()));
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let rss_start = rss_mib();
    let started = Instant::now();
    let tasks: Vec<_> = (0..16)
        .map(|w| {
            let (client, base, q) = (client.clone(), server.url.clone(), queries.clone());
            client_rt.spawn(async move {
                let (mut done, mut unexpected) = (0usize, 0usize);
                let mut i = w;
                while Instant::now() < until {
                    let text = &q[i % q.len()];
                    let (path, body, want) = match i % 5 {
                        0 | 1 => ("/v1/route", serde_json::json!({"query": text}).to_string(), 200),
                        2 => ("/v1/chat/completions", serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": text}]}).to_string(), 200),
                        3 => ("/v1/chat/completions", serde_json::json!({"model": "small", "messages": [{"role": "user", "content": text}]}).to_string(), 200),
                        _ => ("/v1/route", "{\"query\": ".to_string(), 400),
                    };
                    match client.post(format!("{base}{path}")).body(body).send().await {
                        Ok(r) => {
                            unexpected += usize::from(r.status().as_u16() != want);
                            let _ = r.bytes().await;
                        }
                        Err(_) => unexpected += 1,
                    }
                    done += 1;
                    i += 16;
                }
                (done, unexpected)
            })
        })
        .collect();
    let (mut done, mut unexpected) = (0, 0);
    for t in tasks {
        let (d, u) = client_rt.block_on(t).unwrap();
        done += d;
        unexpected += u;
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "\nsoak: {done} requests in {took:.0} s ({:.0}/s) from 16 clients, {unexpected} unexpected \
         answers; RSS {:.0} MiB at start, {:.0} MiB at the end",
        done as f64 / took,
        rss_start,
        rss_mib()
    );
    let _ = server.stop.send(());
}

/// Resident set size of this process, in MiB (Linux; 0 elsewhere).
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Route p50 for normal clients (concurrency 4), alone and while two clients send ~1 MiB
/// queries back to back; RSS before, after the huge phase, and after a quiet second.
fn huge_queries(b: &Bench) {
    let Bench {
        server_rt,
        client_rt,
        client,
        router,
        upstream,
        queries,
        secs,
    } = b;
    let mut c = config(upstream, 32);
    c.server.body_limit_bytes = 2 << 20;
    let server = server_rt.block_on(start_server(&c, router.clone()));
    let url = format!("{}/v1/route", server.url);
    let q = queries.clone();
    let normal: Arc<dyn Fn(usize) -> String + Send + Sync> =
        Arc::new(move |i| serde_json::json!({"query": q[i % q.len()]}).to_string());
    let rss_before = rss_mib();
    let (_, alone, _) = client_rt.block_on(closed_loop(client, &url, 4, *secs, normal.clone()));
    let huge_bytes: usize = std::env::var("HUGE_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 20);
    let huge_text = format!("{} ", queries[0]).repeat(huge_bytes / (queries[0].len() + 1));
    let huge_body = serde_json::json!({"query": huge_text}).to_string();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let background: Vec<_> = (0..2)
        .map(|_| {
            let (client, url, body) = (client.clone(), url.clone(), huge_body.clone());
            let (stop, sent) = (stop.clone(), sent.clone());
            client_rt.spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = client.post(&url).body(body.clone()).send().await.unwrap();
                    assert!(r.status().is_success(), "{}", r.status());
                    r.bytes().await.unwrap();
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    let (_, during, _) = client_rt.block_on(closed_loop(client, &url, 4, *secs, normal));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in background {
        client_rt.block_on(t).unwrap();
    }
    let rss_after = rss_mib();
    std::thread::sleep(Duration::from_secs(1));
    let rss_quiet = rss_mib();
    println!("\n| normal routes, concurrency 4 | p50 ms | p99 ms |");
    println!("|---|---:|---:|");
    println!(
        "| alone | {:.2} | {:.2} |",
        pct(&alone, 0.5),
        pct(&alone, 0.99)
    );
    println!(
        "| while 2 clients send 1 MiB queries ({} sent) | {:.2} | {:.2} |",
        sent.load(std::sync::atomic::Ordering::Relaxed),
        pct(&during, 0.5),
        pct(&during, 0.99)
    );
    println!(
        "\np50 with huge queries / alone: {:.2}; RSS {:.0} MiB before, {:.0} MiB after, {:.0} MiB a second later",
        pct(&during, 0.5) / pct(&alone, 0.5),
        rss_before,
        rss_after,
        rss_quiet
    );
    let _ = server.stop.send(());
}

/// Forwarding overhead p50 at concurrency 1 per front (explicit tier, so no decision): the
/// request through the router minus the same request to the upstream directly, in three
/// alternating rounds; then each front's overhead minus chat completions'.
fn fronts_overhead(b: &Bench) {
    let Bench {
        server_rt,
        client_rt,
        client,
        router,
        upstream,
        queries,
        secs,
    } = b;
    let server = server_rt.block_on(start_server(&config(upstream, 32), router.clone()));
    type Make = Arc<dyn Fn(usize) -> String + Send + Sync>;
    let fronts: [(&str, &str, Make); 3] = {
        let (q1, q2, q3) = (queries.clone(), queries.clone(), queries.clone());
        [
            (
                "chat/completions",
                "/v1/chat/completions",
                Arc::new(move |i| {
                    serde_json::json!({"model": "small", "messages": [{"role": "user", "content": q1[i % q1.len()]}]}).to_string()
                }),
            ),
            (
                "responses",
                "/v1/responses",
                Arc::new(move |i| {
                    serde_json::json!({"model": "small", "input": q2[i % q2.len()]}).to_string()
                }),
            ),
            (
                "messages",
                "/v1/messages",
                Arc::new(move |i| {
                    serde_json::json!({"model": "small", "max_tokens": 16, "messages": [{"role": "user", "content": q3[i % q3.len()]}]}).to_string()
                }),
            ),
        ]
    };
    let p50 = |url: String, make: &Make| {
        let (_, lat, _) = client_rt.block_on(closed_loop(client, &url, 1, *secs, make.clone()));
        pct(&lat, 0.5)
    };
    let mut overhead = vec![Vec::new(); fronts.len()];
    for _round in 0..3 {
        for (i, (path, route, make)) in fronts.iter().enumerate() {
            let direct = p50(format!("{upstream}/{path}"), make);
            let through = p50(format!("{}{route}", server.url), make);
            overhead[i].push(through - direct);
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("\n| front (explicit tier, concurrency 1) | overhead p50 ms, 3 rounds | median | minus chat completions |");
    println!("|---|---|---:|---:|");
    let chat = median(&overhead[0]);
    for ((_, route, _), o) in fronts.iter().zip(&overhead) {
        let rounds: Vec<String> = o.iter().map(|x| format!("{x:.3}")).collect();
        println!(
            "| `{route}` | {} | {:.3} | {:+.3} |",
            rounds.join(", "),
            median(o),
            median(o) - chat
        );
    }
    let _ = server.stop.send(());
}

/// Route p50/p99 and routes/s at concurrency 1 and 8, with the decision log off and on, in
/// four alternating rounds per setting; prints the p50 ratio (on / off).
fn decision_log_cost(b: &Bench) {
    let Bench {
        server_rt,
        client_rt,
        client,
        router,
        upstream,
        queries,
        secs,
    } = b;
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("decisions.jsonl");
    println!("\n| decision log | concurrency | routes/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|");
    let mut ratios = Vec::new();
    for c in [1usize, 8] {
        let mut by_mode: [(Vec<Duration>, f64); 2] = [(Vec::new(), 0.0), (Vec::new(), 0.0)];
        for round in 0..4 {
            let on = round % 2 == 1;
            let mut config = config(upstream, 32);
            config.log.decisions = on.then(|| log_path.clone());
            let server = server_rt.block_on(start_server(&config, router.clone()));
            let q = queries.clone();
            let make: Arc<dyn Fn(usize) -> String + Send + Sync> =
                Arc::new(move |i| serde_json::json!({"query": q[i % q.len()]}).to_string());
            let url = format!("{}/v1/route", server.url);
            let (rps, lat, _) = client_rt.block_on(closed_loop(client, &url, c, secs / 2.0, make));
            let slot = &mut by_mode[usize::from(on)];
            slot.0.extend(lat);
            slot.1 += rps / 2.0;
            let _ = server.stop.send(());
        }
        let mut p50 = [0.0; 2];
        for (on, (lat, rps)) in by_mode.iter_mut().enumerate() {
            lat.sort();
            p50[on] = pct(lat, 0.5);
            println!(
                "| {} | {c} | {rps:.0} | {:.2} | {:.2} |",
                if on == 1 { "on" } else { "off" },
                p50[on],
                pct(lat, 0.99)
            );
        }
        ratios.push((c, p50[1] / p50[0]));
    }
    let written = std::fs::read_to_string(&log_path).map_or(0, |t| t.lines().count());
    for (c, r) in ratios {
        println!("decision log on / off, route p50 at concurrency {c}: {r:.3}");
    }
    println!("({written} decision records written)");
}

fn throughput_and_forwarding(b: &Bench, levels: &[usize]) {
    let Bench {
        server_rt,
        client_rt,
        client,
        router,
        upstream,
        queries,
        secs,
    } = b;
    let secs = *secs;
    let base = config(upstream, 32);
    println!("| batching | concurrency | routes/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|");
    let mut at_top = Vec::new();
    for (label, batch) in [("on (max 32)", 32), ("off (batch-1)", 1)] {
        let server = server_rt.block_on(start_server(&config(upstream, batch), router.clone()));
        for &c in levels {
            let q = queries.clone();
            let make: Arc<dyn Fn(usize) -> String + Send + Sync> =
                Arc::new(move |i| serde_json::json!({"query": q[i % q.len()]}).to_string());
            let url = format!("{}/v1/route", server.url);
            let (rps, lat, _) = client_rt.block_on(closed_loop(client, &url, c, secs, make));
            println!(
                "| {label} | {c} | {rps:.0} | {:.1} | {:.1} |",
                pct(&lat, 0.5),
                pct(&lat, 0.99)
            );
            if c == *levels.last().unwrap() {
                at_top.push(rps);
            }
        }
        let _ = server.stop.send(());
    }
    if at_top.len() == 2 {
        println!(
            "\nbatching speed-up at concurrency {}: {:.2}x",
            levels.last().unwrap(),
            at_top[0] / at_top[1]
        );
    }

    // Forwarding overhead, at concurrency 1.
    let server = server_rt.block_on(start_server(&base, router.clone()));
    let q = queries.clone();
    let chat = move |model: &'static str| -> Arc<dyn Fn(usize) -> String + Send + Sync> {
        let q = q.clone();
        Arc::new(move |i| {
            serde_json::json!({"model": model, "messages": [{"role": "user", "content": q[i % q.len()]}], "temperature": 0.2})
                .to_string()
        })
    };
    let q = queries.clone();
    let route: Arc<dyn Fn(usize) -> String + Send + Sync> =
        Arc::new(move |i| serde_json::json!({"query": q[i % q.len()]}).to_string());
    // p50 of the whole request, and p50 of the request less the decision time the server
    // reported in `Server-Timing` (per request, so decision-time noise cancels).
    let p50 = |url: String, make| {
        let (_, lat, less) = client_rt.block_on(closed_loop(client, &url, 1, secs, make));
        (pct(&lat, 0.5), pct(&less, 0.5))
    };
    let (direct, _) = p50(format!("{upstream}/chat/completions"), chat("small"));
    let (forced, _) = p50(format!("{}/v1/chat/completions", server.url), chat("small"));
    let (auto, auto_less) = p50(format!("{}/v1/chat/completions", server.url), chat("auto"));
    let (route_total, route_less) = p50(format!("{}/v1/route", server.url), route);
    println!("\n| path (concurrency 1) | p50 ms | p50 less the decision, ms |");
    println!("|---|---:|---:|");
    println!("| upstream called directly | {direct:.3} | |");
    println!("| through the router, explicit tier (no decision) | {forced:.3} | |");
    println!("| through the router, `auto` | {auto:.3} | {auto_less:.3} |");
    println!("| `POST /v1/route` | {route_total:.3} | {route_less:.3} |");
    println!(
        "\nforwarding overhead p50 (router minus decision, vs the upstream directly): \
         auto {:.3} ms; explicit tier {:.3} ms",
        auto_less - direct,
        forced - direct
    );
    let _ = server.stop.send(());
}
