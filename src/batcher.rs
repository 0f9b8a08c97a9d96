//! Dynamic batching: concurrent routing requests share one embedding forward pass.
//!
//! Requests go into a bounded queue; one dedicated thread (never the async runtime) takes
//! everything queued, up to `max_size` jobs, optionally waiting up to `max_wait` for more, embeds
//! all their texts in one `Embedder::embed` call, and answers each job with its own decision
//! (each job carries its own policy). While a batch is being embedded the next one queues up,
//! so under load batches fill by themselves with no added wait. A full queue is refused at once
//! ([`SubmitError::Full`]), never waited on. Replies travel over runtime-agnostic oneshot
//! channels, so this module needs no async runtime and no HTTP types.
//!
//! A [`Query`] is one text or a conversation: the latest user turn blended with earlier ones
//! (see [`Query::conversation`]), so a follow-up like "and now in Rust?" is routed with the
//! difficulty of the conversation it belongs to.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{
    sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError,
};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_channel::oneshot;

use crate::error::{Error, Result};
use crate::router::{Decision, Router};
use crate::vote::Policy;

/// How long the embedding thread waits for a short query before a long pass once the long lane
/// has used its share of the time.
const SHORT_GRACE: Duration = Duration::from_millis(2);

/// How batches are formed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchOptions {
    /// Most jobs per forward pass (1 = no batching).
    pub max_size: usize,
    /// How long to wait for more jobs once the first is taken (zero = take what is queued).
    pub max_wait: Duration,
    /// Jobs that may wait in the queue; one more is refused.
    pub capacity: usize,
    /// A job whose texts add up to more bytes than this is *long*: it is embedded on its own,
    /// one between two batches of short jobs, so a flood of long queries (each up to the
    /// model's 256 tokens, several times a short one's cost) delays a short query by at most
    /// one long forward pass instead of by all of them.
    pub long_bytes: usize,
    /// Long jobs that may wait at once; one more is refused (short ones still get in).
    pub long_capacity: usize,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            max_size: 32,
            max_wait: Duration::ZERO,
            capacity: 256,
            long_bytes: 512,
            long_capacity: 32,
        }
    }
}

/// How earlier user turns of a conversation take part in its query vector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContextRule {
    /// Earlier user turns used (the most recent ones); 0 = the latest turn alone.
    pub turns: usize,
    /// Weight of the earlier turns' mean; the latest turn weighs 1.
    pub weight: f32,
}

/// What one request embeds: texts and their weights. The query vector is the L2-normalised
/// weighted sum of the texts' (unit) embeddings.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    parts: Vec<(String, f32)>,
}

impl Query {
    /// A single text (trimmed; whitespace-only is refused).
    pub fn text(text: &str) -> Result<Query> {
        let t = crate::router::query_text(text)?;
        Ok(Query {
            parts: vec![(t.to_string(), 1.0)],
        })
    }

    /// A conversation's user turns, oldest first. The latest non-empty turn weighs 1; the
    /// `rule.turns` non-empty turns before it share `rule.weight` equally, so the vector is
    /// `normalise(e(latest) + weight · mean(e(earlier)))`. A self-contained follow-up stays
    /// close to its own neighbours; a vague one ("and now in Rust?") is pulled towards the
    /// conversation's topic and inherits its difficulty.
    pub fn conversation<S: AsRef<str>>(turns: &[S], rule: ContextRule) -> Result<Query> {
        let mut texts = turns
            .iter()
            .filter_map(|t| crate::router::query_text(t.as_ref()).ok())
            .rev();
        let latest = texts.next().ok_or(Error::EmptyQuery)?;
        let mut parts = vec![(latest.to_string(), 1.0)];
        if rule.weight > 0.0 {
            let earlier: Vec<&str> = texts.take(rule.turns).collect();
            let each = rule.weight / earlier.len().max(1) as f32;
            parts.extend(earlier.into_iter().map(|t| (t.to_string(), each)));
        }
        Ok(Query { parts })
    }

