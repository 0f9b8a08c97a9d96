//! The PostgreSQL store: the examples every replica routes with, and their vectors.
//!
//! Beside `server/` in the layering (async, tokio-postgres with a deadpool pool); the router
//! and the corpus know nothing of it. The schema is in `migrations/`, applied at start under an
//! advisory lock, so replicas starting together apply each migration once.
//!
//! Every write happens in one transaction that holds the write lock (an advisory lock) from
//! taking its sequence numbers to its commit, so numbers are committed in increasing order: a
//! replica that has applied every row up to `n` only ever needs the rows past `n`. A commit
//! announces itself with `NOTIFY model_router_examples`; replicas also poll, so a lost
//! notification (a dropped connection) only delays a row. Nothing of a failed transaction is
//! visible, to anyone.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use sha2::{Digest, Sha256};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::corpus::{Example, Label};
use crate::error::{Error, Result};

mod decisions;
pub use decisions::{replica_name, DecisionSink, FeedbackWritten, SinkCounts};

/// The notification channel for committed writes.
pub const CHANNEL: &str = "model_router_examples";

/// The schema, in order; each applied once, recorded in `router_migrations`.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../../migrations/0001_examples.sql")),
    (2, include_str!("../../migrations/0002_decisions.sql")),
];

/// Advisory lock keys: migrations, and writes (sequence numbers in commit order).
const MIGRATION_LOCK: i64 = 0x6d72_5f6d_6967;
const WRITE_LOCK: i64 = 0x6d72_5f77_7274;

/// An example as stored: its sequence number (the order replicas apply it in) and itself,
/// always with an id.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub seq: i64,
    pub example: Example,
}

/// A pool of connections to one store.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
}

/// A store error, with its causes: tokio-postgres says only `db error` or `error connecting
/// to server` at the top; what PostgreSQL or the socket said is in the source chain.
fn unavailable(what: &str, e: impl std::error::Error) -> Error {
    let mut message = format!("{what}: {e}");
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !message.ends_with(&cause_text) {
            message = format!("{message}: {cause_text}");
        }
        source = cause.source();
    }
    Error::StoreUnavailable(message)
}

/// SHA-256 of a text: how vectors are keyed.
pub fn text_sha256(text: &str) -> Vec<u8> {
    Sha256::digest(text.as_bytes()).to_vec()
}

/// TLS as libpq's `sslmode` asks for it: `verify-ca` and `verify-full` (which tokio-postgres
/// does not parse) become `require`, since this client verifies every certificate anyway.
fn normalise_sslmode(url: &str) -> String {
    url.replace("sslmode=verify-full", "sslmode=require")
        .replace("sslmode=verify-ca", "sslmode=require")
}

