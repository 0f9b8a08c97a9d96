//! The decision log: one JSON line per routing decision, written off the request path.
//!
//! A [`DecisionRecord`] holds what a later look at the decision needs: the text the router
//! embedded, the tier and per-tier quality, the neighbours (ids and similarities only), the
//! policy that decided, the example-set version and the embedder. Feedback joins to it by `id`,
//! `label-queue` picks the records worth labeling, `replay` re-decides them under another
//! configuration.
//!
//! [`DecisionLog`] owns a writer thread fed by a bounded channel: [`DecisionLog::log`] never
//! blocks, and a record that finds the channel full is dropped and counted. The file rotates by
//! size (`decisions.jsonl` → `decisions.jsonl.1` → … → `.{keep}`). [`RecentDecisions`] keeps
//! the last N records in memory, so feedback on a recent decision needs no disk read.
//!
//! The log holds user prompts: it is off unless `[log] decisions` names a file.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, LineError, Result};
use crate::router::Decision;
use crate::vote::{Basis, Policy};

/// One logged decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// The request's `x-request-id`; feedback refers to it.
    pub id: String,
    /// RFC 3339, UTC.
    pub time: String,
    /// `route` (`POST /v1/route`), `chat` (`auto` chat completions), or a CLI command.
    pub endpoint: String,
    /// The text the router embedded: the query, or a chat's latest user turn.
    pub query: String,
    /// Earlier user turns blended into the query vector, most recent first, with their weights
    /// (the latest turn weighs 1). Empty for a single query.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<ContextTurn>,
    pub tier: String,
    pub model: String,
    pub confidence: f32,
    /// Expected quality per tier (tiers the neighbours say nothing about are absent).
    pub quality: BTreeMap<String, f32>,
    pub basis: Basis,
    pub reason: String,
    pub neighbors: Vec<LoggedNeighbor>,
    pub policy: LoggedPolicy,
    /// Changes whenever the example set changes (see `Router::examples_version`).
    pub examples_version: String,
    pub embedder: LoggedEmbedder,
    /// Time to the decision: queueing, embedding and the vote.
    pub route_ms: f64,
}

/// An earlier chat turn as the query vector used it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextTurn {
    pub text: String,
    pub weight: f32,
}

/// A neighbour of a logged decision: the example's id (if it has one) and its similarity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedNeighbor {
    pub id: Option<String>,
    pub similarity: f32,
}

/// The knobs that decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedPolicy {
    pub k: usize,
    pub temperature: f32,
    /// The quality target the vote used (after any budget adjustment).
    pub quality_target: f32,
    pub min_similarity: f32,
    pub fallback_tier: String,
    pub category_baseline: bool,
    /// The configured quality target, when a budget moved the one used away from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configured_quality_target: Option<f32>,
}

/// The embedding model of a logged decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedEmbedder {
    pub model: String,
    /// SHA-256 of the weights.
    pub sha256: String,
}

impl LoggedPolicy {
    pub fn new(policy: &Policy, tiers: &crate::tier::Tiers) -> Self {
        LoggedPolicy {
            k: policy.k,
            temperature: policy.temperature,
            quality_target: policy.quality_target,
            min_similarity: policy.min_similarity,
            fallback_tier: tiers
                .get(policy.fallback_tier)
                .map(|t| t.name.clone())
                .unwrap_or_default(),
            category_baseline: policy.category_baseline,
            configured_quality_target: None,
        }
    }
}

