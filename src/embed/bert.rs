//! A lean BERT encoder on candle ops, plus sentence-transformers pooling.
//!
//! candle-transformers' `BertModel` is correct but re-transposes every weight on every matmul;
//! this forward transposes once at load, fuses Q, K and V into one matmul, folds the attention
//! scale into the query weights, uses candle's fused softmax and layer norm, and skips the
//! attention mask when a batch has no padding. The model config is candle-transformers' own.
//!
//! On the CPU each encoder layer instead runs our kernels (`kernels.rs`, through the custom ops
//! of `ops.rs`): weights packed once at load for a linear kernel with bias and GELU fused,
//! fused attention that skips padded keys, and a fused residual add + layer norm. GPUs keep
//! candle's operations, which also serve as the reference the CPU path is tested against.

use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::ops::{layer_norm, softmax_last_dim};
use candle_transformers::models::bert::{Config, HiddenAct};
use tokenizers::{Tokenizer, TruncationParams};

use super::device::device_name;
use super::kernels::{Act, Isa, PackedLinear};
use super::ops::{gelu_erf, AddLayerNorm, Attention, Linear};
use super::source::ResolvedModel;
use super::{Embedder, ModelInfo};
use crate::error::{Error, Result};

/// How `embed` cuts a batch into forward passes: texts are sorted by length, then cut where a
/// pass would hold more than `max_batch` texts or `token_budget` padded tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PassLimits {
    max_batch: usize,
    token_budget: usize,
}

/// On the CPU, padding to the longest text makes large batches slower per sentence, and
/// beyond ~256 padded tokens bigger passes stop paying off and only cost memory.
const CPU_PASS: PassLimits = PassLimits {
    max_batch: 32,
    token_budget: 256,
};
/// A GPU needs many rows per pass to be busy: up to 256 texts (a full batch of the batcher and
/// then some) and 32k padded tokens (256 texts of 128 tokens; about 0.4 GB of activations).
const GPU_PASS: PassLimits = PassLimits {
    max_batch: 256,
    token_budget: 32 * 1024,
};

fn model_err(e: impl std::fmt::Display) -> Error {
    Error::Embed(e.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pooling {
    Mean,
    Cls,
}

/// Which operations run the encoder layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernels {
    /// candle's tensor operations: any device.
    Candle,
    /// Our CPU kernels at this instruction set.
    Cpu(Isa),
}

impl Kernels {
    fn for_device(device: &Device) -> Self {
        if device.is_cpu() {
            Kernels::Cpu(Isa::detect())
        } else {
            Kernels::Candle
        }
    }

    fn pass_limits(self) -> PassLimits {
        match self {
            Kernels::Cpu(_) => CPU_PASS,
            Kernels::Candle => GPU_PASS,
        }
    }
}

/// Text to token ids, special tokens included, truncated to the model's maximum length.
pub(super) enum TextTokenizer {
    /// The model's own `tokenizer.json`.
    Hf(Box<Tokenizer>),
    /// A deterministic stand-in for a model that comes without a tokenizer (the synthetic
    /// weights of `gpu_check`): words and single symbols hashed into the vocabulary.
    Words(WordTokenizer),
}

/// `[CLS]`, then each run of alphanumeric characters and each other non-space character as
/// one token id (an FNV-1a hash into the vocabulary, past its special ids), then `[SEP]`.
pub(super) struct WordTokenizer {
    pub(super) vocab: u32,
    pub(super) max_length: usize,
}

/// BERT's `[PAD]`, `[CLS]`, `[SEP]` ids, and the first id a word hashes to.
const PAD_ID: u32 = 0;
const CLS_ID: u32 = 101;
const SEP_ID: u32 = 102;
const FIRST_WORD_ID: u32 = 1000;

impl WordTokenizer {
    pub(super) fn encode(&self, text: &str) -> Vec<u32> {
        let word_id = |w: &str| {
            let h = w.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
            });
            FIRST_WORD_ID + (h % (self.vocab - FIRST_WORD_ID) as u64) as u32
        };
        let keep = self.max_length.saturating_sub(2);
        let mut ids = vec![CLS_ID];
        let mut word = String::new();
        for c in text.chars().chain(std::iter::once(' ')) {
            if ids.len() > keep {
                break;
            }
            if c.is_alphanumeric() {
                word.extend(c.to_lowercase());
                continue;
            }
            if !word.is_empty() {
                ids.push(word_id(&word));
                word.clear();
            }
            if !c.is_whitespace() && ids.len() <= keep {
                ids.push(word_id(c.encode_utf8(&mut [0; 4])));
            }
        }
        ids.truncate(keep + 1);
        ids.push(SEP_ID);
        ids
    }
}