/// rustls with the public roots (webpki-roots) and the certificates of `ca_file`.
fn tls(ca_file: Option<&Path>) -> Result<MakeRustlsConnect> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| {
                Error::Config(format!(
                    "store.ca_file {}: not readable PEM certificates ({e})",
                    path.display()
                ))
            })?;
        if certs.is_empty() {
            return Err(Error::Config(format!(
                "store.ca_file {} holds no certificate",
                path.display()
            )));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| Error::Config(format!("store.ca_file {}: {e}", path.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("store TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

impl PgStore {
    /// A pool for `url` (`postgres://...`) with the public TLS roots; see [`PgStore::connect`].
    pub fn new(url: &str, pool_size: usize) -> Result<PgStore> {
        Self::connect(url, pool_size, None)
    }

    /// A pool for `url` (`postgres://...`); connects lazily. TLS as the URL's `sslmode` says
    /// (`prefer` when absent), trusting the public roots and `ca_file`'s certificates. The
    /// URL's password never appears in errors.
    pub fn connect(url: &str, pool_size: usize, ca_file: Option<&Path>) -> Result<PgStore> {
        let config = tokio_postgres::Config::from_str(&normalise_sslmode(url)).map_err(|e| {
            Error::Config(format!(
                "store: the URL is not a valid postgres:// URL ({e})"
            ))
        })?;
        let tls = tls(ca_file)?;
        let mut pg = config.clone();
        pg.connect_timeout(Duration::from_secs(5));
        let manager = Manager::from_config(
            pg,
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::Config(format!("store: {e}")))?;
        Ok(PgStore { pool, config, tls })
    }

    /// Where the store is, for messages: host, port and database, never the password.
    pub fn describe(&self) -> String {
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!(
            "{}:{port}/{}",
            hosts.join(","),
            self.config.get_dbname().unwrap_or("")
        )
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool
            .get()
            .await
            .map_err(|e| unavailable(&format!("connecting to {}", self.describe()), e))
    }

    /// Applies the migrations not applied yet, under an advisory lock: replicas starting
    /// together wait for each other, and each migration runs once.
    pub async fn migrate(&self) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| unavailable("migrating", e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| unavailable("migrating", e))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS router_migrations (
                 version INTEGER PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await
        .map_err(|e| unavailable("migrating", e))?;
        let applied: Vec<i32> = tx
            .query("SELECT version FROM router_migrations", &[])
            .await
            .map_err(|e| unavailable("migrating", e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for (version, sql) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            tx.batch_execute(sql)
                .await
                .map_err(|e| unavailable(&format!("applying migration {version}"), e))?;
            tx.execute(
                "INSERT INTO router_migrations (version) VALUES ($1)",
                &[version],
            )
            .await
            .map_err(|e| unavailable("migrating", e))?;
        }
        tx.commit().await.map_err(|e| unavailable("migrating", e))
    }

    /// What the store holds, read only (nothing is migrated: a store no replica or import has
    /// opened yet shows no migrations and nothing in it).
    pub async fn status(&self) -> Result<StoreStatus> {
        let client = self.client().await?;
        let fail = |e| unavailable("reading the store's status", e);
        let mut status = StoreStatus {
            store: self.describe(),
            database_bytes: client
                .query_one("SELECT pg_database_size(current_database())", &[])
                .await
                .map_err(fail)?
                .get(0),
            ..StoreStatus::default()
        };
        let initialised: bool = client
            .query_one("SELECT to_regclass('router_migrations') IS NOT NULL", &[])
            .await
            .map_err(fail)?
            .get(0);
        if !initialised {
            return Ok(status);
        }
        status.migrations = client
            .query(
                "SELECT version FROM router_migrations ORDER BY version",
                &[],
            )
            .await
            .map_err(fail)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if status.migrations.contains(&1) {
            let row = client
                .query_one(
                    "SELECT count(*), COALESCE(max(seq), 0), max(updated_at)::text
                     FROM router_examples",
                    &[],
                )
                .await
                .map_err(fail)?;
            (status.examples, status.last_seq, status.last_write) =
                (row.get(0), row.get(1), row.get(2));
            status.vectors = client
                .query(
                    "SELECT model_sha256, count(*) FROM router_vectors
                     GROUP BY model_sha256 ORDER BY count(*) DESC, model_sha256",
                    &[],
                )
                .await
                .map_err(fail)?
                .iter()
                .map(|r| ModelVectors {
                    model_sha256: r.get(0),
                    count: r.get(1),
                })
                .collect();
        }
        if status.migrations.contains(&2) {
            let row = client
                .query_one(
                    "SELECT count(*), min(at)::text, max(at)::text FROM router_decisions",
                    &[],
                )
                .await
                .map_err(fail)?;
            status.decisions = DecisionSpan {
                count: row.get(0),
                oldest: row.get(1),
                newest: row.get(2),
            };
            status.feedback = client
                .query_one("SELECT count(*) FROM router_feedback", &[])
                .await
                .map_err(fail)?
                .get(0);
        }
        Ok(status)
    }

    /// The examples past sequence number `after`, in order.
    pub async fn examples_after(&self, after: i64) -> Result<Vec<Stored>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {EXAMPLE_COLUMNS} FROM router_examples WHERE seq > $1 ORDER BY seq"
                ),
                &[&after],
            )
            .await
            .map_err(|e| unavailable("reading examples", e))?;
        rows.iter().map(row_example).collect()
    }

    /// The stored vectors of `texts` for a model (`None` where there is none).
    pub async fn vectors(&self, model: &str, texts: &[&str]) -> Result<Vec<Option<Vec<f32>>>> {
        let client = self.client().await?;
        let hashes: Vec<Vec<u8>> = texts.iter().map(|t| text_sha256(t)).collect();
        let mut found = std::collections::HashMap::with_capacity(hashes.len());
        for chunk in hashes.chunks(10_000) {
            let rows = client
                .query(
                    "SELECT text_sha256, vector FROM router_vectors
                     WHERE model_sha256 = $1 AND text_sha256 = ANY($2)",
                    &[&model, &chunk],
                )
                .await
                .map_err(|e| unavailable("reading vectors", e))?;
            for r in rows {
                let hash: Vec<u8> = r.get(0);
                let bytes: Vec<u8> = r.get(1);
                let v: Vec<f32> = bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                found.insert(hash, v);
            }
        }
        Ok(hashes.iter().map(|h| found.get(h).cloned()).collect())
    }

    /// Stores vectors (kept if present already).
    pub async fn put_vectors(&self, model: &str, items: &[(&str, &[f32])]) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| unavailable("writing vectors", e))?;
        insert_vectors(&tx, model, items).await?;
        tx.commit()
            .await
            .map_err(|e| unavailable("writing vectors", e))
    }

    /// Writes new examples (and their vectors) in one transaction and announces them. An id
    /// the store holds, or one repeated in `examples`, refuses the whole write
    /// ([`Error::DuplicateIds`]). An example without id gets `ex-<seq>`. Returns the last
    /// sequence number written.
    pub async fn write(
        &self,
        examples: &[Example],
        model: &str,
        vectors: &[Vec<f32>],
    ) -> Result<i64> {
        refuse_repeated_ids(examples)?;
        let mut client = self.client().await?;
        let fail = |e: tokio_postgres::Error| unavailable("writing examples", e);
        let tx = write_transaction(&mut client, "writing examples").await?;
        let taken = taken_ids(&tx, examples).await?;
        if !taken.is_empty() {
            return Err(duplicate_ids(&taken));
        }
        let seqs = next_seqs(&tx, examples.len()).await?;
        let ids: Vec<String> = examples
            .iter()
            .zip(&seqs)
            .map(|(e, seq)| e.id.clone().unwrap_or_else(|| format!("ex-{seq}")))
            .collect();
        let numbered: Vec<(&Example, &str, i64)> = examples
            .iter()
            .zip(&ids)
            .zip(&seqs)
            .map(|((e, id), &seq)| (e, id.as_str(), seq))
            .collect();
        upsert_examples(&tx, &numbered).await?;
        let last = seqs.last().copied().unwrap_or(0);
        let items: Vec<(&str, &[f32])> = examples
            .iter()
            .map(|e| e.text.as_str())
            .zip(vectors.iter().map(Vec::as_slice))
            .collect();
        insert_vectors(&tx, model, &items).await?;
        tx.execute(&format!("NOTIFY {CHANNEL}"), &[])
            .await
            .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        Ok(last)
    }

    /// The ids of `examples` the store holds already, sorted.
    pub async fn existing_ids(&self, examples: &[Example]) -> Result<Vec<String>> {
        let client = self.client().await?;
        taken_ids(&client, examples).await
    }

    /// The highest sequence number written (0 for an empty store).
    pub async fn last_seq(&self) -> Result<i64> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT COALESCE(MAX(seq), 0) FROM router_examples", &[])
            .await
            .map_err(|e| unavailable("reading examples", e))?;
        Ok(row.get(0))
    }

    /// A connection that listens on [`CHANNEL`]: [`Listener::rx`] gets a message per
    /// notification and closes when the connection drops (the caller reconnects, and catches
    /// up by sequence number).
    pub async fn listen(&self) -> Result<Listener> {
        let (client, mut connection) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(|e| unavailable(&format!("listening on {}", self.describe()), e))?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            use futures_util::StreamExt;
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                        // A full channel already holds a wake-up: nothing is lost.
                        let _ = tx.try_send(());
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(|e| unavailable("listening", e))?;
        Ok(Listener {
            _client: client,
            rx,
        })
    }
}