    /// Cuts every part to what the embedder reads ([`crate::embed::cut_for_embedding`]);
    /// returns whether any was cut. The decision is the same; what is kept (in memory, in the
    /// decision log) stays bounded however long the request was.
    pub fn cut_to(&mut self, max_tokens: usize) -> bool {
        let mut cut = false;
        for (text, _) in &mut self.parts {
            let keep = crate::embed::cut_for_embedding(text, max_tokens).len();
            if keep < text.len() {
                text.truncate(keep);
                cut = true;
            }
        }
        cut
    }

    /// The texts embedded for this query, latest turn first, with their weights.
    pub fn parts(&self) -> &[(String, f32)] {
        &self.parts
    }

    /// The bytes of text embedded for this query.
    pub fn bytes(&self) -> usize {
        self.parts.iter().map(|(t, _)| t.len()).sum()
    }

    /// The query vector from the parts' embeddings (in `parts` order).
    fn combine(&self, vectors: &[Vec<f32>]) -> Vec<f32> {
        if vectors.len() == 1 {
            return vectors[0].clone();
        }
        let mut sum = vec![0.0f32; vectors[0].len()];
        for ((_, w), v) in self.parts.iter().zip(vectors) {
            for (s, x) in sum.iter_mut().zip(v) {
                *s += w * x;
            }
        }
        let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm < 1e-6 {
            // Turns that cancel out say nothing together: the latest alone decides.
            return vectors[0].clone();
        }
        sum.iter().map(|x| x / norm).collect()
    }

    /// A query from texts and weights as [`Query::parts`] gives them (latest turn first, e.g.
    /// from a decision record), so a replay blends the turns exactly as the logged decision
    /// did. Texts are trimmed; an empty one is refused. Weights are taken as given.
    pub fn from_parts(parts: Vec<(String, f32)>) -> Result<Query> {
        if parts.is_empty() {
            return Err(Error::EmptyQuery);
        }
        let parts = parts
            .into_iter()
            .map(|(t, w)| crate::router::query_text(&t).map(|t| (t.to_string(), w)))
            .collect::<Result<_>>()?;
        Ok(Query { parts })
    }
}

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue holds `capacity` jobs already: try again shortly.
    Full { capacity: usize },
    /// `capacity` long queries wait already: try again shortly (short ones are still taken).
    LongFull { capacity: usize },
    /// The batching thread has stopped.
    Closed,
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubmitError::Full { capacity } => {
                write!(f, "the routing queue is full ({capacity} waiting)")
            }
            SubmitError::LongFull { capacity } => write!(
                f,
                "{capacity} long queries are waiting for the embedder already, the most taken \
                 at once"
            ),
            SubmitError::Closed => write!(f, "the batching thread has stopped"),
        }
    }
}

impl std::error::Error for SubmitError {}

/// What one forward pass did, for metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchStats {
    /// Jobs answered by this pass.
    pub jobs: usize,
    /// Texts embedded (a conversation adds one per context turn).
    pub texts: usize,
    /// Time spent in `embed`.
    pub embed: Duration,
}

/// Called after each forward pass.
pub type BatchObserver = Arc<dyn Fn(BatchStats) + Send + Sync>;

struct Job {
    /// Embedded on its own (see [`BatchOptions::long_bytes`]).
    long: bool,
    query: Query,
    policy: Policy,
    reply: oneshot::Sender<Result<Decision>>,
    shadow: Option<(Arc<Shadow>, oneshot::Sender<Result<Decision>>)>,
}

/// A second router that decides each query alongside the first, on the same query vector (so
/// it must use the same embedding model), after the first decision is answered: it never delays
/// it. For trying a candidate configuration (examples, knobs) on live traffic; its decisions
/// are only logged.
pub struct Shadow {
    pub router: Arc<Router>,
    pub policy: Policy,
}

