//! Sentence embeddings: the [`Embedder`] trait and its candle BERT implementation.
//!
//! This folder is the only place candle, tokenizers and hf-hub appear. `source` finds and
//! verifies the model files, `device` picks CPU/CUDA/Metal, `bert` runs the forward pass, and
//! `cache` keeps example embeddings on disk so restarts do not re-embed them.

mod bert;
pub mod cache;
pub mod device;
pub mod gpu_check;
mod kernels;
mod ops;
pub mod source;

pub use bert::BertEmbedder;
pub use cache::EmbeddingCache;
pub use device::DeviceSpec;
pub use source::{ModelSpec, ResolvedModel, SourceKind, DEFAULT_MODEL};

use serde::Serialize;

use crate::error::Result;

/// What an embedder is, for `model info`, logs and cache keys.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    /// The configured model: a hub id or a local directory.
    pub name: String,
    /// Where the files came from.
    pub source: SourceKind,
    /// The local directory holding the files.
    pub dir: std::path::PathBuf,
    /// SHA-256 of the weights file: identifies the model in the embedding cache.
    pub sha256: String,
    pub dim: usize,
    /// `mean` or `cls`.
    pub pooling: String,
    /// Longer inputs are truncated to this many tokens (special tokens included).
    pub max_length: usize,
    /// `cpu`, `cuda:0`, `metal:0`.
    pub device: String,
}

/// Turns texts into L2-normalised vectors, one per text, in order.
pub trait Embedder: Send + Sync {
    fn info(&self) -> &ModelInfo;

    fn dim(&self) -> usize {
        self.info().dim
    }

    /// Embeds a batch. An empty slice gives an empty result.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;

    /// Number of tokens a text becomes (special tokens included, after truncation).
    fn count_tokens(&self, text: &str) -> Result<usize>;
}

/// Bytes of text kept per token the model reads, before tokenising: the model reads at most
/// `max_length` tokens, and no text needs more than this many bytes per token to fill them, so
/// cutting here changes no embedding while bounding a query's tokenising cost (a 1 MiB query
/// would otherwise be tokenised whole, then truncated).
pub const BYTES_PER_TOKEN: usize = 32;

/// `text` cut to `max_tokens * BYTES_PER_TOKEN` bytes, at a character boundary.
pub fn cut_for_embedding(text: &str, max_tokens: usize) -> &str {
    let limit = max_tokens.saturating_mul(BYTES_PER_TOKEN);
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Resolves (fetching if needed), verifies and loads a model onto a device
/// (`Config::model_spec()` and `Config::device()` give both from the config).
pub fn load_embedder(spec: &ModelSpec, device: DeviceSpec) -> Result<BertEmbedder> {
    let model = source::resolve(spec)?;
    let device = device::select_device(device)?;
    BertEmbedder::load(&spec.name, &model, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_long_texts_at_a_character_boundary() {
        assert_eq!(cut_for_embedding("short", 256), "short");
        let long = "é".repeat(10_000); // 2 bytes each
        let cut = cut_for_embedding(&long, 2);
        assert_eq!(cut.len(), 64);
        let odd = format!("a{long}");
        let cut = cut_for_embedding(&odd, 2);
        assert_eq!(cut.len(), 63, "never inside a character");
    }
}