impl TextTokenizer {
    /// The model's `tokenizer.json`, set to pad nothing and truncate at `max_length`.
    pub(super) fn from_file(path: &Path, max_length: usize) -> Result<Self> {
        let mut tokenizer = Tokenizer::from_file(path)
            .map_err(|e| Error::Model(format!("{}: {e}", path.display())))?;
        // The shipped tokenizer pads every input to 128 tokens; we pad per batch ourselves.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                ..Default::default()
            }))
            .map_err(|e| Error::Model(format!("tokenizer truncation: {e}")))?;
        Ok(TextTokenizer::Hf(Box::new(tokenizer)))
    }

    /// Ids it can give: every one must have a row in the embedding table.
    pub(super) fn vocab_size(&self) -> usize {
        match self {
            TextTokenizer::Hf(t) => t.get_vocab_size(true),
            TextTokenizer::Words(w) => w.vocab as usize,
        }
    }

    fn pad_id(&self) -> Option<u32> {
        match self {
            TextTokenizer::Hf(t) => t.token_to_id("[PAD]"),
            TextTokenizer::Words(_) => Some(PAD_ID),
        }
    }

    fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let tokenizer = match self {
            TextTokenizer::Hf(t) => t,
            TextTokenizer::Words(w) => return Ok(texts.iter().map(|t| w.encode(t)).collect()),
        };
        let encodings = if texts.len() == 1 {
            vec![tokenizer.encode(texts[0], true).map_err(model_err)?]
        } else {
            tokenizer
                .encode_batch(texts.to_vec(), true)
                .map_err(model_err)?
        };
        Ok(encodings
            .into_iter()
            .map(|e| e.get_ids().to_vec())
            .collect())
    }
}

/// One encoder layer, its weights laid out for the kernels that run it.
enum Layer {
    Candle(CandleLayer),
    Cpu(Box<CpuLayer>),
}

struct CandleLayer {
    /// [hidden, 3·hidden]: query (pre-scaled by 1/√head_dim), key and value, transposed.
    wqkv: Tensor,
    bqkv: Tensor,
    wo: Tensor,
    bo: Tensor,
    ln1: (Tensor, Tensor),
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
    ln2: (Tensor, Tensor),
}

struct CpuLayer {
    /// Query (pre-scaled by 1/√head_dim), key and value in one projection.
    qkv: PackedLinear,
    out: PackedLinear,
    ln1: (Vec<f32>, Vec<f32>),
    up: PackedLinear,
    down: PackedLinear,
    ln2: (Vec<f32>, Vec<f32>),
}

/// The encoder and pooling: token ids in, unit vectors out.
struct Encoder {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    ln: (Tensor, Tensor),
    layers: Vec<Layer>,
    heads: usize,
    hidden: usize,
    eps: f32,
    act: HiddenAct,
    pooling: Pooling,
    pad_id: u32,
    kernels: Kernels,
    device: Device,
}

/// A sentence-embedding BERT model with its tokenizer.
pub struct BertEmbedder {
    tokenizer: TextTokenizer,
    encoder: Encoder,
    info: ModelInfo,
}

/// Reads a small JSON file of the model folder.
fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    serde_json::from_str(&text).map_err(|e| Error::Model(format!("{}: {e}", path.display())))
}

impl BertEmbedder {
    /// Loads a resolved model onto a device.
    pub fn load(name: &str, model: &ResolvedModel, device: Device) -> Result<Self> {
        Self::load_with(name, model, device, false)
    }

