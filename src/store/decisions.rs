//! Decision records and feedback history in the store (migration 2).
//!
//! Decisions are written by the replica that made them, in batches, by [`DecisionSink`]'s
//! task: a request only queues its record (never waits on the store); a full queue drops the
//! record and counts it. Feedback is written in the transaction that writes the example it
//! becomes ([`PgStore::write_feedback`]), reading that example as committed, under the write
//! lock: two replicas taking feedback on one decision at once merge, never overwrite.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{
    insert_vectors, next_seqs, row_example, unavailable, upsert_example, write_transaction,
    PgStore, CHANNEL, EXAMPLE_COLUMNS,
};
use crate::corpus::Example;
use crate::decision_log::DecisionRecord;
use crate::error::{Error, Result};
use crate::feedback::Applied;

/// Most records written in one statement.
const BATCH: usize = 500;
/// Advisory lock key for pruning old decisions (one replica at a time does it).
const PRUNE_LOCK: i64 = 0x6d72_5f70_726e;

/// What a piece of feedback did, as stored.
#[derive(Debug, Clone)]
pub struct FeedbackWritten {
    pub example: Example,
    pub applied: Applied,
}

impl PgStore {
    /// Writes decision records (one statement; a record already there is kept).
    pub async fn insert_decisions(
        &self,
        records: &[Arc<DecisionRecord>],
        replica: &str,
    ) -> Result<()> {
        let client = self.client().await?;
        let plain: Vec<&DecisionRecord> = records.iter().map(|r| &**r).collect();
        let json = serde_json::to_string(&plain).expect("decision records serialise");
        client
            .execute(
                "INSERT INTO router_decisions (id, at, replica, tier, record)
                 SELECT r->>'id', (r->>'time')::timestamptz, $2, r->>'tier', r
                 FROM jsonb_array_elements($1::text::jsonb) AS r
                 ON CONFLICT (id) DO NOTHING",
                &[&json, &replica],
            )
            .await
            .map_err(|e| unavailable("writing decisions", e))?;
        Ok(())
    }

    /// A stored decision by id.
    pub async fn decision(&self, id: &str) -> Result<Option<DecisionRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT record::text FROM router_decisions WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(|e| unavailable("reading a decision", e))?;
        row.map(|r| {
            let text: String = r.get(0);
            serde_json::from_str(&text)
                .map_err(|e| Error::StoreUnavailable(format!("a stored decision `{id}`: {e}")))
        })
        .transpose()
    }

    /// Every stored decision from `since` (RFC 3339; all when `None`), oldest first, as its JSON
    /// record, streamed to `each`. Returns how many.
    pub async fn each_decision(
        &self,
        since: Option<&str>,
        mut each: impl FnMut(&str) -> Result<()>,
    ) -> Result<usize> {
        use futures_util::StreamExt;
        let client = self.client().await?;
        let since = since.unwrap_or("-infinity");
        let fail = |e| unavailable("reading decisions", e);
        let rows = client
            .query_raw(
                "SELECT record::text FROM router_decisions
                 WHERE at >= $1::text::timestamptz ORDER BY at, id",
                [&since],
            )
            .await
            .map_err(fail)?;
        let mut rows = std::pin::pin!(rows);
        let mut n = 0;
        while let Some(row) = rows.next().await {
            let text: String = row.map_err(fail)?.get(0);
            each(&text)?;
            n += 1;
        }
        Ok(n)
    }

    /// Deletes decisions older than `days`, unless another replica is doing it now. Returns
    /// how many went.
    pub async fn prune_decisions(&self, days: u32) -> Result<u64> {
        let mut client = self.client().await?;
        let fail = |e| unavailable("pruning decisions", e);
        let tx = client.transaction().await.map_err(fail)?;
        let mine: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&PRUNE_LOCK])
            .await
            .map_err(fail)?
            .get(0);
        if !mine {
            return Ok(0);
        }
        let days = i32::try_from(days).unwrap_or(i32::MAX);
        let n = tx
            .execute(
                "DELETE FROM router_decisions WHERE at < now() - make_interval(days => $1)",
                &[&days],
            )
            .await
            .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        Ok(n)
    }

    /// Applies feedback to the example `example_id` as the store holds it now: under the write
    /// lock, `merge` gets the committed example (or `None`) and says what it becomes; a changed
    /// example is written with `vector` (its text's embedding) and announced, and the feedback
    /// is recorded in `router_feedback`, all in one transaction. An error from `merge` (a
    /// conflict) writes nothing.
    #[allow(clippy::too_many_arguments)]
    pub async fn write_feedback<F>(
        &self,
        example_id: &str,
        decision_id: &str,
        feedback: &serde_json::Value,
        replica: &str,
        model: &str,
        vector: &[f32],
        merge: F,
    ) -> Result<FeedbackWritten>
    where
        F: FnOnce(Option<Example>) -> Result<(Example, Applied)> + Send,
    {
        let mut client = self.client().await?;
        let fail = |e: tokio_postgres::Error| unavailable("writing feedback", e);
        let tx = write_transaction(&mut client, "writing feedback").await?;
        let current = tx
            .query_opt(
                &format!("SELECT {EXAMPLE_COLUMNS} FROM router_examples WHERE id = $1"),
                &[&example_id],
            )
            .await
            .map_err(fail)?
            .map(|r| row_example(&r))
            .transpose()?
            .map(|s| s.example);
        let (example, applied) = merge(current)?;
        if applied != Applied::Unchanged {
            let seq = next_seqs(&tx, 1).await?[0];
            upsert_example(&tx, &example, example_id, seq).await?;
            insert_vectors(&tx, model, &[(example.text.as_str(), vector)]).await?;
            tx.execute(&format!("NOTIFY {CHANNEL}"), &[])
                .await
                .map_err(fail)?;
        }
        let label = serde_json::to_string(&example.label).expect("labels serialise");
        let body = feedback.to_string();
        tx.execute(
            "INSERT INTO router_feedback
                 (decision_id, example_id, replica, feedback, result, label)
             VALUES ($1, $2, $3, $4::text::jsonb, $5, $6::text::jsonb)",
            &[
                &decision_id,
                &example_id,
                &replica,
                &body,
                &applied.as_str(),
                &label,
            ],
        )
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        Ok(FeedbackWritten { example, applied })
    }
}

