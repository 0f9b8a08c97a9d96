//! A server backed by the PostgreSQL store (`[store]`): its writes go to the store, and it
//! follows every other replica's.
//!
//! [`Replica::catch_up`] applies the stored rows past the last sequence number applied, in
//! order, once each; it runs on each notification, every `store.poll_secs` (a lost
//! notification only delays a row), after each reconnection, and after this replica's own
//! writes (so their `201` means routable here). Writes embed first, then commit rows and
//! vectors in one transaction: a write the store refuses or never commits leaves nothing.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use super::ApiError;
use crate::corpus::Example;
use crate::error::Error;
use crate::router::Router;
use crate::store::{DecisionSink, PgStore};

/// The store, and how far this replica has applied it.
pub(crate) struct Replica {
    pub store: PgStore,
    /// The last sequence number applied to the index.
    applied: tokio::sync::Mutex<i64>,
    /// The same, readable without waiting (for `/readyz` and metrics).
    applied_now: AtomicI64,
    poll: Duration,
    /// Whether the last exchange with the store worked, and since when.
    health: Mutex<Health>,
    /// `store.decisions`: the writer of decision records.
    decisions: OnceLock<DecisionSink>,
    /// Who this replica is in the rows it writes.
    pub name: String,
}

/// The store as this replica last found it.
#[derive(Debug, Clone)]
pub(crate) struct Health {
    /// The last error, while the store is unreachable.
    pub error: Option<String>,
    /// When the store became reachable or unreachable.
    pub since: SystemTime,
}

impl Replica {
    pub fn new(store: PgStore, applied: i64, poll: Duration) -> Replica {
        Replica {
            store,
            applied: tokio::sync::Mutex::new(applied),
            applied_now: AtomicI64::new(applied),
            poll,
            health: Mutex::new(Health {
                error: None,
                since: SystemTime::now(),
            }),
            decisions: OnceLock::new(),
            name: crate::store::replica_name(),
        }
    }

    /// The last sequence number applied.
    pub fn applied(&self) -> i64 {
        self.applied_now.load(Ordering::Relaxed)
    }

