//! Labeled examples: the JSONL format, its validation and atomic appends.
//!
//! A line is `{"id"?, "text", "tier"}` or `{"id"?, "text", "outcomes": {tier: score}}`, with an
//! optional `category` and free-form `meta`. Every line of a file is checked before any is used,
//! and every bad line is reported with its number, so a user fixes a file in one pass.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, LineError, Result};
use crate::tier::Tiers;

/// What an example says about the tiers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Label {
    /// The cheapest tier that answers it well: quality 0 below it, 1 from it up.
    Tier { tier: String },
    /// A measured score in [0,1] per tier; tiers without a score are unknown, not zero.
    Outcomes { outcomes: BTreeMap<String, f32> },
}

impl Label {
    /// Quality per tier (indexed like `tiers`), `None` where the example says nothing.
    pub fn quality(&self, tiers: &Tiers) -> Vec<Option<f32>> {
        match self {
            Label::Tier { tier } => {
                let at = tiers.position(tier).unwrap_or(tiers.len());
                (0..tiers.len())
                    .map(|i| Some(if i >= at { 1.0 } else { 0.0 }))
                    .collect()
            }
            Label::Outcomes { outcomes } => tiers
                .iter()
                .map(|t| outcomes.get(&t.name).copied())
                .collect(),
        }
    }
}

/// One labeled example query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Example {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[schema(pattern = "\\S")]
    pub text: String,
    #[serde(flatten)]
    pub label: Label,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Value>,
}

/// Size limits on an example's fields, for examples being added (`ingest`, `POST
/// /v1/examples`, feedback); a file already on disk is read as it is. `[routing.example_limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FieldLimits {
    pub id_bytes: usize,
    pub text_bytes: usize,
    pub category_bytes: usize,
    /// `meta` as compact JSON.
    pub meta_bytes: usize,
}

impl Default for FieldLimits {
    fn default() -> Self {
        FieldLimits {
            id_bytes: 256,
            text_bytes: 64 * 1024,
            category_bytes: 128,
            meta_bytes: 16 * 1024,
        }
    }
}

impl FieldLimits {
    /// No limits (reading a file that is already there).
    pub fn unbounded() -> Self {
        FieldLimits {
            id_bytes: usize::MAX,
            text_bytes: usize::MAX,
            category_bytes: usize::MAX,
            meta_bytes: usize::MAX,
        }
    }

    /// Every field over its limit, named, with the key that sets it.
    fn problems(&self, e: &Example) -> Vec<String> {
        let meta = e.meta.as_ref().map_or(0, |m| m.to_string().len());
        [
            ("id", e.id.as_ref().map_or(0, String::len), self.id_bytes),
            ("text", e.text.len(), self.text_bytes),
            (
                "category",
                e.category.as_ref().map_or(0, String::len),
                self.category_bytes,
            ),
            ("meta", meta, self.meta_bytes),
        ]
        .into_iter()
        .filter(|&(_, len, max)| len > max)
        .map(|(field, len, max)| {
            format!(
                "`{field}` is {len} bytes; at most {max} are accepted \
                 (routing.example_limits.{field}_bytes)"
            )
        })
        .collect()
    }
}

/// The raw shape of a line, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExample {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tier: Option<String>,
    #[serde(default)]
    outcomes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    meta: Option<serde_json::Value>,
}