/// The handle to the batching thread. Dropping it (and every clone of its sender) stops the
/// thread once the jobs already queued are answered.
pub struct Batcher {
    tx: SyncSender<Job>,
    queued: Arc<AtomicUsize>,
    /// Long jobs submitted and not yet answered.
    long_pending: Arc<AtomicUsize>,
    options: BatchOptions,
}

impl Batcher {
    /// Starts the batching thread for a router.
    pub fn start(
        router: Arc<Router>,
        options: BatchOptions,
        observer: Option<BatchObserver>,
    ) -> Self {
        let options = BatchOptions {
            max_size: options.max_size.max(1),
            capacity: options.capacity.max(1),
            long_capacity: options.long_capacity.max(1),
            ..options
        };
        let (tx, rx) = sync_channel(options.capacity);
        let queued = Arc::new(AtomicUsize::new(0));
        let long_pending = Arc::new(AtomicUsize::new(0));
        let worker = Worker {
            router,
            options,
            observer,
            queued: queued.clone(),
            long_pending: long_pending.clone(),
        };
        std::thread::Builder::new()
            .name("model-router-embed".into())
            .spawn(move || worker.run(rx))
            .expect("spawning the embedding thread");
        Batcher {
            tx,
            queued,
            long_pending,
            options,
        }
    }

    /// Queues a query; the returned future resolves to its decision. Never blocks: a full
    /// queue is an immediate [`SubmitError::Full`].
    pub fn submit(
        &self,
        query: Query,
        policy: Policy,
    ) -> std::result::Result<Pending, SubmitError> {
        self.submit_with_shadow(query, policy, None)
            .map(|(pending, _)| pending)
    }

    /// [`Batcher::submit`], and with a shadow, also the shadow's decision on the same vector
    /// (made after the first one is answered).
    pub fn submit_with_shadow(
        &self,
        query: Query,
        policy: Policy,
        shadow: Option<Arc<Shadow>>,
    ) -> std::result::Result<(Pending, Option<Pending>), SubmitError> {
        let (shadow, shadow_rx) = match shadow {
            Some(s) => {
                let (tx, rx) = oneshot::channel();
                (Some((s, tx)), Some(Pending(rx)))
            }
            None => (None, None),
        };
        let (reply, rx) = oneshot::channel();
        let long = query.bytes() > self.options.long_bytes;
        if long {
            let capacity = self.options.long_capacity;
            let taken = self
                .long_pending
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < capacity).then_some(n + 1)
                });
            if taken.is_err() {
                return Err(SubmitError::LongFull { capacity });
            }
        }
        // Count before sending so the worker's decrement can never run first.
        self.queued.fetch_add(1, Ordering::SeqCst);
        match self.tx.try_send(Job {
            long,
            query,
            policy,
            reply,
            shadow,
        }) {
            Ok(()) => Ok((Pending(rx), shadow_rx)),
            Err(e) => {
                self.queued.fetch_sub(1, Ordering::SeqCst);
                if long {
                    self.long_pending.fetch_sub(1, Ordering::SeqCst);
                }
                Err(match e {
                    TrySendError::Full(_) => SubmitError::Full {
                        capacity: self.options.capacity,
                    },
                    TrySendError::Disconnected(_) => SubmitError::Closed,
                })
            }
        }
    }

    /// Jobs waiting for the embedder (not counting the batch being embedded).
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    pub fn capacity(&self) -> usize {
        self.options.capacity
    }
}

/// A queued query's decision, to be awaited.
pub struct Pending(oneshot::Receiver<Result<Decision>>);

impl Pending {
    /// Blocks this thread until the decision arrives: for callers without an async runtime
    /// (`gpu-check`'s load generator). Never call it on an async runtime's thread.
    pub fn wait(self) -> Result<Decision> {
        struct Unpark(std::thread::Thread);
        impl std::task::Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Arc::new(Unpark(std::thread::current())).into();
        let mut cx = Context::from_waker(&waker);
        let mut pending = std::pin::pin!(self);
        loop {
            if let Poll::Ready(v) = pending.as_mut().poll(&mut cx) {
                return v;
            }
            std::thread::park();
        }
    }
}

