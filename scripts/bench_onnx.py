#!/usr/bin/env python3
"""onnxruntime (CPU) benchmark of all-MiniLM-L6-v2 sentence embeddings on benches/texts.json.

The ONNX model is built here with onnx.helper from model.safetensors (opset 17: BERT encoder with
LayerNormalization and erf GELU, then mean pooling and L2 normalisation inside the graph), passed
through onnxruntime's BERT fusions (Attention, SkipLayerNormalization, BiasGelu), cached at
.cache/onnx/all-MiniLM-L6-v2.onnx, and checked on every run against tests/fixtures/reference_embeddings.json
(the numpy reference from make_reference.py): cosine >= 0.9999, one by one and as one padded batch.

Timed per call: tokenisation with the `tokenizers` package (tokenizer.json, truncation 256; no padding
for batch 1, padding to the longest for batch 32) + session.run. Session: intra_op_num_threads=2,
ORT_ENABLE_ALL. Reports the median over many calls after warm-up as JSON on stdout:
{"onnx_short_ms", "onnx_medium_ms", "onnx_batch32_ms", "onnx_batch32_sentences_per_s"}.

Run:  python3 -m pip install -r scripts/requirements.txt
      python3 scripts/bench_onnx.py [--model-dir DIR] [--seconds 3]
"""
import argparse
import json
import logging
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from minilm import MAX_SEQ_LEN, model_dir

ROOT = Path(__file__).resolve().parent.parent
ONNX_PATH = ROOT / ".cache" / "onnx" / "all-MiniLM-L6-v2.onnx"