/// Validates one line; `Err` holds every problem found on it, joined.
fn validate_line(
    line: &str,
    tiers: &Tiers,
    limits: &FieldLimits,
) -> std::result::Result<Example, String> {
    let raw: RawExample = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let mut problems = Vec::new();
    let id = match raw.id {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            problems.push(format!(
                "`id` must be a non-empty string or a number, got {other}"
            ));
            None
        }
    };
    let text = raw.text.unwrap_or_default();
    if text.trim().is_empty() {
        problems.push("`text` is missing or empty".to_string());
    }
    let label = match (raw.tier, raw.outcomes) {
        (Some(_), Some(_)) => {
            problems.push("give either `tier` or `outcomes`, not both".to_string());
            None
        }
        (None, None) => {
            problems.push("a label is missing: add `tier` or `outcomes`".to_string());
            None
        }
        (Some(tier), None) => match tiers.require(&tier) {
            Ok(_) => Some(Label::Tier { tier }),
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        },
        (None, Some(raw_outcomes)) => {
            let mut outcomes = BTreeMap::new();
            if raw_outcomes.is_empty() {
                problems.push("`outcomes` is empty".to_string());
            }
            for (tier, value) in raw_outcomes {
                if let Err(e) = tiers.require(&tier) {
                    problems.push(format!("in `outcomes`: {e}"));
                    continue;
                }
                match score(&value) {
                    Some(s) => {
                        outcomes.insert(tier, s);
                    }
                    None => problems.push(format!(
                        "outcome for `{tier}` must be a number in [0, 1] or a boolean, got {value}"
                    )),
                }
            }
            Some(Label::Outcomes { outcomes })
        }
    };
    match (problems.is_empty(), label) {
        (true, Some(label)) => {
            let example = Example {
                id,
                text,
                label,
                category: raw.category,
                meta: raw.meta,
            };
            let over = limits.problems(&example);
            if over.is_empty() {
                Ok(example)
            } else {
                Err(over.join("; "))
            }
        }
        _ => Err(problems.join("; ")),
    }
}

/// A score in [0,1] from a JSON number or boolean.
fn score(value: &serde_json::Value) -> Option<f32> {
    match value {
        serde_json::Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        serde_json::Value::Number(n) => n
            .as_f64()
            .filter(|x| x.is_finite() && (0.0..=1.0).contains(x))
            .map(|x| x as f32),
        _ => None,
    }
}

/// Parses and validates JSONL text. Blank lines are skipped. `known_ids` are ids already in
/// use (e.g. in the file being appended to): reusing one is an error, as is a duplicate within
/// `text`. Returns every bad line, not just the first.
pub fn parse_examples(
    text: &str,
    tiers: &Tiers,
    known_ids: &HashSet<String>,
) -> std::result::Result<Vec<Example>, Vec<LineError>> {
    parse_new_examples(text, tiers, known_ids, &FieldLimits::unbounded())
}