impl Future for Pending {
    type Output = Result<Decision>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(Error::Embed("the batching thread stopped".into()))))
    }
}

struct Worker {
    router: Arc<Router>,
    options: BatchOptions,
    observer: Option<BatchObserver>,
    queued: Arc<AtomicUsize>,
    long_pending: Arc<AtomicUsize>,
}

impl Worker {
    /// Short jobs are batched as they come; long ones wait in their own lane and go one at a
    /// time, between two batches of short ones, taking at most as much of the embedder's time
    /// as the short ones while short ones keep coming (all of it when none do).
    fn run(self, rx: Receiver<Job>) {
        let mut long_lane = std::collections::VecDeque::new();
        // Seconds of embedding the long lane may use: short batches add their time, long passes
        // subtract theirs. Bounded both ways, so neither lane banks a burst.
        let mut credit = 0.0f64;
        const MAX_CREDIT: f64 = 0.25;
        loop {
            let taken = if long_lane.is_empty() {
                match self.next_batch(&rx) {
                    Some(jobs) => jobs,
                    None => break,
                }
            } else if credit < 0.0 {
                // The long lane has had its share: give short clients a moment to send their
                // next query (a closed-loop client is between two requests right now).
                self.short_wait(&rx, SHORT_GRACE)
            } else {
                self.queued_now(&rx, Vec::new())
            };
            let (long, short): (Vec<Job>, Vec<Job>) = taken.into_iter().partition(|j| j.long);
            self.queued.fetch_sub(short.len(), Ordering::SeqCst);
            long_lane.extend(long);
            // Clients that went away while queued cost nothing.
            let short: Vec<Job> = short
                .into_iter()
                .filter(|j| !j.reply.is_canceled())
                .collect();
            let shorts_came = !short.is_empty();
            if shorts_came {
                credit = (credit + self.answer(short).as_secs_f64()).min(MAX_CREDIT);
                if credit < 0.0 {
                    continue;
                }
            }
            while let Some(job) = long_lane.pop_front() {
                self.queued.fetch_sub(1, Ordering::SeqCst);
                self.long_pending.fetch_sub(1, Ordering::SeqCst);
                if !job.reply.is_canceled() {
                    let took = self.answer(vec![job]).as_secs_f64();
                    credit = (credit - took).max(-MAX_CREDIT);
                    break;
                }
            }
        }
    }

    /// Waits up to `grace` for a job, then takes what is queued, up to `max_size` jobs.
    fn short_wait(&self, rx: &Receiver<Job>, grace: Duration) -> Vec<Job> {
        match rx.recv_timeout(grace) {
            Ok(first) => self.queued_now(rx, vec![first]),
            Err(_) => Vec::new(),
        }
    }

    /// `jobs` and whatever is queued now, up to `max_size` jobs in all, without waiting.
    fn queued_now(&self, rx: &Receiver<Job>, mut jobs: Vec<Job>) -> Vec<Job> {
        let room = self.options.max_size.saturating_sub(jobs.len());
        jobs.extend(std::iter::from_fn(|| rx.try_recv().ok()).take(room));
        jobs
    }

    /// Blocks for the first job, then takes what is queued (waiting up to `max_wait` for
    /// more). `None` once every sender is gone and the queue is empty.
    fn next_batch(&self, rx: &Receiver<Job>) -> Option<Vec<Job>> {
        let first = rx.recv().ok()?;
        let deadline = Instant::now() + self.options.max_wait;
        let mut jobs = vec![first];
        while jobs.len() < self.options.max_size {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match rx.recv_timeout(left) {
                        Ok(job) => jobs.push(job),
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            }
        }
        Some(jobs)
    }

