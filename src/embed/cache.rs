//! Example embeddings on disk, keyed by model hash and text hash, so a restart with 100k
//! examples does not re-embed them.
//!
//! One append-only file per model: an 8-byte magic, the dimension (u32 LE), then records of a
//! 16-byte text key (SHA-256 prefix) and `dim` f32 LE values. A crash mid-append leaves a torn
//! last record, which the next open ignores and cuts off. It is a cache: deleting it is safe.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"MRCACHE1";
const HEADER: usize = 12;
type Key = [u8; 16];

/// Cached embeddings of one model.
pub struct EmbeddingCache {
    path: PathBuf,
    dim: usize,
    vectors: HashMap<Key, Vec<f32>>,
}

fn key(text: &str) -> Key {
    let digest = Sha256::digest(text.as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&digest[..16]);
    k
}

impl EmbeddingCache {
    /// Opens (or starts) `<dir>/<model_sha256 prefix>-<dim>.bin`.
    pub fn open(dir: &Path, model_sha256: &str, dim: usize) -> Result<Self> {
        let name = format!("{}-{dim}.bin", &model_sha256[..model_sha256.len().min(16)]);
        let path = dir.join(name);
        let mut cache = EmbeddingCache {
            path,
            dim,
            vectors: HashMap::new(),
        };
        cache.load()?;
        Ok(cache)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.vectors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vectors.is_empty()
    }

    pub fn get(&self, text: &str) -> Option<&[f32]> {
        self.vectors.get(&key(text)).map(Vec::as_slice)
    }

    fn record_len(&self) -> usize {
        16 + 4 * self.dim
    }

    fn load(&mut self) -> Result<()> {
        let ctx = |what: &str| format!("{what} embedding cache {}", self.path.display());
        let mut bytes = Vec::new();
        match File::open(&self.path) {
            Ok(mut f) => f
                .read_to_end(&mut bytes)
                .map_err(|e| Error::io(ctx("reading"), e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(ctx("opening"), e)),
        };
        if bytes.len() < HEADER
            || &bytes[..8] != MAGIC
            || u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize != self.dim
        {
            tracing::warn!(
                "{} is not a cache for this model; starting afresh",
                self.path.display()
            );
            return self.rewrite_header();
        }
        let rec = self.record_len();
        let whole = (bytes.len() - HEADER) / rec;
        for r in bytes[HEADER..HEADER + whole * rec].chunks_exact(rec) {
            let k: Key = r[..16].try_into().unwrap();
            let v = r[16..]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            self.vectors.insert(k, v);
        }
        let valid = (HEADER + whole * rec) as u64;
        if valid != bytes.len() as u64 {
            tracing::warn!("cutting a torn record off {}", self.path.display());
            OpenOptions::new()
                .write(true)
                .open(&self.path)
                .and_then(|f| f.set_len(valid))
                .map_err(|e| Error::io(ctx("repairing"), e))?;
        }
        Ok(())
    }

    fn rewrite_header(&self) -> Result<()> {
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&(self.dim as u32).to_le_bytes());
        crate::corpus::write_atomic(&self.path, &header)
    }

    /// Stores new embeddings (texts already cached are skipped) and syncs them to disk.
    pub fn insert(&mut self, items: &[(&str, &[f32])]) -> Result<()> {
        if !self.path.exists() {
            self.rewrite_header()?;
        }
        let ctx = || format!("appending to embedding cache {}", self.path.display());
        let file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::io(ctx(), e))?;
        let mut out = BufWriter::new(file);
        for (text, v) in items {
            if v.len() != self.dim {
                return Err(Error::DimensionMismatch {
                    expected: self.dim,
                    got: v.len(),
                });
            }
            let k = key(text);
            if self.vectors.contains_key(&k) {
                continue;
            }
            out.write_all(&k).map_err(|e| Error::io(ctx(), e))?;
            for x in v.iter() {
                out.write_all(&x.to_le_bytes())
                    .map_err(|e| Error::io(ctx(), e))?;
            }
            self.vectors.insert(k, v.to_vec());
        }
        let file = out
            .into_inner()
            .map_err(|e| Error::io(ctx(), e.into_error()))?;
        file.sync_data().map_err(|e| Error::io(ctx(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = EmbeddingCache::open(dir.path(), "abcdef0123456789ff", 3).unwrap();
        c.insert(&[("a", &[1.0, 2.0, 3.0]), ("b", &[4.0, 5.0, 6.0])])
            .unwrap();
        c.insert(&[("a", &[9.0, 9.0, 9.0])]).unwrap(); // already cached: kept as is
        let path = c.path().to_path_buf();
        // Tear the last record.
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 5)
            .unwrap();
        let mut c = EmbeddingCache::open(dir.path(), "abcdef0123456789ff", 3).unwrap();
        assert_eq!(c.get("a"), Some(&[1.0, 2.0, 3.0][..]));
        assert_eq!(c.get("b"), None);
        c.insert(&[("b", &[4.0, 5.0, 6.0])]).unwrap();
        let c = EmbeddingCache::open(dir.path(), "abcdef0123456789ff", 3).unwrap();
        assert_eq!((c.len(), c.get("b")), (2, Some(&[4.0, 5.0, 6.0][..])));
        // Another model (or dimension) does not see these vectors.
        assert!(EmbeddingCache::open(dir.path(), "0000000000000000", 3)
            .unwrap()
            .is_empty());
    }
}
