//! `gpu-check`'s embedding half: the same weights loaded twice, on a GPU with candle's
//! operations and on the CPU with our kernels; the GPU's vectors checked against the CPU's
//! for a fixed set of sentences, at batch 1 and in padded batches; and both timed (batch-1
//! latency at fixed token counts, throughput at fixed batch sizes).
//!
//! The weights are the configured model's when a copy is on this machine (nothing is fetched:
//! GPU machines are often offline), f16 safetensors included (loaded as f32 like any other).
//! Otherwise they are MiniLM-shaped and drawn from a fixed seed, so a machine that cannot hold
//! the real model still checks the same kernels on the same shapes: with the model's
//! tokenizer when its folder has a `tokenizer.json`, else with a deterministic word tokenizer.
//! The CPU side is the reference, since its kernels are what the tests check against
//! sentence-transformers.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::bert::Config;
use serde::Serialize;

use super::bert::{
    read_config, read_max_length, read_pooling, BertEmbedder, Pooling, TextTokenizer, WordTokenizer,
};
use super::device::{device_name, synchronize};
use super::source::{self, ModelSpec, SourceKind};
use super::{Embedder, ModelInfo};
use crate::error::{Error, Result};

/// The seed of the synthetic weights: fixed, so every run checks the same numbers.
pub const SYNTHETIC_SEED: u64 = 0x6d6f_6465_6c2d_7274;
/// Cosine every GPU vector must reach against the CPU kernels' vector of the same sentence.
pub const MIN_COSINE: f32 = 0.9999;

/// A text past the model's maximum length (256 tokens), so truncated.
fn long_sentence() -> String {
    "Summarise the following report. ".repeat(2)
        + &"The quarterly revenue grew by twelve percent while operating costs fell, \
            and the board approved a new research budget for the coming year. "
            .repeat(40)
}

/// The fixed sentences of the correctness check: long (past the model's maximum length, so
/// truncated; first, so every padded batch holds it), short, non-ASCII, code and numbers.
pub fn check_sentences() -> Vec<String> {
    vec![
        long_sentence(),
        "hi".into(),
        "What is the capital of France?".into(),
        "Prove that every group of prime order p is cyclic.".into(),
        "Write a Rust function that parses an ISO 8601 date and returns the weekday.".into(),
        "Ünïcödé façade: naïve café crème brûlée, Grüße aus Köln!".into(),
        "東京の明日の天気は晴れですか？それとも雨ですか。".into(),
        "Привет! Как перевести «сложный запрос» на английский?".into(),
        "🚀🔥 launch the rocket 🚀 — émojis and dashes – ok?".into(),
        "fn main() { let v: Vec<u32> = (0..10).map(|x| x * x).collect(); println!(\"{v:?}\"); }"
            .into(),
        "3.14159 * 2 = 6.28318; e^(iπ) + 1 = 0".into(),
    ]
}

/// Queries of everyday lengths, for the throughput and serving figures.
pub fn traffic(n: usize) -> Vec<String> {
    const BASES: [&str; 8] = [
        "hello! how is your day going so far?",
        "What is the capital of France?",
        "Explain the difference between a process and a thread in an operating system.",
        "Prove that every group of prime order p is cyclic.",
        "Write a Python function that returns the n-th Fibonacci number using memoization.",
        "Translate 'good morning, see you tomorrow' into Spanish and German.",
        "Design a distributed key-value store with strong consistency and explain the trade-offs.",
        "thanks!",
    ];
    (0..n)
        .map(|i| format!("{} (#{i})", BASES[i % BASES.len()]))
        .collect()
}