impl DecisionRecord {
    /// A record of `decision`, made `now`. `parts` are the embedded texts, latest first, with
    /// their weights (as `Query::parts` gives them).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: &str,
        endpoint: &str,
        parts: &[(String, f32)],
        decision: &Decision,
        policy: LoggedPolicy,
        examples_version: &str,
        embedder: &crate::embed::ModelInfo,
        route_ms: f64,
    ) -> Self {
        DecisionRecord {
            id: id.to_string(),
            time: rfc3339(SystemTime::now()),
            endpoint: endpoint.to_string(),
            query: parts.first().map(|(t, _)| t.clone()).unwrap_or_default(),
            context: parts
                .iter()
                .skip(1)
                .map(|(text, weight)| ContextTurn {
                    text: text.clone(),
                    weight: *weight,
                })
                .collect(),
            tier: decision.tier.clone(),
            model: decision.model.clone(),
            confidence: decision.confidence,
            quality: decision
                .quality
                .0
                .iter()
                .map(|(t, q)| (t.clone(), *q))
                .collect(),
            basis: decision.basis,
            reason: decision.reason.clone(),
            neighbors: decision
                .neighbors
                .iter()
                .map(|n| LoggedNeighbor {
                    id: n.id.clone(),
                    similarity: n.similarity,
                })
                .collect(),
            policy,
            examples_version: examples_version.to_string(),
            embedder: LoggedEmbedder {
                model: embedder.name.clone(),
                sha256: embedder.sha256.clone(),
            },
            route_ms,
        }
    }

    /// The turns as `Query::conversation` takes them: oldest first, the query last.
    pub fn turns(&self) -> Vec<&str> {
        let mut turns: Vec<&str> = self.context.iter().rev().map(|c| c.text.as_str()).collect();
        turns.push(&self.query);
        turns
    }
}

/// `time` as RFC 3339 in UTC with milliseconds, e.g. `2026-12-01T14:28:05.123Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let d = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Where and how the log is written.
#[derive(Debug, Clone, PartialEq)]
pub struct LogOptions {
    pub path: PathBuf,
    /// Rotate once the file reaches this size.
    pub max_bytes: u64,
    /// Rotated files kept (`.1` newest … `.{keep}` oldest); 0 = truncate on rotation.
    pub keep: usize,
    /// Records that may wait for the writer; beyond this they are dropped and counted.
    pub capacity: usize,
}

/// The writer side of the decision log. Dropping it lets the thread write what is queued and
/// stop.
pub struct DecisionLog {
    tx: SyncSender<DecisionRecord>,
    dropped: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    path: PathBuf,
}

impl DecisionLog {
    /// Opens (creates) the log file and starts the writer thread.
    pub fn open(options: LogOptions) -> Result<DecisionLog> {
        let file = open_append(&options.path)?;
        let size = file
            .metadata()
            .map_err(|e| Error::io(format!("reading {}", options.path.display()), e))?
            .len();
        let (tx, rx) = sync_channel(options.capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            options: options.clone(),
            file,
            size,
            written: written.clone(),
            dropped: dropped.clone(),
        };
        std::thread::Builder::new()
            .name("model-router-decision-log".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::io("starting the decision log writer", e))?;
        Ok(DecisionLog {
            tx,
            dropped,
            written,
            path: options.path,
        })
    }

    /// Queues a record; never blocks. Returns false if it was dropped (the writer is behind).
    pub fn log(&self, record: DecisionRecord) -> bool {
        match self.tx.try_send(record) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Records dropped because the writer was behind, or lost to a failed write.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn open_append(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(format!("opening the decision log {}", path.display()), e))
}

/// The rotated file `n` (1 = newest) of a log.
pub fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

struct Writer {
    options: LogOptions,
    file: File,
    size: u64,
    written: Arc<AtomicU64>,
    /// Records lost to a failed write count as dropped too.
    dropped: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self, rx: Receiver<DecisionRecord>) {
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut line = Vec::with_capacity(2048);
        while let Ok(first) = rx.recv() {
            // Take what is queued too: one write per burst, not one per record, rotating
            // between records so that no file grows past `max_bytes` (unless one record does).
            let mut pending = 0u64;
            for record in std::iter::once(first).chain(rx.try_iter().take(1023)) {
                line.clear();
                if serde_json::to_writer(&mut line, &record).is_err() {
                    continue;
                }
                line.push(b'\n');
                let size = self.size + buf.len() as u64;
                if size > 0 && size + line.len() as u64 > self.options.max_bytes {
                    self.flush(&mut buf, &mut pending);
                    if let Err(e) = self.rotate() {
                        tracing::error!(path = %self.options.path.display(), error = %e, "rotating the decision log failed");
                    }
                }
                buf.extend_from_slice(&line);
                pending += 1;
            }
            self.flush(&mut buf, &mut pending);
        }
        let _ = self.file.flush();
    }