/// [`parse_examples`] for examples being added: each field within `limits` too.
pub fn parse_new_examples(
    text: &str,
    tiers: &Tiers,
    known_ids: &HashSet<String>,
    limits: &FieldLimits,
) -> std::result::Result<Vec<Example>, Vec<LineError>> {
    let mut examples = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        match validate_line(line, tiers, limits) {
            Ok(example) => {
                if let Some(id) = &example.id {
                    if known_ids.contains(id) || !seen.insert(id.clone()) {
                        errors.push(LineError {
                            line: line_no,
                            message: format!("duplicate id `{id}`"),
                        });
                        continue;
                    }
                }
                examples.push(example);
            }
            Err(message) => errors.push(LineError {
                line: line_no,
                message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(examples)
    } else {
        Err(errors)
    }
}

/// Reads and validates an examples file; any bad line fails the whole read.
pub fn read_examples(path: &Path, tiers: &Tiers) -> Result<Vec<Example>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading examples {}", path.display()), e))?;
    parse_examples(&text, tiers, &HashSet::new()).map_err(|errors| Error::InvalidLines {
        source_name: path.display().to_string(),
        errors,
    })
}

/// Ids used by a set of examples.
pub fn ids(examples: &[Example]) -> HashSet<String> {
    examples.iter().filter_map(|e| e.id.clone()).collect()
}

/// An examples file being changed: its entries (unchanged lines keep their exact bytes) and
/// an id index. Every writer of an examples file goes through [`update_examples`] and this
/// type: `ingest`, `ingest --outcomes`, `POST /v1/examples` and feedback, so that parsing,
/// validation, the id check and the atomic write are one path.
pub struct ExampleSet {
    tiers: Tiers,
    entries: Vec<Entry>,
    ids: HashMap<String, usize>,
    changed: bool,
    /// What examples added to the set must fit in.
    limits: FieldLimits,
}

struct Entry {
    /// The line as read from the file, while the example is unchanged.
    raw: Option<String>,
    example: Example,
}

impl ExampleSet {
    /// A set over examples held elsewhere (a store), for the same validation and updates as a
    /// file's.
    pub fn from_examples(examples: &[Example], tiers: &Tiers) -> Result<Self> {
        let text = examples
            .iter()
            .map(|e| serde_json::to_string(e).expect("examples serialize"))
            .collect::<Vec<_>>()
            .join("\n");
        Self::parse(&text, tiers, "the store")
    }

    fn parse(text: &str, tiers: &Tiers, source_name: &str) -> Result<Self> {
        let examples =
            parse_examples(text, tiers, &HashSet::new()).map_err(|errors| Error::InvalidLines {
                source_name: source_name.to_string(),
                errors,
            })?;
        let raw_lines = text.lines().filter(|l| !l.trim().is_empty());
        let mut set = ExampleSet {
            tiers: tiers.clone(),
            entries: Vec::with_capacity(examples.len()),
            ids: HashMap::new(),
            changed: false,
            limits: FieldLimits::default(),
        };
        for (example, raw) in examples.into_iter().zip(raw_lines) {
            set.push(Some(raw.to_string()), example);
        }
        Ok(set)
    }

    fn push(&mut self, raw: Option<String>, example: Example) {
        if let Some(id) = &example.id {
            self.ids.insert(id.clone(), self.entries.len());
        }
        self.entries.push(Entry { raw, example });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn examples(&self) -> impl Iterator<Item = &Example> {
        self.entries.iter().map(|e| &e.example)
    }

    pub fn get(&self, id: &str) -> Option<&Example> {
        self.ids.get(id).map(|&i| &self.entries[i].example)
    }

    /// Limits for the examples added from now on (the default: [`FieldLimits::default`]).
    pub fn set_limits(&mut self, limits: FieldLimits) {
        self.limits = limits;
    }

    /// Validates JSONL `text` (reported as `source_name`, line by line) against the file's ids
    /// and `also_taken`, and appends its examples. Nothing is added if any line is bad.
    pub fn add_lines(
        &mut self,
        text: &str,
        source_name: &str,
        also_taken: &HashSet<String>,
    ) -> Result<Vec<Example>> {
        let taken: HashSet<String> = self.ids.keys().chain(also_taken).cloned().collect();
        let new =
            parse_new_examples(text, &self.tiers, &taken, &self.limits).map_err(|errors| {
                Error::InvalidLines {
                    source_name: source_name.to_string(),
                    errors,
                }
            })?;
        for e in &new {
            self.push(None, e.clone());
        }
        self.changed |= !new.is_empty();
        Ok(new)
    }

    /// [`ExampleSet::add_lines`] for examples built in code (outcome records, feedback): they
    /// pass the same validation as a file's lines.
    pub fn add(
        &mut self,
        examples: &[Example],
        source_name: &str,
        also_taken: &HashSet<String>,
    ) -> Result<Vec<Example>> {
        let text = examples
            .iter()
            .map(|e| serde_json::to_string(e).expect("examples serialize"))
            .collect::<Vec<_>>()
            .join("\n");
        self.add_lines(&text, source_name, also_taken)
    }

    /// Replaces the example with the same id (returning the old one), or adds it. The example
    /// is validated like a line of the file.
    pub fn put(&mut self, example: Example, source_name: &str) -> Result<Option<Example>> {
        let id = example.id.clone().ok_or_else(|| {
            Error::Config(format!(
                "{source_name}: an example replaced by id needs an id"
            ))
        })?;
        let line = serde_json::to_string(&example).expect("examples serialize");
        let mut checked = parse_new_examples(&line, &self.tiers, &HashSet::new(), &self.limits)
            .map_err(|errors| Error::InvalidLines {
                source_name: source_name.to_string(),
                errors,
            })?;
        let example = checked.pop().expect("one line, one example");
        self.changed = true;
        match self.ids.get(&id) {
            Some(&i) => {
                let entry = &mut self.entries[i];
                entry.raw = None;
                Ok(Some(std::mem::replace(&mut entry.example, example)))
            }
            None => {
                self.push(None, example);
                Ok(None)
            }
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for e in &self.entries {
            match &e.raw {
                Some(raw) => out.extend_from_slice(raw.as_bytes()),
                None => serde_json::to_writer(&mut out, &e.example).expect("examples serialize"),
            }
            out.push(b'\n');
        }
        out
    }
}

/// The one way an examples file changes: takes the file's lock, reads and validates it (a
/// missing file is an empty set), lets `change` add or replace examples, and if anything
/// changed writes the whole file atomically ([`write_atomic`]): a crash leaves the old file or
/// the new one, never half. An error from `change` writes nothing.
///
/// The lock is an advisory `flock` on `<file>.lock` beside it, held from the read to the
/// rename, so that writers in several processes (an `ingest` while the server adds feedback)
/// never lose each other's lines: each reads what the previous one renamed into place.
pub fn update_examples<T>(
    path: &Path,
    tiers: &Tiers,
    change: impl FnOnce(&mut ExampleSet) -> Result<T>,
) -> Result<T> {
    let _locked = lock_beside(path)?;
    remove_stale_temporaries(path)?;
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    let name = format!("{} (the examples file: fix it first)", path.display());
    let mut set = ExampleSet::parse(&text, tiers, &name)?;
    let result = change(&mut set)?;
    if set.changed {
        write_atomic(path, &set.to_bytes())?;
    }
    Ok(result)
}

/// Removes the temporary copies of `path` that a writer killed mid-write left behind (see
/// [`write_atomic`]), under the examples lock, so none is half-way through. Returns how many.
/// `serve` calls it at start; every examples writer calls it too.
pub fn tidy_examples(path: &Path) -> Result<usize> {
    let _locked = lock_beside(path)?;
    remove_stale_temporaries(path)
}

/// The name prefix of `path`'s temporary copies: `.<file name>.tmp-`.
fn temporary_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy());
    format!(".{name}.tmp-")
}

/// Removes `path`'s temporary copies; the caller holds the lock.
fn remove_stale_temporaries(path: &Path) -> Result<usize> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let prefix = temporary_prefix(path);
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let stale = entry.path();
            std::fs::remove_file(&stale)
                .map_err(|e| Error::io(format!("removing the stale {}", stale.display()), e))?;
            tracing::warn!(file = %stale.display(), "removed a temporary copy left by an interrupted write");
            removed += 1;
        }
    }
    Ok(removed)
}