    /// One forward pass for every text of every job, then one decision per job. Returns the
    /// time the forward pass took.
    fn answer(&self, jobs: Vec<Job>) -> Duration {
        let texts: Vec<&str> = jobs
            .iter()
            .flat_map(|j| j.query.parts.iter().map(|(t, _)| t.as_str()))
            .collect();
        let started = Instant::now();
        // A panic in the model must fail this batch, not kill the thread for every later one.
        let embedded = catch_unwind(AssertUnwindSafe(|| self.router.embedder().embed(&texts)))
            .unwrap_or_else(|_| Err(Error::Embed("the embedding model panicked".into())));
        let embed = started.elapsed();
        if let Some(observe) = &self.observer {
            observe(BatchStats {
                jobs: jobs.len(),
                texts: texts.len(),
                embed,
            });
        }
        let vectors = match embedded {
            Ok(v) if v.len() == texts.len() => v,
            Ok(v) => {
                let e = format!(
                    "the embedder returned {} vectors for {} texts",
                    v.len(),
                    texts.len()
                );
                fail_all(jobs, &e);
                return embed;
            }
            Err(e) => {
                fail_all(jobs, &e.to_string());
                return embed;
            }
        };
        let mut at = 0;
        let mut shadows = Vec::new();
        for job in jobs {
            let n = job.query.parts.len();
            let vector = job.query.combine(&vectors[at..at + n]);
            at += n;
            let decision = decide(&self.router, &vector, &job.policy);
            // The client may have gone away meanwhile; nothing to do then.
            let _ = job.reply.send(decision);
            if let Some(shadow) = job.shadow {
                shadows.push((vector, shadow));
            }
        }
        // Shadows decide once every first decision of the batch is out.
        for (vector, (shadow, reply)) in shadows {
            let _ = reply.send(decide(&shadow.router, &vector, &shadow.policy));
        }
        embed
    }
}

/// A decision that a panic in the index turns into an error, not a dead thread.
fn decide(router: &Router, vector: &[f32], policy: &Policy) -> Result<Decision> {
    catch_unwind(AssertUnwindSafe(|| router.decide(vector, policy)))
        .unwrap_or_else(|_| Err(Error::Index("the index search panicked".into())))
}

fn fail_all(jobs: Vec<Job>, message: &str) {
    for job in jobs {
        let _ = job.reply.send(Err(Error::Embed(message.to_string())));
    }
}