    /// Like `load`; with `candle_ops`, the encoder runs candle's operations even on the CPU
    /// (GPUs always do), the reference `gpu_check` compares GPUs' results against.
    pub(super) fn load_with(
        name: &str,
        model: &ResolvedModel,
        device: Device,
        candle_ops: bool,
    ) -> Result<Self> {
        let dir = &model.dir;
        let config = read_config(dir)?;
        let pooling = read_pooling(dir)?;
        let max_length = read_max_length(dir, &config)?;
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"), max_length)?;

        // SAFETY: the file is memory-mapped read-only; we do not modify it while mapped, and
        // every tensor is copied out of the map (to_dtype/contiguous) before it is dropped.
        let st = unsafe {
            candle_core::safetensors::MmapedSafetensors::new(dir.join("model.safetensors"))
        }
        .map_err(|e| Error::Model(format!("model.safetensors: {e}")))?;
        let prefix = if st.get("bert.embeddings.word_embeddings.weight").is_ok() {
            "bert."
        } else {
            ""
        };
        let get = |name: &str| -> Result<Tensor> {
            let full = format!("{prefix}{name}");
            st.load(&full, &device)
                .and_then(|t| t.to_dtype(DType::F32))
                .map_err(|e| Error::Model(format!("weight `{full}`: {e}")))
        };
        let info = ModelInfo {
            name: name.to_string(),
            source: model.source,
            dir: dir.clone(),
            sha256: model.sha256.clone(),
            dim: config.hidden_size,
            pooling: String::new(),
            max_length,
            device: String::new(),
        };
        Self::build(
            &config,
            pooling,
            tokenizer,
            device.clone(),
            info,
            candle_ops,
            &get,
        )
    }

    /// An embedder from its parts: `get` gives each named weight as an f32 tensor on `device`;
    /// `info`'s dimension, pooling and device are filled in here.
    pub(super) fn build(
        config: &Config,
        pooling: Pooling,
        tokenizer: TextTokenizer,
        device: Device,
        mut info: ModelInfo,
        candle_ops: bool,
        get: &dyn Fn(&str) -> Result<Tensor>,
    ) -> Result<Self> {
        let pad_id = tokenizer.pad_id().unwrap_or(config.pad_token_id as u32);
        let kernels = if candle_ops {
            Kernels::Candle
        } else {
            Kernels::for_device(&device)
        };
        info.dim = config.hidden_size;
        info.pooling = match pooling {
            Pooling::Mean => "mean".into(),
            Pooling::Cls => "cls".into(),
        };
        info.device = device_name(&device);
        let encoder = Encoder::new(config, pooling, pad_id, device, kernels, get)?;
        Ok(BertEmbedder {
            tokenizer,
            encoder,
            info,
        })
    }

    /// Token ids of each text, special tokens included, after truncation.
    pub(super) fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let max = self.info.max_length;
        let texts: Vec<&str> = texts
            .iter()
            .map(|t| super::cut_for_embedding(t, max))
            .collect();
        self.tokenizer.encode(&texts)
    }

    /// One forward pass over exactly these sequences, padded to the longest: no sorting or
    /// cutting into smaller passes, unlike `embed`.
    pub(super) fn forward(&self, ids: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        self.encoder.forward(ids).map_err(model_err)
    }

    /// The device the encoder runs on.
    pub(super) fn device(&self) -> &Device {
        &self.encoder.device
    }
}

