//! The library's error type. Variants carry the fields a caller needs to act on the failure
//! (which line, which file, which hash); the binary prints them with their causes and the server
//! maps them to HTTP statuses in one place.

use std::fmt;
use std::path::PathBuf;

/// One invalid line of a JSONL file, with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Every way the library can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid config: {0}")]
    Config(String),

    #[error("{} invalid line(s) in {source_name}, nothing was used:\n{}", errors.len(), join_lines(errors))]
    InvalidLines {
        source_name: String,
        errors: Vec<LineError>,
    },

    #[error("unknown tier `{name}` (configured tiers: {known})")]
    UnknownTier { name: String, known: String },

    #[error("invalid feedback: {0}")]
    Feedback(String),

    #[error("feedback on decision `{decision}` conflicts with earlier feedback: {details}")]
    FeedbackConflict { decision: String, details: String },

    #[error("the query is empty: give some text to route")]
    EmptyQuery,

    #[error("embedding model: {0}")]
    Model(String),

    #[error(
        "{file} has SHA-256 {got}, expected {expected}: refusing a file that is not the pinned model \
         (delete it and run `model-router model fetch` again)"
    )]
    HashMismatch {
        file: PathBuf,
        expected: String,
        got: String,
    },

    #[error("device: {0}")]
    Device(String),

    #[error("embedding failed: {0}")]
    Embed(String),

    #[error("vector dimension mismatch: expected {expected}, got {got}")]
    DimensionMismatch { expected: usize, got: usize },

    #[error("index: {0}")]
    Index(String),

    /// The store could not be reached, or failed a query: writes wait, routing goes on.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),

    /// Ids that the store holds already (a live addition may not replace them).
    #[error("ids already in the store: {0}")]
    DuplicateIds(String),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Lines shown in an [`Error::InvalidLines`] message; the rest are counted.
const SHOWN_LINES: usize = 50;

fn join_lines(errors: &[LineError]) -> String {
    let mut text = errors
        .iter()
        .take(SHOWN_LINES)
        .map(|e| format!("  {e}"))
        .collect::<Vec<_>>()
        .join("\n");
    if errors.len() > SHOWN_LINES {
        text.push_str(&format!("\n  … and {} more", errors.len() - SHOWN_LINES));
    }
    text
}

impl Error {
    /// `Ok(value)` when no line was bad, else every bad line of `source_name` as one
    /// [`Error::InvalidLines`]: the shared ending of every line-by-line reader.
    pub fn unless_lines<T>(
        value: T,
        source_name: impl fmt::Display,
        errors: Vec<LineError>,
    ) -> Result<T> {
        if errors.is_empty() {
            Ok(value)
        } else {
            Err(Error::InvalidLines {
                source_name: source_name.to_string(),
                errors,
            })
        }
    }

    /// Wraps an I/O error with what was being done, e.g. "reading data/examples.jsonl".
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