/// An exclusive advisory lock on `<path>.lock`, released when the returned file is dropped.
fn lock_beside(path: &Path) -> Result<std::fs::File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = std::path::PathBuf::from(name);
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io(format!("opening the lock {}", lock_path.display()), e))?;
    file.lock()
        .map_err(|e| Error::io(format!("locking {}", lock_path.display()), e))?;
    Ok(file)
}

/// Writes `bytes` to `path` through a synced temporary file and a rename. The new file keeps
/// the old one's permissions (a temporary file is created private) and, where the process may
/// set it (as root, or to a group it is in), its owner and group.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let context = |what: &str| format!("{what} {}", path.display());
    // A recognisable name (`.<file>.tmp-XXXXXX`), so a copy orphaned by a kill is found and
    // removed by the next writer (see `tidy_examples`).
    let mut tmp = tempfile::Builder::new()
        .prefix(&temporary_prefix(path))
        .tempfile_in(dir)
        .map_err(|e| Error::io(context("writing"), e))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| Error::io(context("writing"), e))?;
    if let Ok(old) = std::fs::metadata(path) {
        tmp.as_file()
            .set_permissions(old.permissions())
            .map_err(|e| Error::io(context("keeping the permissions of"), e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let new = tmp
                .as_file()
                .metadata()
                .map_err(|e| Error::io(context("writing"), e))?;
            if (new.uid(), new.gid()) != (old.uid(), old.gid()) {
                // Not permitted for another user's file unless root: it then becomes ours, as
                // any rewrite by this user would make it.
                if let Err(e) =
                    std::os::unix::fs::fchown(tmp.as_file(), Some(old.uid()), Some(old.gid()))
                {
                    tracing::debug!(error = %e, "cannot keep the owner of {}", path.display());
                }
            }
        }
    }
    tmp.persist(path)
        .map_err(|e| Error::io(context("replacing"), e.error))?;
    Ok(())
}

/// A per-model outcome record, the format of `shared/eval-data/*/*.jsonl`:
/// `{"id", "prompt", "outcomes": {model: bool|number}, "source_benchmark"?, "label_type"?, ...}`.
/// Other fields are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OutcomeRecord {
    pub id: String,
    pub prompt: String,
    #[serde(default)]
    pub source_benchmark: Option<String>,
    /// A finer group inside the benchmark (e.g. the MMLU subject), where the source has one.
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub label_type: Option<String>,
    pub outcomes: BTreeMap<String, serde_json::Value>,
}