impl Encoder {
    /// Builds the encoder from named weights (`get` returns f32 tensors on `device`).
    fn new(
        config: &Config,
        pooling: Pooling,
        pad_id: u32,
        device: Device,
        kernels: Kernels,
        get: &dyn Fn(&str) -> Result<Tensor>,
    ) -> Result<Self> {
        if !config
            .hidden_size
            .is_multiple_of(config.num_attention_heads)
        {
            return Err(Error::Model(
                "hidden_size is not a multiple of the head count".into(),
            ));
        }
        // Older checkpoints name layer-norm parameters gamma/beta.
        let norm = |name: &str| -> Result<(Tensor, Tensor)> {
            let w = get(&format!("{name}.weight")).or_else(|_| get(&format!("{name}.gamma")))?;
            let b = get(&format!("{name}.bias")).or_else(|_| get(&format!("{name}.beta")))?;
            Ok((w, b))
        };
        // [out, in] -> [in, out], contiguous, once.
        let t =
            |w: Tensor| -> Result<Tensor> { w.t().and_then(|w| w.contiguous()).map_err(model_err) };
        let vec1 = |t: &Tensor| -> Result<Vec<f32>> {
            t.flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(model_err)
        };
        let pack = |w: &Tensor, b: &Tensor| -> Result<PackedLinear> {
            let (n, k) = w.dims2().map_err(model_err)?;
            Ok(PackedLinear::new(&vec1(w)?, &vec1(b)?, n, k))
        };
        let norm_vecs = |(w, b): (Tensor, Tensor)| -> Result<(Vec<f32>, Vec<f32>)> {
            Ok((vec1(&w)?, vec1(&b)?))
        };

        let hidden = config.hidden_size;
        let heads = config.num_attention_heads;
        let scale = 1.0 / ((hidden / heads) as f64).sqrt();
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let (wq, bq) = (
                get(&format!("{p}.attention.self.query.weight"))?,
                get(&format!("{p}.attention.self.query.bias"))?,
            );
            let (wq, bq) = (
                (wq * scale).map_err(model_err)?,
                (bq * scale).map_err(model_err)?,
            );
            let wk = get(&format!("{p}.attention.self.key.weight"))?;
            let bk = get(&format!("{p}.attention.self.key.bias"))?;
            let wv = get(&format!("{p}.attention.self.value.weight"))?;
            let bv = get(&format!("{p}.attention.self.value.bias"))?;
            let wqkv = Tensor::cat(&[wq, wk, wv], 0).map_err(model_err)?;
            let bqkv = Tensor::cat(&[bq, bk, bv], 0).map_err(model_err)?;
            let wo = get(&format!("{p}.attention.output.dense.weight"))?;
            let bo = get(&format!("{p}.attention.output.dense.bias"))?;
            let ln1 = norm(&format!("{p}.attention.output.LayerNorm"))?;
            let w1 = get(&format!("{p}.intermediate.dense.weight"))?;
            let b1 = get(&format!("{p}.intermediate.dense.bias"))?;
            let w2 = get(&format!("{p}.output.dense.weight"))?;
            let b2 = get(&format!("{p}.output.dense.bias"))?;
            let ln2 = norm(&format!("{p}.output.LayerNorm"))?;
            layers.push(match kernels {
                Kernels::Candle => Layer::Candle(CandleLayer {
                    wqkv: t(wqkv)?,
                    bqkv,
                    wo: t(wo)?,
                    bo,
                    ln1,
                    w1: t(w1)?,
                    b1,
                    w2: t(w2)?,
                    b2,
                    ln2,
                }),
                Kernels::Cpu(_) => Layer::Cpu(Box::new(CpuLayer {
                    qkv: pack(&wqkv, &bqkv)?,
                    out: pack(&wo, &bo)?,
                    ln1: norm_vecs(ln1)?,
                    up: pack(&w1, &b1)?,
                    down: pack(&w2, &b2)?,
                    ln2: norm_vecs(ln2)?,
                })),
            });
        }
        let token_type = get("embeddings.token_type_embeddings.weight")?
            .get(0)
            .map_err(model_err)?;
        Ok(Encoder {
            word: get("embeddings.word_embeddings.weight")?,
            position: get("embeddings.position_embeddings.weight")?,
            token_type,
            ln: norm("embeddings.LayerNorm")?,
            layers,
            heads,
            hidden,
            eps: config.layer_norm_eps as f32,
            act: config.hidden_act,
            pooling,
            pad_id,
            kernels,
            device,
        })
    }

    /// One forward pass over token ids (any lengths; padded here), returning unit vectors.
    fn forward(&self, ids: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        // On the CPU, run inside candle's thread pool: our kernels' parallel sections then
        // start from one of its threads rather than handing off from the caller's each time.
        self.device.with_context(|| self.forward_inner(ids))
    }

    fn forward_inner(&self, ids: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let b = ids.len();
        let l = ids.iter().map(|x| x.len()).max().unwrap_or(0).max(1);
        let padded = ids.iter().any(|x| x.len() != l);
        let mut flat = Vec::with_capacity(b * l);
        let mut mask = Vec::with_capacity(b * l);
        for x in ids {
            flat.extend_from_slice(x);
            flat.extend(std::iter::repeat_n(self.pad_id, l - x.len()));
            mask.extend(std::iter::repeat_n(1f32, x.len()));
            mask.extend(std::iter::repeat_n(0f32, l - x.len()));
        }
        let lens: Vec<usize> = ids.iter().map(|x| x.len().max(1)).collect();
        let ids_t = Tensor::from_vec(flat, b * l, &self.device)?;
        let mask_t = Tensor::from_vec(mask, (b, l), &self.device)?;

        let h = self.hidden;
        let x = self.word.index_select(&ids_t, 0)?.reshape((b, l, h))?;
        let x = x
            .broadcast_add(&self.position.narrow(0, 0, l)?)?
            .broadcast_add(&self.token_type)?
            .reshape((b * l, h))?;
        let mut x = layer_norm(&x, &self.ln.0, &self.ln.1, self.eps)?;

        // Additive attention bias: 0 for tokens, a large negative for padding.
        let bias = if padded && self.kernels == Kernels::Candle {
            Some(((mask_t.ones_like()? - &mask_t)? * -1e4)?.reshape((b, 1, 1, l))?)
        } else {
            None
        };
        for layer in &self.layers {
            x = match (layer, self.kernels) {
                (Layer::Candle(layer), _) => self.candle_layer(layer, &x, b, l, bias.as_ref())?,
                (Layer::Cpu(layer), Kernels::Cpu(isa)) => {
                    self.cpu_layer(layer, &x, b, l, &lens, isa)?
                }
                (Layer::Cpu(_), Kernels::Candle) => unreachable!("CPU layers need CPU kernels"),
            };
        }

        let x = x.reshape((b, l, h))?;
        let pooled = match self.pooling {
            Pooling::Cls => x.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean if !padded => x.mean(1)?,
            Pooling::Mean => {
                let m = mask_t.unsqueeze(2)?;
                x.broadcast_mul(&m)?.sum(1)?.broadcast_div(&m.sum(1)?)?
            }
        };
        let norm = pooled
            .sqr()?
            .sum_keepdim(D::Minus1)?
            .sqrt()?
            .clamp(1e-12, f64::MAX)?;
        pooled
            .broadcast_div(&norm)?
            .to_device(&Device::Cpu)?
            .to_vec2()
    }

    /// One encoder layer on candle operations; `x` is `[b·l, hidden]`.
    fn candle_layer(
        &self,
        layer: &CandleLayer,
        x: &Tensor,
        b: usize,
        l: usize,
        bias: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (h, hd) = (self.hidden, self.hidden / self.heads);
        let qkv = x.matmul(&layer.wqkv)?.broadcast_add(&layer.bqkv)?;
        let qkv = qkv
            .reshape((b, l, 3 * self.heads, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let q = qkv.narrow(1, 0, self.heads)?.contiguous()?;
        let k = qkv.narrow(1, self.heads, self.heads)?.contiguous()?;
        let v = qkv.narrow(1, 2 * self.heads, self.heads)?.contiguous()?;
        let mut scores = q.matmul(&k.t()?)?;
        if let Some(bias) = bias {
            scores = scores.broadcast_add(bias)?;
        }
        let probs = softmax_last_dim(&scores)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b * l, h))?;
        let attn = ctx.matmul(&layer.wo)?.broadcast_add(&layer.bo)?;
        let x = layer_norm(&(attn + x)?, &layer.ln1.0, &layer.ln1.1, self.eps)?;
        let inner = x.matmul(&layer.w1)?.broadcast_add(&layer.b1)?;
        let inner = match self.act {
            HiddenAct::Gelu => gelu_erf(&inner)?,
            HiddenAct::GeluApproximate => inner.gelu()?,
            HiddenAct::Relu => inner.relu()?,
        };
        let out = inner.matmul(&layer.w2)?.broadcast_add(&layer.b2)?;
        layer_norm(&(out + &x)?, &layer.ln2.0, &layer.ln2.1, self.eps)
    }

    /// One encoder layer on our CPU kernels; `x` is `[b·l, hidden]` and sequence `s` has
    /// `lens[s]` real tokens.
    fn cpu_layer(
        &self,
        layer: &CpuLayer,
        x: &Tensor,
        b: usize,
        l: usize,
        lens: &[usize],
        isa: Isa,
    ) -> candle_core::Result<Tensor> {
        let h = self.hidden;
        let linear = |x: &Tensor, weights: &PackedLinear, act: Act| {
            x.apply_op1_no_bwd(&Linear { weights, act, isa })
        };
        let add_norm = |x: &Tensor, residual: &Tensor, (gamma, beta): &(Vec<f32>, Vec<f32>)| {
            x.apply_op2_no_bwd(
                residual,
                &AddLayerNorm {
                    gamma,
                    beta,
                    eps: self.eps,
                    isa,
                },
            )
        };
        let qkv = linear(x, &layer.qkv, Act::Identity)?.reshape((b, l, 3 * h))?;
        let ctx = qkv
            .apply_op1_no_bwd(&Attention {
                heads: self.heads,
                lens,
                isa,
            })?
            .reshape((b * l, h))?;
        let x = add_norm(&linear(&ctx, &layer.out, Act::Identity)?, x, &layer.ln1)?;
        let inner = match self.act {
            HiddenAct::Gelu => linear(&x, &layer.up, Act::GeluErf)?,
            HiddenAct::GeluApproximate => linear(&x, &layer.up, Act::Identity)?.gelu()?,
            HiddenAct::Relu => linear(&x, &layer.up, Act::Relu)?,
        };
        add_norm(&linear(&inner, &layer.down, Act::Identity)?, &x, &layer.ln2)
    }
}