/// Who wrote a row: the host's name (a pod's name on Kubernetes) and the process id.
pub fn replica_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    format!("{host}/{}", std::process::id())
}

/// Counters of a [`DecisionSink`].
#[derive(Debug, Default)]
pub struct SinkCounts {
    /// Records queued.
    pub accepted: AtomicU64,
    /// Records committed to the store.
    pub written: AtomicU64,
    /// Records dropped: the queue was full (the store slow or away for long).
    pub dropped: AtomicU64,
    /// Whether the last write attempt failed (the batch is being retried).
    pub failing: AtomicBool,
}

/// Writes decision records to the store in batches, off the request path.
#[derive(Clone)]
pub struct DecisionSink {
    tx: tokio::sync::mpsc::Sender<Arc<DecisionRecord>>,
    counts: Arc<SinkCounts>,
}

impl DecisionSink {
    /// Starts the writer task (on the current tokio runtime): it takes what is queued, up to
    /// [`BATCH`] records, writes it in one statement, and on failure retries the same batch
    /// with backoff (up to 10 s) while new records queue (up to `capacity`, then dropped).
    /// With `keep_days` > 0 it also deletes older decisions, at start and hourly.
    pub fn start(store: PgStore, capacity: usize, keep_days: u32) -> DecisionSink {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Arc<DecisionRecord>>(capacity.max(1));
        let counts = Arc::new(SinkCounts::default());
        let c = counts.clone();
        let replica = replica_name();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            let mut pruned_at: Option<tokio::time::Instant> = None;
            loop {
                if batch.is_empty() {
                    match rx.recv().await {
                        Some(r) => batch.push(r),
                        None => return,
                    }
                }
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
                let mut backoff = Duration::from_millis(100);
                loop {
                    match store.insert_decisions(&batch, &replica).await {
                        Ok(()) => {
                            c.written.fetch_add(batch.len() as u64, Ordering::Relaxed);
                            c.failing.store(false, Ordering::Relaxed);
                            batch.clear();
                            break;
                        }
                        Err(e) => {
                            if !c.failing.swap(true, Ordering::Relaxed) {
                                tracing::warn!(error = %e, queued = batch.len(), "store: writing decisions failed; retrying");
                            }
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(10));
                        }
                    }
                }
                let due = pruned_at.is_none_or(|t| t.elapsed() > Duration::from_secs(3600));
                if keep_days > 0 && due {
                    pruned_at = Some(tokio::time::Instant::now());
                    match store.prune_decisions(keep_days).await {
                        Ok(0) => {}
                        Ok(n) => {
                            tracing::info!(deleted = n, keep_days, "store: old decisions deleted")
                        }
                        Err(e) => tracing::warn!(error = %e, "store: pruning decisions failed"),
                    }
                }
            }
        });
        DecisionSink { tx, counts }
    }

    /// Queues a record; never waits. False if it was dropped (the queue is full).
    pub fn log(&self, record: Arc<DecisionRecord>) -> bool {
        match self.tx.try_send(record) {
            Ok(()) => {
                self.counts.accepted.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_) => {
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Waits until every record queued so far is written, or `timeout` passes (the store is
    /// away); returns how many are still unwritten. For shutdown.
    pub async fn flush(&self, timeout: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = self.queued();
            if left == 0 || tokio::time::Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Records not written yet: queued, or in the batch being written (or retried).
    pub fn queued(&self) -> u64 {
        self.counts
            .accepted
            .load(Ordering::Relaxed)
            .saturating_sub(self.counts.written.load(Ordering::Relaxed))
    }

    pub fn counts(&self) -> &SinkCounts {
        &self.counts
    }
}
