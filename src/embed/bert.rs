//! A lean BERT encoder on candle ops, plus sentence-transformers pooling.
//!
//! candle-transformers' `BertModel` is correct but re-transposes every weight on every matmul;
//! this forward transposes once at load, fuses Q, K and V into one matmul, folds the attention
//! scale into the query weights, uses candle's fused softmax and layer norm, and skips the
//! attention mask when a batch has no padding. The model config is candle-transformers' own.

use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::ops::{layer_norm, softmax_last_dim};
use candle_transformers::models::bert::{Config, HiddenAct};
use tokenizers::{Tokenizer, TruncationParams};

use super::device::device_name;
use super::ops::gelu_erf;
use super::source::ResolvedModel;
use super::{Embedder, ModelInfo};
use crate::error::{Error, Result};

/// Longest sub-batch run in one forward pass: padding to the longest text makes very large
/// batches slower per sentence, so texts are sorted by length and cut into batches of this size.
const MAX_FORWARD_BATCH: usize = 32;
/// Most padded tokens in one forward pass: beyond this, bigger batches stop paying off on CPU
/// and only cost memory.
const TOKEN_BUDGET: usize = 256;

fn model_err(e: impl std::fmt::Display) -> Error {
    Error::Embed(e.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pooling {
    Mean,
    Cls,
}

struct Layer {
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

/// A sentence-embedding BERT model with its tokenizer.
pub struct BertEmbedder {
    tokenizer: Tokenizer,
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
    device: Device,
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
        let dir = &model.dir;
        let config: Config = serde_json::from_value(read_json(&dir.join("config.json"))?)
            .map_err(|e| Error::Model(format!("config.json is not a BERT config: {e}")))?;
        if config.hidden_size % config.num_attention_heads != 0 {
            return Err(Error::Model(
                "hidden_size is not a multiple of the head count".into(),
            ));
        }
        let pooling = read_pooling(dir)?;
        let max_length = read_max_length(dir, &config)?;

        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| Error::Model(format!("tokenizer.json: {e}")))?;
        // The shipped tokenizer pads every input to 128 tokens; we pad per batch ourselves.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                ..Default::default()
            }))
            .map_err(|e| Error::Model(format!("tokenizer truncation: {e}")))?;
        let pad_id = tokenizer
            .token_to_id("[PAD]")
            .unwrap_or(config.pad_token_id as u32);

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
        // Older checkpoints name layer-norm parameters gamma/beta.
        let norm = |name: &str| -> Result<(Tensor, Tensor)> {
            let w = get(&format!("{name}.weight")).or_else(|_| get(&format!("{name}.gamma")))?;
            let b = get(&format!("{name}.bias")).or_else(|_| get(&format!("{name}.beta")))?;
            Ok((w, b))
        };
        // [out, in] -> [in, out], contiguous, once.
        let t =
            |w: Tensor| -> Result<Tensor> { w.t().and_then(|w| w.contiguous()).map_err(model_err) };

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
            layers.push(Layer {
                wqkv: t(wqkv)?,
                bqkv,
                wo: t(get(&format!("{p}.attention.output.dense.weight"))?)?,
                bo: get(&format!("{p}.attention.output.dense.bias"))?,
                ln1: norm(&format!("{p}.attention.output.LayerNorm"))?,
                w1: t(get(&format!("{p}.intermediate.dense.weight"))?)?,
                b1: get(&format!("{p}.intermediate.dense.bias"))?,
                w2: t(get(&format!("{p}.output.dense.weight"))?)?,
                b2: get(&format!("{p}.output.dense.bias"))?,
                ln2: norm(&format!("{p}.output.LayerNorm"))?,
            });
        }
        let token_type = get("embeddings.token_type_embeddings.weight")?
            .get(0)
            .map_err(model_err)?;
        let info = ModelInfo {
            name: name.to_string(),
            source: model.source,
            dir: dir.clone(),
            sha256: model.sha256.clone(),
            dim: hidden,
            pooling: match pooling {
                Pooling::Mean => "mean".into(),
                Pooling::Cls => "cls".into(),
            },
            max_length,
            device: device_name(&device),
        };
        Ok(BertEmbedder {
            tokenizer,
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
            device,
            info,
        })
    }

    fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let encodings = if texts.len() == 1 {
            vec![self.tokenizer.encode(texts[0], true).map_err(model_err)?]
        } else {
            self.tokenizer
                .encode_batch(texts.to_vec(), true)
                .map_err(model_err)?
        };
        Ok(encodings
            .into_iter()
            .map(|e| e.get_ids().to_vec())
            .collect())
    }

    /// One forward pass over token ids (any lengths; padded here), returning unit vectors.
    fn forward(&self, ids: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
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
        let bias = if padded {
            Some(((mask_t.ones_like()? - &mask_t)? * -1e4)?.reshape((b, 1, 1, l))?)
        } else {
            None
        };
        let hd = h / self.heads;
        for layer in &self.layers {
            let qkv = x.matmul(&layer.wqkv)?.broadcast_add(&layer.bqkv)?;
            let qkv = qkv
                .reshape((b, l, 3 * self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()?;
            let q = qkv.narrow(1, 0, self.heads)?.contiguous()?;
            let k = qkv.narrow(1, self.heads, self.heads)?.contiguous()?;
            let v = qkv.narrow(1, 2 * self.heads, self.heads)?.contiguous()?;
            let mut scores = q.matmul(&k.t()?)?;
            if let Some(bias) = &bias {
                scores = scores.broadcast_add(bias)?;
            }
            let probs = softmax_last_dim(&scores)?;
            let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b * l, h))?;
            let attn = ctx.matmul(&layer.wo)?.broadcast_add(&layer.bo)?;
            x = layer_norm(&(attn + &x)?, &layer.ln1.0, &layer.ln1.1, self.eps)?;
            let inner = x.matmul(&layer.w1)?.broadcast_add(&layer.b1)?;
            let inner = match self.act {
                HiddenAct::Gelu => gelu_erf(&inner)?,
                HiddenAct::GeluApproximate => inner.gelu()?,
                HiddenAct::Relu => inner.relu()?,
            };
            let out = inner.matmul(&layer.w2)?.broadcast_add(&layer.b2)?;
            x = layer_norm(&(out + &x)?, &layer.ln2.0, &layer.ln2.1, self.eps)?;
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
            return self.forward(&[&ids[0]]).map_err(model_err);
        }
        // Sort by length so each sub-batch pads little, cut it where the padded size would pass
        // the token budget, then restore the caller's order.
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![Vec::new(); ids.len()];
        let mut start = 0;
        while start < order.len() {
            let mut end = start + 1;
            while end < order.len()
                && end - start < MAX_FORWARD_BATCH
                && (end - start + 1) * ids[order[end]].len() <= TOKEN_BUDGET
            {
                end += 1;
            }
            let chunk = &order[start..end];
            let refs: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            for (&i, v) in chunk.iter().zip(self.forward(&refs).map_err(model_err)?) {
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

/// Pooling from `1_Pooling/config.json`; mean when the file is absent (plain BERT folders).
fn read_pooling(dir: &Path) -> Result<Pooling> {
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
fn read_max_length(dir: &Path, config: &Config) -> Result<usize> {
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