def build_onnx(mdir, path):
    """Write an opset-17 ONNX graph: (input_ids, attention_mask) int64 [B, S] -> sentence_embedding [B, 384]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.transformers.optimizer import optimize_model
    from safetensors.numpy import load_file

    cfg = json.loads((mdir / "config.json").read_text())
    w = load_file(str(mdir / "model.safetensors"))
    nh, hidden = cfg["num_attention_heads"], cfg["hidden_size"]
    hd = hidden // nh
    nodes, inits = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(kind, inputs, **attrs):
        out = f"{kind.lower()}_{len(nodes)}"
        nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def dense(x, prefix):  # x @ W^T + b
        return op("Add", [op("MatMul", [x, const(prefix + ".weight_t", w[prefix + ".weight"].T.copy())]),
                          const(prefix + ".bias", w[prefix + ".bias"])])

    def layer_norm(x, prefix):
        return op("LayerNormalization", [x, const(prefix + ".weight", w[prefix + ".weight"]),
                                         const(prefix + ".bias", w[prefix + ".bias"])],
                  axis=-1, epsilon=cfg["layer_norm_eps"])

    f32 = lambda v: np.array(v, dtype=np.float32)  # noqa: E731
    i64 = lambda v: np.array(v, dtype=np.int64)  # noqa: E731

    # Embeddings: word[ids] + position[0..S) + token_type[0], then LayerNorm.
    seq_len = op("Gather", [op("Shape", ["input_ids"]), const("one_scalar", i64(1))], axis=0)
    positions = op("Range", [const("zero_scalar", i64(0)), seq_len, "one_scalar"])
    x = op("Add", [op("Gather", [const("word_emb", w["embeddings.word_embeddings.weight"]), "input_ids"]),
                   op("Gather", [const("pos_emb", w["embeddings.position_embeddings.weight"]), positions])])
    x = op("Add", [x, const("type_emb0", w["embeddings.token_type_embeddings.weight"][0].copy())])
    x = layer_norm(x, "embeddings.LayerNorm")

    # Additive key mask, (1 - mask) * -10000 as [B, 1, 1, S], in the op order onnxruntime's attention fusion expects.
    mask4 = op("Unsqueeze", [op("Unsqueeze", ["attention_mask", const("axis_1", i64([1]))]), const("axis_2", i64([2]))])
    key_bias = op("Sub", [const("one_f", f32(1.0)), op("Cast", [mask4], to=TensorProto.FLOAT)])
    key_bias = op("Mul", [key_bias, const("neg_10k", f32(-10000.0))])
    split_heads = const("split_heads", i64([0, 0, nh, hd]))
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q, k, v = (op("Reshape", [dense(x, p + f"attention.self.{n}"), split_heads]) for n in ("query", "key", "value"))
        q = op("Transpose", [q], perm=[0, 2, 1, 3])  # [B, nh, S, hd]
        k = op("Transpose", [k], perm=[0, 2, 3, 1])  # [B, nh, hd, S]
        v = op("Transpose", [v], perm=[0, 2, 1, 3])
        scores = op("Add", [op("Div", [op("MatMul", [q, k]), const(f"sqrt_hd{i}", f32(math.sqrt(hd)))]), key_bias])
        ctx = op("MatMul", [op("Softmax", [scores], axis=-1), v])
        ctx = op("Reshape", [op("Transpose", [ctx], perm=[0, 2, 1, 3]), const(f"merge{i}", i64([0, 0, hidden]))])
        x = layer_norm(op("Add", [x, dense(ctx, p + "attention.output.dense")]), p + "attention.output.LayerNorm")
        h = dense(x, p + "intermediate.dense")  # exact GELU: 0.5 * h * (1 + erf(h / sqrt 2))
        erf = op("Erf", [op("Div", [h, const(f"sqrt2_{i}", f32(math.sqrt(2)))])])
        h = op("Mul", [op("Mul", [h, op("Add", [erf, const(f"one_{i}", f32(1.0))])]), const(f"half_{i}", f32(0.5))])
        x = layer_norm(op("Add", [x, dense(h, p + "output.dense")]), p + "output.LayerNorm")

    # Mean pooling over unmasked tokens, then L2 normalisation.
    m3 = op("Unsqueeze", [op("Cast", ["attention_mask"], to=TensorProto.FLOAT), "axis_2"])  # [B, S, 1]
    pooled = op("Div", [op("ReduceSum", [op("Mul", [x, m3]), "axis_1"], keepdims=0),
                        op("ReduceSum", [m3, "axis_1"], keepdims=0)])
    nodes.append(helper.make_node("LpNormalization", [pooled], ["sentence_embedding"], axis=-1, p=2))

    graph = helper.make_graph(
        nodes, "all-MiniLM-L6-v2",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in ("input_ids", "attention_mask")],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", hidden])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bench_onnx.py")
    onnx.checker.check_model(model)
    # onnxruntime's BERT fusions (Attention, SkipLayerNormalization, BiasGelu), as an optimised deployment would use.
    logging.getLogger("onnxruntime.transformers.optimizer").setLevel(logging.ERROR)  # "producer not matched"
    fused = optimize_model(model, model_type="bert", num_heads=nh, hidden_size=hidden, opt_level=0)
    stats = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
    assert stats.get("Attention") == cfg["num_hidden_layers"], stats
    print(f"built {path} with fused ops {stats}", file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    fused.save_model_to_file(str(path))


class OnnxEmbedder:
    def __init__(self, mdir, onnx_path):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        # tokenizer.json ships with truncation 128 and fixed padding 128: override both.
        self.tok1 = Tokenizer.from_file(str(mdir / "tokenizer.json"))
        self.tok1.enable_truncation(MAX_SEQ_LEN)
        self.tok1.no_padding()
        self.tokn = Tokenizer.from_file(str(mdir / "tokenizer.json"))
        self.tokn.enable_truncation(MAX_SEQ_LEN)
        self.tokn.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the longest in the batch

    def embed(self, texts):
        encs = [self.tok1.encode(texts[0])] if len(texts) == 1 else self.tokn.encode_batch(texts)
        ids = np.array([e.ids for e in encs], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
        return self.sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]


def verify(emb):
    """Compare with the numpy reference fixture; exit if any cosine < 0.9999."""
    ref = json.loads((ROOT / "tests" / "fixtures" / "reference_embeddings.json").read_text())["texts"]
    want = np.array([t["vector"] for t in ref])
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    one_by_one = np.concatenate([emb.embed([t["text"]]) for t in ref])
    batched = emb.embed([t["text"] for t in ref])
    cos = min(float((one_by_one * want).sum(1).min()), float((batched * want).sum(1).min()))
    print(f"onnx vs numpy reference ({len(ref)} texts, batch 1 and padded batch): min cos {cos:.7f}", file=sys.stderr)
    if cos < 0.9999:
        raise SystemExit("ONNX model disagrees with the reference embeddings")


def median_seconds(fn, seconds, warmup=10, min_iters=20):
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", help="folder with model.safetensors and tokenizer.json (default: download)")
    ap.add_argument("--seconds", type=float, default=3.0, help="minimum measuring time per case")
    ap.add_argument("--rebuild", action="store_true", help=f"rebuild {ONNX_PATH.relative_to(ROOT)}")
    args = ap.parse_args()
    mdir = model_dir(args.model_dir)
    if args.rebuild or not ONNX_PATH.exists():
        build_onnx(mdir, ONNX_PATH)
    emb = OnnxEmbedder(mdir, ONNX_PATH)
    verify(emb)

    texts = json.loads((ROOT / "benches" / "texts.json").read_text())
    for case in ("short", "medium"):  # keep the counts stored in texts.json honest
        n = len(emb.tok1.encode(texts[case]).ids)
        assert n == texts[f"{case}_tokens"], f"benches/texts.json: {case} has {n} tokens, file says {texts[case + '_tokens']}"
    short = median_seconds(lambda: emb.embed([texts["short"]]), args.seconds)
    medium = median_seconds(lambda: emb.embed([texts["medium"]]), args.seconds)
    batch = median_seconds(lambda: emb.embed(texts["batch"]), args.seconds)
    print(json.dumps({
        "onnx_short_ms": round(short * 1e3, 4),
        "onnx_medium_ms": round(medium * 1e3, 4),
        "onnx_batch32_ms": round(batch * 1e3, 4),
        "onnx_batch32_sentences_per_s": round(len(texts["batch"]) / batch, 1),
    }))


if __name__ == "__main__":
    main()
