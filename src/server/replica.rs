//! A server backed by the PostgreSQL store (`[store]`): its writes go to the store, and it
//! follows every other replica's.
//!
//! [`Replica::catch_up`] applies the stored rows past the last sequence number applied, in
//! order, once each; it runs on each notification, every `store.poll_secs` (a lost
//! notification only delays a row), after each reconnection, and after this replica's own
//! writes (so their `201` means routable here). Writes embed first, then commit rows and
//! vectors in one transaction: a write the store refuses or never commits leaves nothing.

use std::sync::Arc;
use std::time::Duration;

use super::ApiError;
use crate::corpus::Example;
use crate::error::Error;
use crate::router::Router;
use crate::store::PgStore;

/// The store, and how far this replica has applied it.
pub(crate) struct Replica {
    pub store: PgStore,
    /// The last sequence number applied to the index.
    applied: tokio::sync::Mutex<i64>,
    poll: Duration,
}

impl Replica {
    pub fn new(store: PgStore, applied: i64, poll: Duration) -> Replica {
        Replica {
            store,
            applied: tokio::sync::Mutex::new(applied),
            poll,
        }
    }

    /// Applies the rows written since the last one applied; returns how many.
    pub async fn catch_up(&self, router: &Arc<Router>) -> crate::error::Result<usize> {
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
        Ok(n)
    }

    /// Writes examples (embedded here first) to the store, then applies them. `replace`:
    /// update ids the store holds (feedback); otherwise such an id refuses the write.
    pub async fn write(
        &self,
        router: &Arc<Router>,
        examples: Vec<Example>,
        replace: bool,
    ) -> Result<(), ApiError> {
        let model = router.embedder().info().sha256.clone();
        let embedder = router.embedder().clone();
        let texts: Vec<String> = examples.iter().map(|e| e.text.clone()).collect();
        let vectors = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            embedder.embed(&refs)
        })
        .await
        .map_err(ApiError::internal)??;
        self.store
            .write(&examples, replace, &model, &vectors)
            .await
            .map_err(store_error)?;
        self.catch_up(router).await.map_err(store_error)?;
        Ok(())
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