/// How raw outcome values become scores in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// From each record's `label_type`: `judge_score_1_10` as a judge score, else as `Unit`.
    Auto,
    /// Booleans or numbers already in [0, 1].
    Unit,
    /// Judge scores 1–10, mapped linearly: 1 → 0, 10 → 1.
    Judge10,
}

impl std::str::FromStr for Scale {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Scale::Auto),
            "unit" => Ok(Scale::Unit),
            "judge10" => Ok(Scale::Judge10),
            _ => Err(Error::Config(format!(
                "unknown scale `{s}`: use auto, unit or judge10"
            ))),
        }
    }
}

impl Scale {
    /// The score of one raw value, `None` if it is not a valid value on this scale.
    pub fn score(self, value: &serde_json::Value, label_type: Option<&str>) -> Option<f32> {
        let scale = match self {
            Scale::Auto if label_type == Some("judge_score_1_10") => Scale::Judge10,
            Scale::Auto => Scale::Unit,
            s => s,
        };
        match scale {
            Scale::Judge10 => value
                .as_f64()
                .filter(|x| (1.0..=10.0).contains(x))
                .map(|x| ((x - 1.0) / 9.0) as f32),
            _ => score(value),
        }
    }
}

/// Which outcome keys stand for each tier: `small=modelA,modelB` means the first of those keys
/// present in a record is the small tier's outcome (sources spell one model differently).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OutcomeMap(Vec<(String, Vec<String>)>);

impl OutcomeMap {
    /// Parses `tier=key[,key...]` specs, checking the tiers exist.
    pub fn parse(specs: &[String], tiers: &Tiers) -> Result<Self> {
        let mut map: Vec<(String, Vec<String>)> = Vec::new();
        for spec in specs {
            let (tier, keys) = spec.split_once('=').ok_or_else(|| {
                Error::Config(format!("--map `{spec}`: expected tier=model[,model...]"))
            })?;
            tiers.require(tier.trim())?;
            let keys: Vec<String> = keys
                .split(',')
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
                .collect();
            if keys.is_empty() {
                return Err(Error::Config(format!("--map `{spec}` names no model")));
            }
            match map.iter_mut().find(|(t, _)| t == tier.trim()) {
                Some((_, existing)) => existing.extend(keys),
                None => map.push((tier.trim().to_string(), keys)),
            }
        }
        if map.is_empty() {
            return Err(Error::Config(
                "no tier mapping: give --map tier=model (e.g. --map small=gpt-4o-mini)".into(),
            ));
        }
        // Keep tier order (cheapest first), whatever order the flags came in.
        map.sort_by_key(|(t, _)| tiers.position(t));
        Ok(OutcomeMap(map))
    }

    /// Mapped tiers, cheapest first.
    pub fn tiers(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(t, _)| t.as_str())
    }

    /// Scores per mapped tier for a record; `Ok(None)` if a mapped tier has no outcome in it
    /// (absent or null), `Err` if an outcome is present but invalid.
    pub fn scores(
        &self,
        record: &OutcomeRecord,
        scale: Scale,
    ) -> std::result::Result<Option<BTreeMap<String, f32>>, String> {
        let mut out = BTreeMap::new();
        for (tier, keys) in &self.0 {
            let Some((key, value)) = keys.iter().find_map(|k| {
                record
                    .outcomes
                    .get(k)
                    .filter(|v| !v.is_null())
                    .map(|v| (k, v))
            }) else {
                return Ok(None);
            };
            let s = scale
                .score(value, record.label_type.as_deref())
                .ok_or_else(|| format!("outcome `{key}` = {value} is not a valid score"))?;
            out.insert(tier.clone(), s);
        }
        Ok(Some(out))
    }
}