/// Where the checked weights came from.
#[derive(Debug, Clone, Serialize)]
pub struct WeightsInfo {
    /// `model` (the configured model's files) or `synthetic` (seeded, MiniLM-shaped).
    pub kind: &'static str,
    pub name: String,
    pub dir: Option<PathBuf>,
    pub source: Option<SourceKind>,
    pub sha256: Option<String>,
    /// The stored type of the weights (`f32`, `f16`, ...); every run computes in f32.
    pub stored_dtype: String,
    /// `model` (its tokenizer.json) or `words` (the deterministic stand-in).
    pub tokenizer: &'static str,
    /// The synthetic weights' seed.
    pub seed: Option<u64>,
    pub layers: usize,
    pub hidden: usize,
    pub max_length: usize,
    /// Why the configured model's weights were not used, when they were not.
    pub note: Option<String>,
}

/// One model on two devices: the checked one and the CPU kernels.
pub struct Pair {
    pub device: BertEmbedder,
    pub cpu: BertEmbedder,
    pub weights: WeightsInfo,
}

/// Loads the same weights on `device` (candle's operations, also on the CPU) and on the CPU
/// (our kernels). `synthetic` skips the model's weights even when they are here.
pub fn load_pair(spec: &ModelSpec, device: Device, synthetic: bool) -> Result<Pair> {
    let local = source::resolve_local(spec);
    let tokenizer_dir = local
        .as_ref()
        .and_then(|r| r.as_ref().ok())
        .map(|m| m.dir.clone())
        .or_else(|| {
            let dir = PathBuf::from(&spec.name);
            dir.join("tokenizer.json").is_file().then_some(dir)
        });
    match local {
        Some(Ok(model)) if !synthetic => {
            let stored = stored_dtype(&model.dir.join("model.safetensors"))?;
            let load = |d: Device, candle_ops: bool| {
                BertEmbedder::load_with(&spec.name, &model, d, candle_ops)
            };
            let cpu = load(Device::Cpu, false)?;
            let on_device = load(device, true)?;
            let info = cpu.info().clone();
            Ok(Pair {
                weights: WeightsInfo {
                    kind: "model",
                    name: spec.name.clone(),
                    dir: Some(model.dir.clone()),
                    source: Some(model.source),
                    sha256: Some(model.sha256.clone()),
                    stored_dtype: stored,
                    tokenizer: "model",
                    seed: None,
                    layers: read_config(&model.dir)?.num_hidden_layers,
                    hidden: info.dim,
                    max_length: info.max_length,
                    note: None,
                },
                device: on_device,
                cpu,
            })
        }
        local => {
            let note = match (&local, synthetic) {
                (_, true) => "synthetic weights asked for (--synthetic)".to_string(),
                (Some(Err(e)), _) => format!("the model's files are unusable: {e}"),
                (None, _) => format!(
                    "`{}` is not on this machine (nothing is fetched for gpu-check)",
                    spec.name
                ),
                (Some(Ok(_)), false) => unreachable!("handled above"),
            };
            synthetic_pair(spec, tokenizer_dir, device, note)
        }
    }
}

/// The stored dtype of a safetensors file's word embeddings (its largest tensor).
fn stored_dtype(path: &std::path::Path) -> Result<String> {
    // SAFETY: read-only map of a file we do not modify while it is mapped; only the header's
    // tensor descriptions are read.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }
        .map_err(|e| Error::Model(format!("{}: {e}", path.display())))?;
    let tensors = st.tensors();
    let largest = tensors
        .iter()
        .max_by_key(|(_, t)| t.shape().iter().product::<usize>())
        .ok_or_else(|| Error::Model(format!("{} holds no tensors", path.display())))?;
    Ok(format!("{:?}", largest.1.dtype()).to_lowercase())
}

/// all-MiniLM-L6-v2's shape: 6 layers, hidden 384, 12 heads, 1536 inner, 30522 tokens.
fn minilm_config() -> Config {
    serde_json::from_value(serde_json::json!({
        "vocab_size": 30522,
        "hidden_size": 384,
        "num_hidden_layers": 6,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "classifier_dropout": null,
        "model_type": "bert"
    }))
    .expect("a valid BERT config")
}