impl Embedder for BertEmbedder {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let ids = self.tokenize(texts)?;
        if ids.len() == 1 {
            return self.forward(&[&ids[0]]);
        }
        let limits = self.encoder.kernels.pass_limits();
        // Sort by length so each sub-batch pads little, cut it where the padded size would pass
        // the token budget, then restore the caller's order.
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![Vec::new(); ids.len()];
        let mut start = 0;
        while start < order.len() {
            let mut end = start + 1;
            while end < order.len()
                && end - start < limits.max_batch
                && (end - start + 1) * ids[order[end]].len() <= limits.token_budget
            {
                end += 1;
            }
            let chunk = &order[start..end];
            let refs: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            for (&i, v) in chunk.iter().zip(self.forward(&refs)?) {
                out[i] = v;
            }
            start = end;
        }
        Ok(out)
    }

    fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(self.tokenize(&[text])?[0].len())
    }
}

/// The model's `config.json`.
pub(super) fn read_config(dir: &Path) -> Result<Config> {
    serde_json::from_value(read_json(&dir.join("config.json"))?)
        .map_err(|e| Error::Model(format!("config.json is not a BERT config: {e}")))
}

/// Pooling from `1_Pooling/config.json`; mean when the file is absent (plain BERT folders).
pub(super) fn read_pooling(dir: &Path) -> Result<Pooling> {
    let path = dir.join("1_Pooling/config.json");
    if !path.is_file() {
        return Ok(Pooling::Mean);
    }
    let cfg = read_json(&path)?;
    let on = |key: &str| cfg.get(key).and_then(|v| v.as_bool()).unwrap_or(false);
    match (on("pooling_mode_mean_tokens"), on("pooling_mode_cls_token")) {
        (true, false) => Ok(Pooling::Mean),
        (false, true) => Ok(Pooling::Cls),
        _ => Err(Error::Model(format!(
            "{}: only mean or CLS pooling (exactly one) is supported",
            path.display()
        ))),
    }
}