/// Reads outcome records, keeping those whose id is in `only` (when given). Every bad line is
/// reported with its number.
pub fn read_outcome_records(
    path: &Path,
    only: Option<&HashSet<String>>,
) -> Result<Vec<OutcomeRecord>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading outcome records {}", path.display()), e))?;
    let mut records = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<OutcomeRecord>(line) {
            Ok(r) if r.prompt.trim().is_empty() => errors.push(LineError {
                line: i + 1,
                message: "`prompt` is empty".into(),
            }),
            Ok(r) => {
                if only.is_none_or(|ids| ids.contains(&r.id)) {
                    records.push(r);
                }
            }
            Err(e) => errors.push(LineError {
                line: i + 1,
                message: format!("not an outcome record: {e}"),
            }),
        }
    }
    Error::unless_lines(records, path.display(), errors)
}

/// Outcome examples from records: records lacking a mapped model are skipped and counted;
/// an invalid outcome value is an error naming the record.
pub fn outcome_examples(
    records: &[OutcomeRecord],
    map: &OutcomeMap,
    scale: Scale,
) -> Result<(Vec<Example>, usize)> {
    let mut examples = Vec::new();
    let mut skipped = 0;
    let mut errors = Vec::new();
    for (i, r) in records.iter().enumerate() {
        match map.scores(r, scale) {
            Ok(Some(outcomes)) => examples.push(Example {
                id: Some(r.id.clone()),
                text: r.prompt.clone(),
                label: Label::Outcomes { outcomes },
                category: r.source_benchmark.clone(),
                meta: None,
            }),
            Ok(None) => skipped += 1,
            Err(message) => errors.push(LineError {
                line: i + 1,
                message: format!("record `{}`: {message}", r.id),
            }),
        }
    }
    Error::unless_lines((examples, skipped), "outcome records", errors)
}