    pub fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records how an exchange with the store went: only reachability counts (a refused
    /// duplicate id is the store working).
    fn observe<T>(&self, result: &crate::error::Result<T>) {
        let error = match result {
            Err(Error::StoreUnavailable(m)) => Some(m.clone()),
            _ => None,
        };
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if health.error.is_some() != error.is_some() {
            health.since = SystemTime::now();
            match &error {
                Some(e) => tracing::warn!(error = %e, "store: unreachable"),
                None => tracing::info!("store: reachable again"),
            }
        }
        health.error = error;
    }

    /// Starts writing decision records to the store; false if it was started already.
    pub fn start_decisions(&self, capacity: usize, keep_days: u32) -> bool {
        let mut started = false;
        self.decisions.get_or_init(|| {
            started = true;
            DecisionSink::start(self.store.clone(), capacity, keep_days)
        });
        started
    }

    pub fn decisions(&self) -> Option<&DecisionSink> {
        self.decisions.get()
    }

    /// Applies the rows written since the last one applied; returns how many.
    pub async fn catch_up(&self, router: &Arc<Router>) -> crate::error::Result<usize> {
        let result = self.apply_new(router).await;
        self.observe(&result);
        result
    }

    async fn apply_new(&self, router: &Arc<Router>) -> crate::error::Result<usize> {
        let mut applied = self.applied.lock().await;
        let rows = self.store.examples_after(*applied).await?;
        let Some(last) = rows.last().map(|r| r.seq) else {
            return Ok(0);
        };
        let model = router.embedder().info().sha256.clone();
        let texts: Vec<&str> = rows.iter().map(|r| r.example.text.as_str()).collect();
        let vectors = self.store.vectors(&model, &texts).await?;
        let n = rows.len();
        let router = router.clone();
        tokio::task::spawn_blocking(move || {
            for (row, vector) in rows.into_iter().zip(vectors) {
                router.upsert_with(row.example, vector)?;
            }
            Ok::<(), Error>(())
        })
        .await
        .map_err(|e| Error::Index(format!("applying stored examples: {e}")))??;
        *applied = last;
        self.applied_now.store(last, Ordering::Relaxed);
        Ok(n)
    }

    /// Writes new examples (embedded here first) to the store, then applies them; an id the
    /// store holds refuses the write.
    pub async fn write(
        &self,
        router: &Arc<Router>,
        examples: Vec<Example>,
    ) -> Result<(), ApiError> {
        let model = router.embedder().info().sha256.clone();
        let texts: Vec<String> = examples.iter().map(|e| e.text.clone()).collect();
        let vectors = embed(router, texts).await?;
        let written = self.store.write(&examples, &model, &vectors).await;
        self.observe(&written);
        written.map_err(store_error)?;
        self.catch_up(router).await.map_err(store_error)?;
        Ok(())
    }

    /// Feedback on `decision` through the store: the decision's text embedded here, then
    /// `merge` applied to its example as committed (see [`PgStore::write_feedback`]), then
    /// applied here. Errors are the store's or `merge`'s (a conflict), unchanged.
    pub async fn write_feedback<F>(
        &self,
        router: &Arc<Router>,
        decision: &crate::decision_log::DecisionRecord,
        feedback: &serde_json::Value,
        merge: F,
    ) -> crate::error::Result<crate::store::FeedbackWritten>
    where
        F: FnOnce(Option<Example>) -> crate::error::Result<(Example, crate::feedback::Applied)>
            + Send,
    {
        let model = router.embedder().info().sha256.clone();
        let vector = embed(router, vec![decision.query.clone()])
            .await?
            .pop()
            .expect("one text, one vector");
        let example_id = crate::feedback::example_id(&decision.id);
        let written = self
            .store
            .write_feedback(
                &example_id,
                &decision.id,
                feedback,
                &self.name,
                &model,
                &vector,
                merge,
            )
            .await;
        self.observe(&written);
        let written = written?;
        if written.applied != crate::feedback::Applied::Unchanged {
            self.catch_up(router).await?;
        }
        Ok(written)
    }

    /// Follows the store for as long as the server runs: a listening connection (made again
    /// after a drop), a catch-up on each notification and every `poll`.
    pub async fn follow(self: Arc<Self>, router: Arc<Router>) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let mut listener = match self.store.listen().await {
                Ok(l) => {
                    backoff = Duration::from_millis(200);
                    Some(l)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "store: not listening; polling meanwhile");
                    None
                }
            };
            loop {
                if let Err(e) = self.catch_up(&router).await {
                    tracing::warn!(error = %e, "store: catching up failed; retrying");
                }
                let listening = listener.is_some();
                let wait = if listening {
                    self.poll
                } else {
                    backoff.min(self.poll)
                };
                let notified = async {
                    match listener.as_mut() {
                        Some(l) => l.rx.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    message = notified => if message.is_none() {
                        tracing::warn!("store: the listening connection dropped; reconnecting");
                        break;
                    },
                    () = tokio::time::sleep(wait) => if !listening {
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        break;
                    },
                }
            }
        }
    }
}

/// A store failure as the client sees it: duplicate ids are the request's fault (400); the
/// rest is `503 store_unavailable` with `Retry-After` (nothing was written).
/// Texts embedded by the router's model, on a blocking thread (for the store's vectors).
async fn embed(router: &Arc<Router>, texts: Vec<String>) -> crate::error::Result<Vec<Vec<f32>>> {
    let embedder = router.embedder().clone();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        embedder.embed(&refs)
    })
    .await
    .map_err(|e| Error::Embed(format!("embedding for the store: {e}")))?
}

pub(crate) fn store_error(e: Error) -> ApiError {
    match e {
        Error::DuplicateIds(ids) => ApiError::bad_request(
            "invalid_examples",
            format!("these ids are in the store already: {ids}"),
        ),
        Error::StoreUnavailable(m) => ApiError::unavailable(
            "store_unavailable",
            format!("the store cannot take writes now ({m}); nothing was written: retry"),
        ),
        other => other.into(),
    }
}