fn synthetic_pair(
    spec: &ModelSpec,
    tokenizer_dir: Option<PathBuf>,
    device: Device,
    note: String,
) -> Result<Pair> {
    const MAX_LENGTH: usize = 256;
    let dir_config = tokenizer_dir
        .as_ref()
        .filter(|d| d.join("config.json").is_file());
    let mut config = match dir_config {
        Some(dir) => read_config(dir)?,
        None => minilm_config(),
    };
    let max_length = match dir_config {
        Some(dir) => read_max_length(dir, &config)?,
        None => MAX_LENGTH,
    };
    let pooling = match &tokenizer_dir {
        Some(dir) => read_pooling(dir)?,
        None => Pooling::Mean,
    };
    let tokenizer = |config: &mut Config| -> Result<TextTokenizer> {
        Ok(match &tokenizer_dir {
            Some(dir) => {
                let t = TextTokenizer::from_file(&dir.join("tokenizer.json"), max_length)?;
                // Every id the tokenizer gives must have a row.
                config.vocab_size = config.vocab_size.max(t.vocab_size());
                t
            }
            None => TextTokenizer::Words(WordTokenizer {
                vocab: config.vocab_size as u32,
                max_length,
            }),
        })
    };
    let cpu_tokenizer = tokenizer(&mut config)?;
    let device_tokenizer = tokenizer(&mut config)?;
    let tokenizer_kind = if tokenizer_dir.is_some() {
        "model"
    } else {
        "words"
    };
    let info = ModelInfo {
        name: format!("synthetic MiniLM-shaped weights (seed {SYNTHETIC_SEED:#x})"),
        source: SourceKind::LocalDir,
        dir: tokenizer_dir.clone().unwrap_or_default(),
        sha256: String::new(),
        dim: config.hidden_size,
        pooling: String::new(),
        max_length,
        device: String::new(),
    };
    let build = |tokenizer: TextTokenizer, d: Device, candle_ops: bool| {
        let get = |name: &str| synthetic_weight(name, &config, &d);
        BertEmbedder::build(
            &config,
            pooling,
            tokenizer,
            d.clone(),
            info.clone(),
            candle_ops,
            &get,
        )
    };
    let cpu = build(cpu_tokenizer, Device::Cpu, false)?;
    let on_device = build(device_tokenizer, device, true)?;
    Ok(Pair {
        weights: WeightsInfo {
            kind: "synthetic",
            name: spec.name.clone(),
            dir: tokenizer_dir,
            source: None,
            sha256: None,
            stored_dtype: "f32".into(),
            tokenizer: tokenizer_kind,
            seed: Some(SYNTHETIC_SEED),
            layers: config.num_hidden_layers,
            hidden: config.hidden_size,
            max_length,
            note: Some(note),
        },
        device: on_device,
        cpu,
    })
}

/// splitmix64: a small, fast, well-mixed generator; the crate needs no RNG dependency for it.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }
}