/// Routes queries on the calling thread, without the batching thread: every part of every
/// query is embedded in one call, then each query is decided with its own policy. For tools
/// that re-decide many queries at once (`replay`); the server goes through [`Batcher`].
pub fn route_queries(router: &Router, queries: &[(Query, Policy)]) -> Result<Vec<Decision>> {
    let texts: Vec<&str> = queries
        .iter()
        .flat_map(|(q, _)| q.parts.iter().map(|(t, _)| t.as_str()))
        .collect();
    let vectors = router.embedder().embed(&texts)?;
    if vectors.len() != texts.len() {
        return Err(Error::Embed(format!(
            "the embedder returned {} vectors for {} texts",
            vectors.len(),
            texts.len()
        )));
    }
    let mut at = 0;
    queries
        .iter()
        .map(|(query, policy)| {
            let n = query.parts.len();
            let vector = query.combine(&vectors[at..at + n]);
            at += n;
            router.decide(&vector, policy)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::{Condvar, Mutex};

    use super::*;
    use crate::corpus::{Example, Label};
    use crate::embed::{Embedder, ModelInfo};

    /// Bag-of-words embeddings, with a gate that can hold the embedding thread inside `embed`
    /// so tests decide exactly what is queued when it resumes. Records every batch's size.
    struct Gated {
        info: ModelInfo,
        open: Mutex<bool>,
        changed: Condvar,
        entered: Mutex<usize>,
        batches: Mutex<Vec<usize>>,
        panic_on: Option<&'static str>,
    }

    impl Gated {
        fn new(open: bool) -> Arc<Self> {
            Self::build(open, None)
        }

        fn build(open: bool, panic_on: Option<&'static str>) -> Arc<Self> {
            Arc::new(Gated {
                info: crate::router::hashed_words_info(),
                open: Mutex::new(open),
                changed: Condvar::new(),
                entered: Mutex::new(0),
                batches: Mutex::new(Vec::new()),
                panic_on,
            })
        }

        fn set_open(&self, open: bool) {
            *self.open.lock().unwrap() = open;
            self.changed.notify_all();
        }

        /// Waits until `embed` has been entered `n` times in total.
        fn wait_entered(&self, n: usize) {
            let mut entered = self.entered.lock().unwrap();
            while *entered < n {
                entered = self.changed.wait(entered).unwrap();
            }
        }
    }

    fn words(text: &str) -> Vec<f32> {
        crate::router::hashed_words(text)
    }

    impl Embedder for Gated {
        fn info(&self) -> &ModelInfo {
            &self.info
        }
        fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
            if self.panic_on.is_some_and(|p| texts.contains(&p)) {
                panic!("test panic");
            }
            *self.entered.lock().unwrap() += 1;
            self.changed.notify_all();
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.changed.wait(open).unwrap();
            }
            self.batches.lock().unwrap().push(texts.len());
            Ok(texts.iter().map(|t| words(t)).collect())
        }
        fn count_tokens(&self, text: &str) -> Result<usize> {
            Ok(text.split_whitespace().count())
        }
    }

    /// A router whose embedder is now closed: the next `embed` call holds the thread. Building
    /// the router embedded its examples, which is not counted.
    fn held_router() -> (Arc<Gated>, Arc<Router>) {
        let gate = Gated::new(true);
        let r = router(gate.clone());
        gate.set_open(false);
        *gate.entered.lock().unwrap() = 0;
        gate.batches.lock().unwrap().clear();
        (gate, r)
    }

    fn router(embedder: Arc<Gated>) -> Arc<Router> {
        let r = crate::router::empty_test_router(embedder);
        let ex = |id: &str, text: &str, tier: &str| Example {
            id: Some(id.into()),
            text: text.into(),
            label: Label::Tier { tier: tier.into() },
            category: None,
            meta: None,
        };
        r.add(vec![
            ex("hi", "hello there friend", "small"),
            ex("proof", "prove the riemann hypothesis rigorously", "large"),
            ex("code", "write a python parser for durations", "medium"),
        ])
        .unwrap();
        Arc::new(r)
    }

    struct Unpark(std::thread::Thread);

    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }

    /// Polls a future on this thread, parking between polls.
    fn block_on<F: Future>(f: F) -> F::Output {
        let waker = Arc::new(Unpark(std::thread::current())).into();
        let mut cx = Context::from_waker(&waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            std::thread::park();
        }
    }

    /// `Pending::wait` blocks a plain thread until the batching thread answers, from any
    /// number of threads at once.
    #[test]
    fn wait_blocks_until_the_decision_arrives() {
        let gated = Gated::new(true);
        let r = router(gated);
        let batcher = Batcher::start(r.clone(), BatchOptions::default(), None);
        let policy = r.policy().clone();
        let tiers: Vec<String> = std::thread::scope(|s| {
            let waits: Vec<_> = ["hello there friend", "prove the riemann hypothesis"]
                .into_iter()
                .map(|q| {
                    let pending = batcher.submit(Query::text(q).unwrap(), policy.clone());
                    s.spawn(move || pending.unwrap().wait().unwrap().tier)
                })
                .collect();
            waits.into_iter().map(|w| w.join().unwrap()).collect()
        });
        assert_eq!(tiers, ["small", "large"]);
    }

    #[test]
    fn queued_jobs_share_one_forward_pass_and_keep_their_own_policy() {
        let (gate, r) = held_router();
        let batcher = Batcher::start(r.clone(), BatchOptions::default(), None);
        let policy = r.policy().clone();
        // The first job holds the thread inside `embed`; the next ones queue up behind it.
        let first = batcher
            .submit(Query::text("hello there friend").unwrap(), policy.clone())
            .unwrap();
        gate.wait_entered(1);
        let hard = "prove the riemann hypothesis";
        let strict = batcher
            .submit(Query::text(hard).unwrap(), policy.clone())
            .unwrap();
        let cheap = Policy {
            quality_target: 0.0,
            ..policy.clone()
        };
        let lax = batcher.submit(Query::text(hard).unwrap(), cheap).unwrap();
        let others: Vec<Pending> = (0..5)
            .map(|_| {
                batcher
                    .submit(Query::text("hello there").unwrap(), policy.clone())
                    .unwrap()
            })
            .collect();
        assert_eq!(batcher.queued(), 7);
        gate.set_open(true);
        assert_eq!(block_on(first).unwrap().tier, "small");
        assert_eq!(block_on(strict).unwrap().tier, "large");
        assert_eq!(
            block_on(lax).unwrap().tier,
            "small",
            "quality_target 0 = cheapest"
        );
        for p in others {
            assert_eq!(block_on(p).unwrap().tier, "small");
        }
        assert_eq!(*gate.batches.lock().unwrap(), vec![1, 7]);
        assert_eq!(batcher.queued(), 0);
    }

    #[test]
    fn batches_are_capped_at_max_size() {
        let (gate, r) = held_router();
        let options = BatchOptions {
            max_size: 3,
            ..BatchOptions::default()
        };
        let batcher = Batcher::start(r.clone(), options, None);
        let submit = || {
            batcher
                .submit(Query::text("hello").unwrap(), r.policy().clone())
                .unwrap()
        };
        let mut pending = vec![submit()];
        gate.wait_entered(1);
        pending.extend((0..7).map(|_| submit()));
        gate.set_open(true);
        for p in pending {
            block_on(p).unwrap();
        }
        assert_eq!(*gate.batches.lock().unwrap(), vec![1, 3, 3, 1]);
    }

    #[test]
    fn long_queries_go_one_at_a_time_after_the_short_ones() {
        let (gate, r) = held_router();
        let options = BatchOptions {
            long_bytes: 20,
            long_capacity: 3,
            ..BatchOptions::default()
        };
        let batcher = Batcher::start(r.clone(), options, None);
        let submit = |text: &str| batcher.submit(Query::text(text).unwrap(), r.policy().clone());
        let held = submit("hello").unwrap();
        gate.wait_entered(1);
        let long = "prove the riemann hypothesis rigorously please";
        let longs: Vec<Pending> = (0..3).map(|_| submit(long).unwrap()).collect();
        // The long lane is full: one more long query is refused, a short one is not.
        assert_eq!(
            submit(long).err(),
            Some(SubmitError::LongFull { capacity: 3 })
        );
        let shorts = [submit("hello there").unwrap(), submit("hi").unwrap()];
        assert_eq!(batcher.queued(), 5);
        gate.set_open(true);
        block_on(held).unwrap();
        for p in shorts.into_iter().chain(longs) {
            block_on(p).unwrap();
        }
        // Queued behind the held batch: both short queries in one pass, then each long one
        // on its own.
        assert_eq!(*gate.batches.lock().unwrap(), vec![1, 2, 1, 1, 1]);
        assert_eq!(batcher.queued(), 0);
        // The lane has room again.
        block_on(submit(long).unwrap()).unwrap();
    }

    #[test]
    fn a_full_queue_is_refused_at_once() {
        let (gate, r) = held_router();
        let options = BatchOptions {
            capacity: 2,
            ..BatchOptions::default()
        };
        let batcher = Batcher::start(r.clone(), options, None);
        let submit = || batcher.submit(Query::text("hello").unwrap(), r.policy().clone());
        let held = submit().unwrap();
        gate.wait_entered(1);
        let queued = [submit().unwrap(), submit().unwrap()];
        assert_eq!(submit().err(), Some(SubmitError::Full { capacity: 2 }));
        gate.set_open(true);
        block_on(held).unwrap();
        for p in queued {
            block_on(p).unwrap();
        }
    }

    #[test]
    fn max_wait_collects_later_arrivals() {
        let gate = Gated::new(true);
        let r = router(gate.clone());
        let options = BatchOptions {
            max_size: 2,
            max_wait: Duration::from_secs(30),
            ..BatchOptions::default()
        };
        let stats = Arc::new(Mutex::new(Vec::new()));
        let seen = stats.clone();
        let observer: BatchObserver = Arc::new(move |s: BatchStats| seen.lock().unwrap().push(s));
        let batcher = Batcher::start(r.clone(), options, Some(observer));
        let a = batcher
            .submit(Query::text("hello").unwrap(), r.policy().clone())
            .unwrap();
        // The batch is full only when the second job arrives: max_size ends the wait, not time.
        std::thread::sleep(Duration::from_millis(20));
        let b = batcher
            .submit(Query::text("hello").unwrap(), r.policy().clone())
            .unwrap();
        block_on(a).unwrap();
        block_on(b).unwrap();
        let stats = stats.lock().unwrap();
        assert_eq!(stats.len(), 1);
        assert_eq!((stats[0].jobs, stats[0].texts), (2, 2));
    }

    #[test]
    fn a_panicking_batch_fails_alone() {
        let gate = Gated::build(true, Some("boom"));
        let r = router(gate.clone());
        let batcher = Batcher::start(r.clone(), BatchOptions::default(), None);
        let bad = batcher
            .submit(Query::text("boom").unwrap(), r.policy().clone())
            .unwrap();
        let e = block_on(bad).unwrap_err();
        assert!(e.to_string().contains("panicked"), "{e}");
        let good = batcher
            .submit(
                Query::text("hello there friend").unwrap(),
                r.policy().clone(),
            )
            .unwrap();
        assert_eq!(block_on(good).unwrap().tier, "small");
    }

    #[test]
    fn conversations_blend_earlier_turns() {
        let rule = ContextRule {
            turns: 2,
            weight: 0.5,
        };
        let q = Query::conversation(&["a b", "  ", "c d", "e f", "now?"], rule).unwrap();
        let parts: Vec<(&str, f32)> = q.parts().iter().map(|(t, w)| (t.as_str(), *w)).collect();
        assert_eq!(parts, vec![("now?", 1.0), ("e f", 0.25), ("c d", 0.25)]);
        let alone = Query::conversation(
            &["a b", "now?"],
            ContextRule {
                turns: 0,
                weight: 0.5,
            },
        )
        .unwrap();
        assert_eq!(alone.parts().len(), 1);
        assert!(matches!(
            Query::conversation(&["", " "], rule),
            Err(Error::EmptyQuery)
        ));
        assert!(matches!(Query::text(" \n"), Err(Error::EmptyQuery)));

        // A vague follow-up takes the route of the conversation it continues.
        let gate = Gated::new(true);
        let r = router(gate);
        let batcher = Batcher::start(r.clone(), BatchOptions::default(), None);
        let route = |q: Query| block_on(batcher.submit(q, r.policy().clone()).unwrap()).unwrap();
        let follow_up = "and rigorously";
        assert_eq!(
            route(Query::text(follow_up).unwrap()).tier,
            "large",
            "out of distribution: fallback"
        );
        let hello = ["hello there friend", follow_up];
        let d = route(Query::conversation(&hello, rule).unwrap());
        assert_eq!(d.tier, "small");
        assert_eq!(d.neighbors[0].id.as_deref(), Some("hi"));
        // The combined vector is unit length and sits between the turns.
        let v = q.combine(&[words("now?"), words("e f"), words("c d")]);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }

    #[test]
    fn dropping_the_handle_stops_the_thread() {
        let gate = Gated::new(true);
        let r = router(gate);
        let batcher = Batcher::start(r.clone(), BatchOptions::default(), None);
        let p = batcher
            .submit(Query::text("hello").unwrap(), r.policy().clone())
            .unwrap();
        drop(batcher);
        // Jobs queued before the drop are still answered.
        block_on(p).unwrap();
        // The thread held the only other reference to the router; it goes away with it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&r) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(Arc::strong_count(&r), 1);
    }
}