/// What a store holds (`model-router store status`).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct StoreStatus {
    /// host:port/database.
    pub store: String,
    /// Migrations applied, in order.
    pub migrations: Vec<i32>,
    pub examples: i64,
    /// The highest sequence number: where a replica that has caught up stands.
    pub last_seq: i64,
    /// When an example was last added or updated.
    pub last_write: Option<String>,
    /// Stored vectors per model (a model's weights SHA-256); a replica of another model embeds.
    pub vectors: Vec<ModelVectors>,
    pub decisions: DecisionSpan,
    /// Pieces of feedback recorded.
    pub feedback: i64,
    pub database_bytes: i64,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ModelVectors {
    pub model_sha256: String,
    pub count: i64,
}

/// The stored decisions: how many, and the times of the oldest and newest.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct DecisionSpan {
    pub count: i64,
    pub oldest: Option<String>,
    pub newest: Option<String>,
}

/// A listening connection (see [`PgStore::listen`]).
pub struct Listener {
    _client: tokio_postgres::Client,
    pub rx: tokio::sync::mpsc::Receiver<()>,
}

async fn taken_ids(
    client: &impl deadpool_postgres::GenericClient,
    examples: &[Example],
) -> Result<Vec<String>> {
    let ids: Vec<&str> = examples.iter().filter_map(|e| e.id.as_deref()).collect();
    Ok(client
        .query(
            "SELECT id FROM router_examples WHERE id = ANY($1) ORDER BY id",
            &[&ids],
        )
        .await
        .map_err(|e| unavailable("reading example ids", e))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// [`Error::DuplicateIds`] naming the first ten.
pub fn duplicate_ids(taken: &[String]) -> Error {
    let shown = taken
        .iter()
        .take(10)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let more = taken.len().saturating_sub(10);
    Error::DuplicateIds(if more > 0 {
        format!("{shown} and {more} more")
    } else {
        shown
    })
}

/// The columns [`row_example`] reads, in its order.
const EXAMPLE_COLUMNS: &str = "seq, id, text, label::text, category, meta::text";

/// An example row ([`EXAMPLE_COLUMNS`]).
fn row_example(r: &tokio_postgres::Row) -> Result<Stored> {
    let label: String = r.get(3);
    let meta: Option<String> = r.get(5);
    let label: Label = serde_json::from_str(&label)
        .map_err(|e| Error::StoreUnavailable(format!("a stored label: {e}")))?;
    let meta = meta
        .map(|m| serde_json::from_str(&m))
        .transpose()
        .map_err(|e| Error::StoreUnavailable(format!("a stored meta: {e}")))?;
    Ok(Stored {
        seq: r.get(0),
        example: Example {
            id: Some(r.get(1)),
            text: r.get(2),
            label,
            category: r.get(4),
            meta,
        },
    })
}

/// Rows per multi-row statement (a round trip each, rather than one per row).
const BATCH_ROWS: usize = 1000;

/// [`Error::DuplicateIds`] for an id that comes twice in one write (one multi-row upsert
/// cannot touch a row twice).
fn refuse_repeated_ids(examples: &[Example]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    let repeated: Vec<String> = examples
        .iter()
        .filter_map(|e| e.id.as_deref())
        .filter(|id| !seen.insert(*id))
        .map(str::to_string)
        .collect();
    if repeated.is_empty() {
        Ok(())
    } else {
        Err(duplicate_ids(&repeated))
    }
}

/// A transaction holding [`WRITE_LOCK`]: every write of examples takes one, so sequence
/// numbers commit in increasing order.
async fn write_transaction<'a>(
    client: &'a mut deadpool_postgres::Object,
    what: &str,
) -> Result<deadpool_postgres::Transaction<'a>> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| unavailable(what, e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
        .await
        .map_err(|e| unavailable(what, e))?;
    Ok(tx)
}