/// `max_seq_length` from `sentence_bert_config.json`, else the position table's size.
pub(super) fn read_max_length(dir: &Path, config: &Config) -> Result<usize> {
    let path = dir.join("sentence_bert_config.json");
    let from_st = if path.is_file() {
        read_json(&path)?
            .get("max_seq_length")
            .and_then(|v| v.as_u64())
    } else {
        None
    };
    let max = from_st
        .map(|v| v as usize)
        .unwrap_or(config.max_position_embeddings);
    Ok(max.min(config.max_position_embeddings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const HIDDEN: usize = 48;
    const INTERMEDIATE: usize = 100;

    fn tiny_config(act: &str) -> Config {
        serde_json::from_value(serde_json::json!({
            "vocab_size": 50,
            "hidden_size": HIDDEN,
            "num_hidden_layers": 2,
            "num_attention_heads": 3,
            "intermediate_size": INTERMEDIATE,
            "hidden_act": act,
            "hidden_dropout_prob": 0.1,
            "max_position_embeddings": 40,
            "type_vocab_size": 2,
            "initializer_range": 0.02,
            "layer_norm_eps": 1e-12,
            "pad_token_id": 0,
            "classifier_dropout": null,
            "model_type": "bert"
        }))
        .unwrap()
    }

    /// Random weights, the same for a name whatever the kernels.
    fn weight(name: &str) -> Result<Tensor> {
        let shape: Vec<usize> = if name.ends_with("word_embeddings.weight") {
            vec![50, HIDDEN]
        } else if name.ends_with("position_embeddings.weight") {
            vec![40, HIDDEN]
        } else if name.ends_with("token_type_embeddings.weight") {
            vec![2, HIDDEN]
        } else if name.ends_with("intermediate.dense.weight") {
            vec![INTERMEDIATE, HIDDEN]
        } else if name.ends_with("intermediate.dense.bias") {
            vec![INTERMEDIATE]
        } else if name.ends_with("output.dense.weight") && !name.contains("attention") {
            vec![HIDDEN, INTERMEDIATE]
        } else if name.ends_with(".weight") && !name.contains("LayerNorm") {
            vec![HIDDEN, HIDDEN]
        } else {
            vec![HIDDEN]
        };
        let seed = name
            .bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
        let mut rng = StdRng::seed_from_u64(seed);
        let base = if name.ends_with("LayerNorm.weight") {
            1.0
        } else {
            0.0
        };
        let data: Vec<f32> = (0..shape.iter().product())
            .map(|_| base + rng.gen_range(-0.3f32..0.3))
            .collect();
        Tensor::from_vec(data, shape, &Device::Cpu).map_err(model_err)
    }

    fn encoder(act: &str, pooling: Pooling, kernels: Kernels) -> Encoder {
        Encoder::new(&tiny_config(act), pooling, 0, Device::Cpu, kernels, &weight).unwrap()
    }

    /// The CPU kernels (portable, and each SIMD level this CPU has) against candle's operations,
    /// on one text and on a padded batch, for each activation and pooling.
    #[test]
    fn cpu_kernels_match_candle_ops() {
        let texts: [&[u32]; 4] = [
            &[1, 5, 9, 2],
            &[1, 7, 7, 7, 30, 41, 12, 19, 3, 44, 2],
            &[1, 2],
            &[1, 49, 48, 47, 46, 45, 44, 2],
        ];
        for act in ["gelu", "geluapproximate", "relu"] {
            for pooling in [Pooling::Mean, Pooling::Cls] {
                let reference = encoder(act, pooling, Kernels::Candle);
                for k in Isa::all_supported().into_iter().map(Kernels::Cpu) {
                    let ours = encoder(act, pooling, k);
                    for batch in [&texts[..1], &texts[1..2], &texts[..]] {
                        let want = reference.forward(batch).unwrap();
                        let got = ours.forward(batch).unwrap();
                        for (g, w) in got.iter().zip(&want) {
                            let cos: f32 = g.iter().zip(w).map(|(a, b)| a * b).sum();
                            let diff = g
                                .iter()
                                .zip(w)
                                .map(|(a, b)| (a - b).abs())
                                .fold(0.0, f32::max);
                            assert!(
                                cos > 0.99999 && diff < 1e-4,
                                "{act} {pooling:?} {k:?}, batch of {}: cos {cos}, max diff {diff}",
                                batch.len()
                            );
                        }
                    }
                }
            }
        }
    }
}