    /// Writes the buffered records; on failure they are lost (and logged), never retried
    /// forever: the request path must not back up behind a full disk.
    fn flush(&mut self, buf: &mut Vec<u8>, pending: &mut u64) {
        if buf.is_empty() {
            return;
        }
        match self.file.write_all(buf) {
            Ok(()) => {
                self.size += buf.len() as u64;
                self.written.fetch_add(*pending, Ordering::Relaxed);
            }
            Err(e) => {
                self.dropped.fetch_add(*pending, Ordering::Relaxed);
                tracing::error!(path = %self.options.path.display(), error = %e, records = *pending, "writing the decision log failed; records lost");
            }
        }
        buf.clear();
        *pending = 0;
    }

    /// `path.{keep-1}` → `path.{keep}`, …, `path` → `path.1`, then a fresh `path`.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        let path = &self.options.path;
        if self.options.keep == 0 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        for n in (1..self.options.keep).rev() {
            let from = rotated(path, n);
            if from.exists() {
                std::fs::rename(&from, rotated(path, n + 1))?;
            }
        }
        std::fs::rename(path, rotated(path, 1))?;
        self.file = OpenOptions::new().create(true).append(true).open(path)?;
        self.size = 0;
        Ok(())
    }
}

/// Reads one decision log: [`read_checked_decisions`] of one file.
pub fn read_decisions(path: &Path) -> Result<Vec<DecisionRecord>> {
    read_checked_decisions(&[path.to_path_buf()])
}

/// Looks a decision up by id in a log and its rotated files, newest first. Lines that do not
/// parse are skipped (a log cut short by a crash must not hide the rest).
pub fn find_decision(path: &Path, keep: usize, id: &str) -> Result<Option<DecisionRecord>> {
    let needle = format!("\"id\":{}", serde_json::to_string(id).expect("a string"));
    for file in std::iter::once(path.to_path_buf()).chain((1..=keep).map(|n| rotated(path, n))) {
        let f = match File::open(&file) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("reading {}", file.display()), e)),
        };
        let mut found = None;
        for line in BufReader::new(f).lines() {
            let line = line.map_err(|e| Error::io(format!("reading {}", file.display()), e))?;
            if !line.contains(&needle) {
                continue;
            }
            if let Ok(r) = serde_json::from_str::<DecisionRecord>(&line) {
                if r.id == id {
                    // The last record with this id wins (a client may reuse request ids).
                    found = Some(r);
                }
            }
        }
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// The last `capacity` decisions, by id, in memory.
pub struct RecentDecisions {
    capacity: usize,
    order: VecDeque<String>,
    by_id: HashMap<String, Arc<DecisionRecord>>,
}