/// One named weight of a BERT encoder with `config`'s shape, drawn from the fixed seed and
/// the name (so both devices get the same numbers): matrices uniform with variance 1/fan_in,
/// so every layer changes its input as much as a trained one; layer norms near 1 and 0.
fn synthetic_weight(name: &str, config: &Config, device: &Device) -> Result<Tensor> {
    let (h, inner) = (config.hidden_size, config.intermediate_size);
    let shape: Vec<usize> = if name.ends_with("word_embeddings.weight") {
        vec![config.vocab_size, h]
    } else if name.ends_with("position_embeddings.weight") {
        vec![config.max_position_embeddings, h]
    } else if name.ends_with("token_type_embeddings.weight") {
        vec![config.type_vocab_size, h]
    } else if name.contains("LayerNorm.") || name.ends_with(".bias") {
        let out = if name.ends_with("intermediate.dense.bias") {
            inner
        } else {
            h
        };
        vec![out]
    } else if name.ends_with("intermediate.dense.weight") {
        vec![inner, h]
    } else if name.ends_with("output.dense.weight") && !name.contains("attention") {
        vec![h, inner]
    } else if name.ends_with(".weight") && name.contains("attention") {
        vec![h, h]
    } else {
        return Err(Error::Model(format!("no synthetic weight for `{name}`")));
    };
    let seed = name.bytes().fold(SYNTHETIC_SEED, |s, b| {
        (s ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    let mut rng = SplitMix(seed);
    let n: usize = shape.iter().product();
    let (base, spread) = if name.contains("LayerNorm.weight") {
        (1.0, 0.1)
    } else if name.contains("LayerNorm.") || name.ends_with(".bias") {
        (0.0, 0.02)
    } else if name.contains("embeddings.") {
        // Embedding rows are summed, then layer-normed: their scale only needs to be sane.
        (0.0, 0.05)
    } else {
        (0.0, (3.0 / shape[1] as f32).sqrt())
    };
    let data: Vec<f32> = (0..n).map(|_| base + spread * rng.unit()).collect();
    Tensor::from_vec(data, shape, device)
        .and_then(|t| t.to_dtype(DType::F32))
        .map_err(|e| Error::Model(format!("synthetic weight `{name}`: {e}")))
}

/// How one sentence fared across every batch it was in.
#[derive(Debug, Clone, Serialize)]
pub struct SentenceCheck {
    /// The sentence, cut to 60 characters for the report.
    pub text: String,
    pub tokens: usize,
    /// Cut to the model's maximum length.
    pub truncated: bool,
    pub min_cosine: f32,
}

/// One batch size's worst cosine.
#[derive(Debug, Clone, Serialize)]
pub struct BatchCheck {
    pub batch: usize,
    /// Padded tokens in the pass (batch × longest).
    pub padded_tokens: usize,
    pub min_cosine: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Correctness {
    pub threshold: f32,
    pub pass: bool,
    pub min_cosine: f32,
    pub batches: Vec<BatchCheck>,
    pub sentences: Vec<SentenceCheck>,
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let c = dot / (na * nb).max(1e-30);
    // A NaN (a broken kernel) must fail the check, not vanish in a min().
    if c.is_nan() {
        -1.0
    } else {
        c as f32
    }
}

/// The batch sizes checked: 1, then padded batches up to `max_batch`.
pub fn batch_sizes(max_batch: usize) -> Vec<usize> {
    let mut sizes: Vec<usize> = [1, 2, 8, 32, 128, 256]
        .into_iter()
        .filter(|&b| b <= max_batch)
        .collect();
    if max_batch > 1 && !sizes.contains(&max_batch) {
        sizes.push(max_batch);
    }
    sizes
}

/// Each sentence through the device at every batch size (one forward pass per batch, rows
/// cycling through the sentences so every batch mixes lengths and pads), against the CPU
/// kernels' vector of that sentence at batch 1.
pub fn check_correctness(pair: &Pair, max_batch: usize) -> Result<Correctness> {
    let sentences = check_sentences();
    let texts: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let ids = pair.cpu.tokenize(&texts)?;
    let max_length = pair.weights.max_length;
    let reference: Vec<Vec<f32>> = ids
        .iter()
        .map(|x| Ok(pair.cpu.forward(&[x])?.remove(0)))
        .collect::<Result<_>>()?;
    let mut worst = vec![f32::INFINITY; ids.len()];
    let mut batches = Vec::new();
    for b in batch_sizes(max_batch) {
        let rows: Vec<&[u32]> = if b == 1 {
            Vec::new()
        } else {
            (0..b).map(|i| ids[i % ids.len()].as_slice()).collect()
        };
        let mut batch_min = f32::INFINITY;
        let mut note = |i: usize, v: &[f32]| {
            let c = cosine(v, &reference[i]);
            worst[i] = worst[i].min(c);
            batch_min = batch_min.min(c);
        };
        let padded = if b == 1 {
            for (i, x) in ids.iter().enumerate() {
                note(i, &pair.device.forward(&[x])?[0]);
            }
            ids.iter().map(Vec::len).max().unwrap_or(0)
        } else {
            for (row, v) in pair.device.forward(&rows)?.iter().enumerate() {
                note(row % ids.len(), v);
            }
            b * rows.iter().map(|r| r.len()).max().unwrap_or(0)
        };
        batches.push(BatchCheck {
            batch: b,
            padded_tokens: padded,
            min_cosine: batch_min,
        });
    }
    let min_cosine = worst.iter().copied().fold(f32::INFINITY, f32::min);
    Ok(Correctness {
        threshold: MIN_COSINE,
        pass: min_cosine >= MIN_COSINE,
        min_cosine,
        batches,
        sentences: sentences
            .iter()
            .zip(&ids)
            .zip(&worst)
            .map(|((text, x), &c)| SentenceCheck {
                text: text.chars().take(60).collect(),
                tokens: x.len(),
                truncated: x.len() >= max_length,
                min_cosine: c,
            })
            .collect(),
    })
}

/// How long to keep timing one figure: enough runs for a median, bounded in time.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Runs timed (after one warm-up run) unless the time budget ends first.
    pub runs: usize,
    /// Stop after this long, once at least 3 runs are in.
    pub budget: std::time::Duration,
}

/// Median seconds of `f` over the timed runs. The device is synchronised after each run (the
/// forward pass also copies its result to the host, which waits for the GPU anyway).
fn median_secs(device: &Device, timing: Timing, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    synchronize(device)?;
    let started = Instant::now();
    let mut runs = Vec::new();
    while runs.len() < timing.runs.max(1) && (runs.len() < 3 || started.elapsed() < timing.budget) {
        let t = Instant::now();
        f()?;
        synchronize(device)?;
        runs.push(t.elapsed().as_secs_f64());
    }
    runs.sort_by(f64::total_cmp);
    Ok(runs[runs.len() / 2])
}

/// Batch-1 latency at one token count, on the device and on the CPU kernels.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub tokens: usize,
    pub device_ms: f64,
    pub cpu_ms: f64,
}

/// Median batch-1 latency of one forward pass of exactly `tokens` tokens.
pub fn measure_latency(pair: &Pair, tokens: usize, timing: Timing) -> Result<Latency> {
    let long = pair.cpu.tokenize(&[long_sentence().as_str()])?;
    let long = &long[0];
    let n = tokens.clamp(2, long.len());
    // [CLS] + the first n-2 tokens + [SEP]: a real text's ids, cut to length.
    let mut ids = long[..n - 1].to_vec();
    ids.push(*long.last().expect("ids"));
    let ms = |e: &BertEmbedder| -> Result<f64> {
        Ok(median_secs(e.device(), timing, &mut || e.forward(&[&ids]).map(drop))? * 1e3)
    };
    Ok(Latency {
        tokens: n,
        device_ms: ms(&pair.device)?,
        cpu_ms: ms(&pair.cpu)?,
    })
}

/// Sentences per second through `Embedder::embed` at one batch size.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub batch: usize,
    pub device_per_s: f64,
    pub cpu_per_s: f64,
    /// device ÷ CPU.
    pub speedup: f64,
}

/// Median throughput of `embed` on `batch` everyday queries (tokenising, sorting by length and
/// the forward passes included), on the device and on the CPU kernels.
pub fn measure_throughput(pair: &Pair, batch: usize, timing: Timing) -> Result<Throughput> {
    let texts = traffic(batch);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let per_s = |e: &BertEmbedder| -> Result<f64> {
        let secs = median_secs(e.device(), timing, &mut || e.embed(&refs).map(drop))?;
        Ok(batch as f64 / secs)
    };
    let device_per_s = per_s(&pair.device)?;
    let cpu_per_s = per_s(&pair.cpu)?;
    Ok(Throughput {
        batch,
        device_per_s,
        cpu_per_s,
        speedup: device_per_s / cpu_per_s,
    })
}

/// The device's short name (`cuda:0`, `metal:0`, `cpu`).
pub fn pair_device(pair: &Pair) -> String {
    device_name(pair.device.device())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> ModelSpec {
        ModelSpec {
            name: name.into(),
            revision: "main".into(),
            sha256: None,
            cache_dir: std::env::temp_dir().join("model-router-gpu-check-test"),
            offline: true,
        }
    }

    #[test]
    fn synthetic_weights_are_fixed_and_shaped() {
        let config = minilm_config();
        let a = synthetic_weight(
            "encoder.layer.0.intermediate.dense.weight",
            &config,
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(a.dims(), &[1536, 384]);
        let b = synthetic_weight(
            "encoder.layer.0.intermediate.dense.weight",
            &config,
            &Device::Cpu,
        )
        .unwrap();
        let (a, b) = (
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert_eq!(a, b, "the same name draws the same numbers");
        let limit = (3.0f32 / 384.0).sqrt();
        assert!(a.iter().all(|x| x.abs() <= limit));
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 1e-3, "centred: {mean}");
        let other = synthetic_weight(
            "encoder.layer.1.intermediate.dense.weight",
            &config,
            &Device::Cpu,
        )
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
        assert_ne!(a, other, "each layer has its own weights");
        assert!(synthetic_weight("pooler.dense.weight", &config, &Device::Cpu).is_err());
    }

    #[test]
    fn word_tokenizer_is_deterministic_and_truncates() {
        let t = WordTokenizer {
            vocab: 30522,
            max_length: 8,
        };
        let ids = t.encode("Hello, wörld!");
        assert_eq!(ids.len(), 6, "[CLS] hello , wörld ! [SEP]: {ids:?}");
        assert_eq!((ids[0], ids[5]), (101, 102));
        assert_eq!(
            ids,
            t.encode("hello ,  WÖRLD!"),
            "case and spacing do not matter"
        );
        assert_eq!(ids[2], t.encode(",")[1]);
        let long = t.encode(&"word ".repeat(100));
        assert_eq!(long.len(), 8);
        assert_eq!(*long.last().unwrap(), 102);
        assert!(long.iter().all(|&i| i < 30522));
        assert_eq!(t.encode(""), vec![101, 102]);
    }

    /// The check itself on the CPU: candle's operations against our kernels on synthetic
    /// weights, every batch size, with the word tokenizer (no model folder).
    #[test]
    fn candle_ops_on_the_cpu_pass_the_check() {
        let pair = load_pair(&spec("/nonexistent/model"), Device::Cpu, false).unwrap();
        assert_eq!(pair.weights.kind, "synthetic");
        assert_eq!(pair.weights.tokenizer, "words");
        assert!(pair
            .weights
            .note
            .as_deref()
            .unwrap()
            .contains("not on this machine"));
        let c = check_correctness(&pair, 8).unwrap();
        assert!(c.pass, "{c:#?}");
        assert_eq!(
            c.batches.iter().map(|b| b.batch).collect::<Vec<_>>(),
            [1, 2, 8]
        );
        let long = &c.sentences[0];
        assert!(long.truncated && long.tokens == 256, "{long:?}");
        // Distinct sentences give distinct vectors: the weights are not degenerate.
        let texts = check_sentences();
        let v = pair.cpu.embed(&[&texts[1], &texts[3]]).unwrap();
        assert!(cosine(&v[0], &v[1]) < 0.99);
        assert_eq!(cosine(&v[0], &[f32::NAN; 384]), -1.0, "NaN fails the check");
    }

    #[test]
    fn batch_sizes_stop_at_the_maximum() {
        assert_eq!(batch_sizes(1), [1]);
        assert_eq!(batch_sizes(40), [1, 2, 8, 32, 40]);
        assert_eq!(batch_sizes(256), [1, 2, 8, 32, 128, 256]);
    }
}