/// Ids listed one per line (blank lines and `#` comments ignored).
pub fn read_id_list(path: &Path) -> Result<HashSet<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading id list {}", path.display()), e))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tier::test_tiers;

    fn tiers() -> Tiers {
        test_tiers(&["small", "medium", "large"])
    }

    #[test]
    fn parses_both_label_kinds() {
        let text = r#"{"id": "a", "text": "hi", "tier": "small"}

{"text": "prove it", "outcomes": {"small": 0, "large": true}, "category": "math"}
"#;
        let ex = parse_examples(text, &tiers(), &HashSet::new()).unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].label.quality(&tiers()), vec![Some(1.0); 3]);
        assert_eq!(
            ex[1].label.quality(&tiers()),
            vec![Some(0.0), None, Some(1.0)]
        );
        assert_eq!(ex[1].category.as_deref(), Some("math"));
    }

    #[test]
    fn tier_label_means_zero_below_one_from_it_up() {
        let l = Label::Tier {
            tier: "medium".into(),
        };
        assert_eq!(l.quality(&tiers()), vec![Some(0.0), Some(1.0), Some(1.0)]);
    }

    #[test]
    fn reports_every_bad_line_with_its_number() {
        let text = [
            r#"{"id": "a", "text": "ok", "tier": "small"}"#,
            r#"{"text": "broken"#,
            r#"{"text": "   ", "tier": "small"}"#,
            r#"{"text": "x", "tier": "huge"}"#,
            r#"{"text": "x", "outcomes": {"small": 1.5}}"#,
            r#"{"id": "a", "text": "dup", "tier": "large"}"#,
            r#"{"text": "x"}"#,
            r#"{"text": "x", "tier": "small", "teir": "large"}"#,
        ]
        .join("\n");
        let errors = parse_examples(&text, &tiers(), &HashSet::new()).unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6, 7, 8]);
        assert!(errors[0].message.contains("invalid JSON"));
        assert!(errors[1].message.contains("empty"));
        assert!(errors[2].message.contains("unknown tier `huge`"));
        assert!(errors[3].message.contains("[0, 1]"));
        assert!(errors[4].message.contains("duplicate id `a`"));
        assert!(errors[5].message.contains("label is missing"));
        assert!(errors[6].message.contains("teir"));
    }

    #[test]
    fn known_ids_count_as_duplicates() {
        let known: HashSet<String> = ["a".to_string()].into();
        let errors = parse_examples(r#"{"id":"a","text":"t","tier":"small"}"#, &tiers(), &known)
            .unwrap_err();
        assert_eq!(errors[0].line, 1);
    }

    #[test]
    fn append_is_atomic_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/examples.jsonl");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, r#"{"text":"first","tier":"small"}"#).unwrap(); // no final newline
        let new = parse_examples(
            r#"{"id":"n1","text":"second","outcomes":{"large":0.5}}"#,
            &tiers(),
            &HashSet::new(),
        )
        .unwrap();
        update_examples(&path, &tiers(), |set| set.add(&new, "new", &HashSet::new())).unwrap();
        let all = read_examples(&path, &tiers()).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1], new[0]);
        // The first line keeps its exact bytes.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("{\"text\":\"first\",\"tier\":\"small\"}\n"),
            "{text}"
        );
        // Only the target file and its lock are left behind: no temporary files.
        let mut names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["examples.jsonl", "examples.jsonl.lock"]);
        // A copy orphaned by a writer killed mid-write is removed by the next writer, and by
        // `tidy_examples` (at serve start); other files are left alone.
        let folder = path.parent().unwrap();
        let orphan = folder.join(".examples.jsonl.tmp-Ab12Cd");
        std::fs::write(&orphan, "half a file").unwrap();
        std::fs::write(folder.join(".other.tmp-x"), "not ours").unwrap();
        update_examples(&path, &tiers(), |set| {
            set.add_lines(
                r#"{"id":"z9","text":"third","tier":"small"}"#,
                "test",
                &HashSet::new(),
            )
        })
        .unwrap();
        assert!(!orphan.exists());
        assert!(folder.join(".other.tmp-x").exists());
        std::fs::write(&orphan, "half a file").unwrap();
        assert_eq!(tidy_examples(&path).unwrap(), 1);
        assert!(!orphan.exists());
    }

    /// Writers in parallel (threads here; processes hold the same flock) lose nothing.
    #[test]
    fn concurrent_updates_keep_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("examples.jsonl");
        std::thread::scope(|scope| {
            for w in 0..4 {
                let path = &path;
                scope.spawn(move || {
                    for i in 0..25 {
                        let line =
                            format!(r#"{{"id":"w{w}-{i}","text":"t {w} {i}","tier":"small"}}"#);
                        update_examples(path, &tiers(), |set| {
                            set.add_lines(&line, "test", &HashSet::new())
                        })
                        .unwrap();
                    }
                });
            }
        });
        assert_eq!(read_examples(&path, &tiers()).unwrap().len(), 100);
    }

    #[cfg(unix)]
    #[test]
    fn rewriting_keeps_the_file_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("examples.jsonl");
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        update_examples(&path, &tiers(), |set| {
            set.add_lines(r#"{"text":"x","tier":"small"}"#, "t", &HashSet::new())
        })
        .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }

    /// Run as root (as our CI is), a rewrite keeps another user's ownership; otherwise the
    /// process cannot give a file away, and the test checks only that the rewrite works.
    #[cfg(unix)]
    #[test]
    fn rewriting_keeps_the_owner_when_it_may() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("examples.jsonl");
        std::fs::write(&path, "").unwrap();
        let root = std::fs::metadata(&path).unwrap().uid() == 0;
        if root {
            std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
        }
        update_examples(&path, &tiers(), |set| {
            set.add_lines(r#"{"text":"x","tier":"small"}"#, "t", &HashSet::new())
        })
        .unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        if root {
            assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
        }
        assert_eq!(read_examples(&path, &tiers()).unwrap().len(), 1);
    }

    #[test]
    fn one_update_path_checks_ids_against_the_file_and_replaces_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("examples.jsonl");
        let none = HashSet::new();
        update_examples(&path, &tiers(), |set| {
            set.add_lines(r#"{"id":"a","text":"one","tier":"small"}"#, "first", &none)
        })
        .unwrap();
        // A reused id (in the file, or in `also_taken`) fails the whole batch; nothing written.
        let e = update_examples(&path, &tiers(), |set| {
            set.add_lines(
                "{\"id\":\"b\",\"text\":\"two\",\"tier\":\"small\"}\n{\"id\":\"a\",\"text\":\"x\",\"tier\":\"large\"}",
                "second",
                &none,
            )
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("line 2") && e.contains("duplicate id `a`"),
            "{e}"
        );
        let taken: HashSet<String> = ["c".to_string()].into();
        assert!(update_examples(&path, &tiers(), |set| {
            set.add_lines(r#"{"id":"c","text":"x","tier":"small"}"#, "third", &taken)
        })
        .is_err());
        assert_eq!(read_examples(&path, &tiers()).unwrap().len(), 1);
        // put replaces by id and validates like a line.
        let mut ex = read_examples(&path, &tiers()).unwrap().remove(0);
        ex.label = Label::Tier {
            tier: "large".into(),
        };
        let old = update_examples(&path, &tiers(), |set| set.put(ex.clone(), "put")).unwrap();
        assert_eq!(
            old.unwrap().label,
            Label::Tier {
                tier: "small".into()
            }
        );
        assert_eq!(read_examples(&path, &tiers()).unwrap(), vec![ex.clone()]);
        ex.label = Label::Tier {
            tier: "huge".into(),
        };
        assert!(update_examples(&path, &tiers(), |set| set.put(ex, "put")).is_err());
        // A bad examples file is named, and never overwritten.
        std::fs::write(&path, "{broken\n").unwrap();
        let e = update_examples(&path, &tiers(), |set| set.add(&[], "x", &none))
            .unwrap_err()
            .to_string();
        assert!(e.contains("fix it first") && e.contains("line 1"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{broken\n");
    }

    fn record(line: &str) -> OutcomeRecord {
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn outcome_records_map_to_tiers_with_scales() {
        let t = tiers();
        let map = OutcomeMap::parse(
            &["large=gpt-4,gpt4_turbo".into(), "small=mixtral".into()],
            &t,
        )
        .unwrap();
        assert_eq!(map.tiers().collect::<Vec<_>>(), ["small", "large"]);
        let records = [
            record(r#"{"id":"a","prompt":"p","outcomes":{"mixtral":false,"gpt-4":true}}"#),
            record(
                r#"{"id":"b","prompt":"p","label_type":"judge_score_1_10","outcomes":{"mixtral":5.5,"gpt4_turbo":10}}"#,
            ),
            record(r#"{"id":"c","prompt":"p","outcomes":{"gpt-4":1}}"#),
        ];
        let (examples, skipped) = outcome_examples(&records, &map, Scale::Auto).unwrap();
        assert_eq!(skipped, 1, "record c lacks the small model");
        assert_eq!(examples.len(), 2);
        let q = |i: usize| examples[i].label.quality(&t);
        assert_eq!(q(0), vec![Some(0.0), None, Some(1.0)]);
        assert_eq!(q(1), vec![Some(0.5), None, Some(1.0)]);
        assert_eq!(examples[1].id.as_deref(), Some("b"));
    }

    #[test]
    fn invalid_outcomes_and_maps_are_refused() {
        let t = tiers();
        assert!(OutcomeMap::parse(&["huge=x".into()], &t).is_err());
        assert!(OutcomeMap::parse(&["small".into()], &t).is_err());
        assert!(OutcomeMap::parse(&[], &t).is_err());
        let map = OutcomeMap::parse(&["small=m".into()], &t).unwrap();
        let bad = record(r#"{"id":"x","prompt":"p","outcomes":{"m":7}}"#);
        let e = outcome_examples(std::slice::from_ref(&bad), &map, Scale::Auto)
            .unwrap_err()
            .to_string();
        assert!(e.contains("record `x`"), "{e}");
        // On the judge scale, 7 is valid: (7 - 1) / 9.
        let (ex, _) = outcome_examples(&[bad], &map, Scale::Judge10).unwrap();
        assert!((ex[0].label.quality(&t)[0].unwrap() - 6.0 / 9.0).abs() < 1e-6);
    }

    #[test]
    fn reads_records_with_an_id_filter_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        std::fs::write(
            &path,
            "{\"id\":\"a\",\"prompt\":\"x\",\"outcomes\":{}}\n{\"id\":\"b\",\"prompt\":\"y\",\"outcomes\":{}}\n",
        )
        .unwrap();
        let only: HashSet<String> = ["b".to_string()].into();
        let r = read_outcome_records(&path, Some(&only)).unwrap();
        assert_eq!(r.len(), 1);
        std::fs::write(
            &path,
            "{\"id\":\"a\",\"prompt\":\"x\",\"outcomes\":{}}\n{\"id\":1}\n",
        )
        .unwrap();
        let e = read_outcome_records(&path, None).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