impl RecentDecisions {
    pub fn new(capacity: usize) -> Self {
        RecentDecisions {
            capacity,
            order: VecDeque::new(),
            by_id: HashMap::new(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Keeps a record, forgetting the oldest beyond capacity. A repeated id replaces the
    /// earlier record.
    pub fn insert(&mut self, record: Arc<DecisionRecord>) {
        if self.capacity == 0 {
            return;
        }
        if self
            .by_id
            .insert(record.id.clone(), record.clone())
            .is_none()
        {
            self.order.push_back(record.id.clone());
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<DecisionRecord>> {
        self.by_id.get(id).cloned()
    }

    /// Time covered by the records kept (oldest to newest), if there are two or more.
    pub fn oldest_time(&self) -> Option<&str> {
        let oldest = self.order.front()?;
        self.by_id.get(oldest).map(|r| r.time.as_str())
    }
}

impl DecisionRecord {
    /// The embedded texts with their weights as `Query::parts` gives them: the query first
    /// (weight 1), then the context turns, most recent first, with their logged weights.
    pub fn parts(&self) -> Vec<(String, f32)> {
        std::iter::once((self.query.clone(), 1.0))
            .chain(self.context.iter().map(|c| (c.text.clone(), c.weight)))
            .collect()
    }

    /// Checks what tools that re-read the log rely on (`label-queue`, `replay`): a non-empty
    /// id, query, tier and context turns, and finite numbers (weights also `>= 0`). `Err` holds
    /// every problem found, joined.
    pub fn check(&self) -> std::result::Result<(), String> {
        let mut problems = Vec::new();
        for (field, value) in [
            ("id", &self.id),
            ("query", &self.query),
            ("tier", &self.tier),
        ] {
            if value.trim().is_empty() {
                problems.push(format!("`{field}` is empty"));
            }
        }
        for (i, turn) in self.context.iter().enumerate() {
            if turn.text.trim().is_empty() {
                problems.push(format!("context turn #{} is empty", i + 1));
            }
            if !(turn.weight.is_finite() && turn.weight >= 0.0) {
                problems.push(format!(
                    "context turn #{} has weight {}, expected a finite number >= 0",
                    i + 1,
                    turn.weight
                ));
            }
        }
        if !self.confidence.is_finite() {
            problems.push(format!("`confidence` is {}", self.confidence));
        }
        for (tier, q) in &self.quality {
            if !q.is_finite() {
                problems.push(format!("quality of `{tier}` is {q}"));
            }
        }
        if !self.policy.quality_target.is_finite() {
            problems.push(format!(
                "`policy.quality_target` is {}",
                self.policy.quality_target
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Reads decision logs (e.g. a log and its rotated files) for tools that re-read them: every
/// line must parse and pass [`DecisionRecord::check`]. Every bad line of a file is reported with
/// its number; the first file with bad lines fails the read.
pub fn read_checked_decisions(paths: &[PathBuf]) -> Result<Vec<DecisionRecord>> {
    let mut records = Vec::new();
    for path in paths {
        let file = File::open(path)
            .map_err(|e| Error::io(format!("reading decisions {}", path.display()), e))?;
        let mut file_records = Vec::new();
        let mut errors = Vec::new();
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let line =
                line.map_err(|e| Error::io(format!("reading decisions {}", path.display()), e))?;
            if line.trim().is_empty() {
                continue;
            }
            let checked = serde_json::from_str::<DecisionRecord>(&line)
                .map_err(|e| format!("not a decision record: {e}"))
                .and_then(|r| r.check().map(|()| r));
            match checked {
                Ok(r) => file_records.push(r),
                Err(message) => errors.push(LineError {
                    line: i + 1,
                    message,
                }),
            }
        }
        records.extend(Error::unless_lines(file_records, path.display(), errors)?);
    }
    Ok(records)
}

/// A plain record for tests of tools that read the log: one query, no context, the given
/// tier, quality 1 for it, neighbours basis, default policy knobs. Tests change fields as they
/// need.
#[cfg(test)]
pub(crate) fn test_record(id: &str, query: &str, tier: &str) -> DecisionRecord {
    DecisionRecord {
        id: id.into(),
        time: rfc3339(UNIX_EPOCH),
        endpoint: "route".into(),
        query: query.into(),
        context: Vec::new(),
        tier: tier.into(),
        model: format!("model-{tier}"),
        confidence: 1.0,
        quality: [(tier.to_string(), 1.0)].into(),
        basis: Basis::Neighbors,
        reason: String::new(),
        neighbors: Vec::new(),
        policy: LoggedPolicy {
            k: 10,
            temperature: 0.05,
            quality_target: 0.9,
            min_similarity: 0.35,
            fallback_tier: "large".into(),
            category_baseline: false,
            configured_quality_target: None,
        },
        examples_version: "0-0".into(),
        embedder: LoggedEmbedder {
            model: "words".into(),
            sha256: "0".repeat(64),
        },
        route_ms: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn record(id: &str) -> DecisionRecord {
        DecisionRecord {
            id: id.into(),
            time: rfc3339(SystemTime::now()),
            endpoint: "route".into(),
            query: format!("query {id}"),
            context: vec![ContextTurn {
                text: "earlier".into(),
                weight: 0.5,
            }],
            tier: "small".into(),
            model: "m".into(),
            confidence: 1.0,
            quality: [("small".to_string(), 1.0)].into(),
            basis: Basis::Neighbors,
            reason: "r".into(),
            neighbors: vec![LoggedNeighbor {
                id: Some("e1".into()),
                similarity: 0.9,
            }],
            policy: LoggedPolicy {
                k: 10,
                temperature: 0.05,
                quality_target: 0.7,
                min_similarity: 0.35,
                fallback_tier: "large".into(),
                category_baseline: false,
                configured_quality_target: None,
            },
            examples_version: "1:abc".into(),
            embedder: LoggedEmbedder {
                model: "m".into(),
                sha256: "0".repeat(64),
            },
            route_ms: 1.5,
        }
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_962_885_123);
        assert_eq!(rfc3339(t), "2026-11-29T14:34:45.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn writes_rotates_and_finds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/decisions.jsonl");
        let log = DecisionLog::open(LogOptions {
            path: path.clone(),
            max_bytes: 2_000,
            keep: 2,
            capacity: 10_000,
        })
        .unwrap();
        for i in 0..40 {
            assert!(log.log(record(&format!("r{i}"))));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while log.written() < 40 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(log.written(), 40);
        drop(log);
        // Rotation kept the current file and two older ones, each under the limit.
        assert!(rotated(&path, 1).exists() && rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists());
        for p in [path.clone(), rotated(&path, 1), rotated(&path, 2)] {
            assert!(std::fs::metadata(&p).unwrap().len() <= 2_000);
        }
        let current = read_decisions(&path).unwrap();
        assert_eq!(current.last().unwrap().id, "r39");
        assert_eq!(current.last().unwrap().turns(), ["earlier", "query r39"]);
        let older = read_decisions(&rotated(&path, 2)).unwrap();
        let first_kept = older[0].id.clone();
        assert!(find_decision(&path, 2, &first_kept).unwrap().is_some());
        assert!(find_decision(&path, 2, "r39").unwrap().is_some());
        // Rotated away beyond `keep`: gone.
        assert!(find_decision(&path, 2, "r0").unwrap().is_none());
    }

    #[test]
    fn a_full_channel_drops_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _rx) = sync_channel(1);
        let log = DecisionLog {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            written: Arc::new(AtomicU64::new(0)),
            path: dir.path().join("x"),
        };
        assert!(log.log(record("a")));
        assert!(!log.log(record("b")), "the channel holds one, nobody reads");
        assert_eq!(log.dropped(), 1);
    }

    #[test]
    fn recent_decisions_forget_the_oldest() {
        let mut recent = RecentDecisions::new(2);
        for id in ["a", "b", "c"] {
            recent.insert(Arc::new(record(id)));
        }
        assert!(recent.get("a").is_none());
        assert!(recent.get("b").is_some() && recent.get("c").is_some());
        assert_eq!(recent.len(), 2);
    }

    #[test]
    fn bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        let good = serde_json::to_string(&record("a")).unwrap();
        std::fs::write(&path, format!("{good}\n{{\"id\": 1}}\n")).unwrap();
        let e = read_decisions(&path).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