/// `n` new sequence numbers, increasing (the caller holds [`WRITE_LOCK`], so they are also
/// above every committed one).
async fn next_seqs(tx: &deadpool_postgres::Transaction<'_>, n: usize) -> Result<Vec<i64>> {
    let n = i64::try_from(n).expect("a batch size fits i64");
    let mut seqs: Vec<i64> = tx
        .query(
            "SELECT nextval('router_example_seq') FROM generate_series(1, $1::int8)",
            &[&n],
        )
        .await
        .map_err(|e| unavailable("writing examples", e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    seqs.sort_unstable();
    Ok(seqs)
}

/// Inserts examples as `(example, id, seq)`, or updates the rows with those ids (they take
/// the new numbers). The ids are distinct.
async fn upsert_examples(
    tx: &deadpool_postgres::Transaction<'_>,
    rows: &[(&Example, &str, i64)],
) -> Result<()> {
    for chunk in rows.chunks(BATCH_ROWS) {
        let ids: Vec<&str> = chunk.iter().map(|r| r.1).collect();
        let seqs: Vec<i64> = chunk.iter().map(|r| r.2).collect();
        let texts: Vec<&str> = chunk.iter().map(|r| r.0.text.as_str()).collect();
        let labels: Vec<String> = chunk
            .iter()
            .map(|r| serde_json::to_string(&r.0.label).expect("labels serialise"))
            .collect();
        let categories: Vec<Option<&str>> = chunk.iter().map(|r| r.0.category.as_deref()).collect();
        let metas: Vec<Option<String>> = chunk
            .iter()
            .map(|r| r.0.meta.as_ref().map(|m| m.to_string()))
            .collect();
        let hashes: Vec<Vec<u8>> = texts.iter().map(|t| text_sha256(t)).collect();
        tx.execute(
            "INSERT INTO router_examples (id, seq, text, label, category, meta, text_sha256)
             SELECT id, seq, text, label::jsonb, category, meta::jsonb, sha
             FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::bytea[]) AS u(id, seq, text, label, category, meta, sha)
             ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, text = EXCLUDED.text,
                 label = EXCLUDED.label, category = EXCLUDED.category,
                 meta = EXCLUDED.meta, text_sha256 = EXCLUDED.text_sha256,
                 updated_at = now()",
            &[&ids, &seqs, &texts, &labels, &categories, &metas, &hashes],
        )
        .await
        .map_err(|e| unavailable("writing examples", e))?;
    }
    Ok(())
}

/// Inserts an example as `id` with sequence number `seq`, or updates the row with that id.
async fn upsert_example(
    tx: &deadpool_postgres::Transaction<'_>,
    e: &Example,
    id: &str,
    seq: i64,
) -> Result<()> {
    upsert_examples(tx, &[(e, id, seq)]).await
}

/// Stores `(text, vector)` pairs for a model (a text it has a vector for keeps it).
async fn insert_vectors(
    tx: &deadpool_postgres::Transaction<'_>,
    model: &str,
    items: &[(&str, &[f32])],
) -> Result<()> {
    for chunk in items.chunks(BATCH_ROWS) {
        let hashes: Vec<Vec<u8>> = chunk.iter().map(|(t, _)| text_sha256(t)).collect();
        let dims: Vec<i32> = chunk
            .iter()
            .map(|(_, v)| i32::try_from(v.len()).expect("a model dimension fits i32"))
            .collect();
        let bytes: Vec<Vec<u8>> = chunk
            .iter()
            .map(|(_, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
            .collect();
        tx.execute(
            "INSERT INTO router_vectors (model_sha256, text_sha256, dim, vector)
             SELECT $1, h, d, v FROM UNNEST($2::bytea[], $3::int4[], $4::bytea[]) AS u(h, d, v)
             ON CONFLICT DO NOTHING",
            &[&model, &hashes, &dims, &bytes],
        )
        .await
        .map_err(|e| unavailable("writing vectors", e))?;
    }
    Ok(())
}

/// What loading a router from the store did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    pub examples: usize,
    /// Vectors read from the store.
    pub stored_vectors: usize,
    /// Examples embedded now (their vectors are stored for the next replica).
    pub embedded: usize,
    /// The last sequence number applied.
    pub seq: i64,
}

/// Builds a router over every stored example: vectors from the store where it has them for
/// this model, the rest embedded here (off the async threads) and stored.
pub async fn load_router(
    store: &PgStore,
    embedder: std::sync::Arc<dyn crate::embed::Embedder>,
    tiers: crate::tier::Tiers,
    options: crate::router::RouterOptions,
) -> Result<(crate::router::Router, Loaded)> {
    let rows = store.examples_after(0).await?;
    let seq = rows.last().map_or(0, |r| r.seq);
    let examples: Vec<Example> = rows.into_iter().map(|r| r.example).collect();
    let model = embedder.info().sha256.clone();
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let mut vectors = store.vectors(&model, &texts).await?;
    let stored_vectors = vectors.iter().filter(|v| v.is_some()).count();
    let missing: Vec<usize> = (0..vectors.len())
        .filter(|&i| vectors[i].is_none())
        .collect();
    if !missing.is_empty() {
        let owned: Vec<String> = missing.iter().map(|&i| texts[i].to_string()).collect();
        let e = embedder.clone();
        let embedded = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
            e.embed(&refs)
        })
        .await
        .map_err(|e| Error::Embed(format!("embedding stored examples: {e}")))??;
        let items: Vec<(&str, &[f32])> = missing
            .iter()
            .map(|&i| texts[i])
            .zip(embedded.iter().map(Vec::as_slice))
            .collect();
        store.put_vectors(&model, &items).await?;
        for (&i, v) in missing.iter().zip(embedded) {
            vectors[i] = Some(v);
        }
    }
    let vectors: Vec<Vec<f32>> = vectors.into_iter().map(|v| v.expect("filled")).collect();
    let loaded = Loaded {
        examples: examples.len(),
        stored_vectors,
        embedded: missing.len(),
        seq,
    };
    let router = tokio::task::spawn_blocking(move || {
        let router = crate::router::Router::with_capacity(embedder, tiers, options, examples.len());
        router.add_embedded(examples, &vectors).map(|()| router)
    })
    .await
    .map_err(|e| Error::Index(format!("indexing stored examples: {e}")))??;
    Ok((router, loaded))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(id: Option<&str>, text: &str) -> Example {
        Example {
            id: id.map(str::to_string),
            text: text.to_string(),
            label: crate::corpus::Label::Tier {
                tier: "small".into(),
            },
            category: None,
            meta: None,
        }
    }

    #[test]
    fn an_id_repeated_in_one_write_refuses_it() {
        let examples = [
            example(Some("a"), "first a"),
            example(None, "no id"),
            example(Some("b"), "b"),
            example(Some("a"), "second a"),
            example(None, "no id either"),
        ];
        match refuse_repeated_ids(&examples) {
            Err(Error::DuplicateIds(ids)) => assert_eq!(ids, "a"),
            other => panic!("expected DuplicateIds, got {other:?}"),
        }
        let distinct = [
            example(Some("a"), "a"),
            example(Some("b"), "b"),
            example(None, "no id"),
            example(None, "no id"),
        ];
        assert!(refuse_repeated_ids(&distinct).is_ok());
    }
}
