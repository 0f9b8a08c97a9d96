#!/usr/bin/env python3
"""Seed-split stand-ins for the held-out benchmarks the seed split lacks, for judging edits to
data/examples.jsonl without looking at held-out prompts.

The seed split (../shared/eval-data/splits/seed_ids.txt) has no GSM8K, MT-Bench or AlpacaEval.
This script routes three seed subsets with the default set (or --examples FILE) through
`model-router route --input` and prints the APGR of the score Q(large) - Q(small) on each, with
GPT-4-1106 as the strong and Mixtral-8x7B as the weak model, exactly as `model-router eval` does
(ties count as random, out-of-distribution queries go first, since the fallback tier is large):

- arena:      all arena-bench-v1 rows of the seed (natural chat; stands in for MT-Bench/AlpacaEval)
- arena-math: arena rows that ask for a calculation or a word problem (no code)
- mmlu-math:  MMLU elementary_mathematics, college_mathematics, abstract_algebra and
              high_school_statistics (stands in for GSM8K; high_school_mathematics is left out
              because GPT-4's recorded accuracy there is 3%, an artefact of the source data)

Standard library only. Run from the repository root after `cargo build --release`:
    python3 scripts/seed_proxies.py [--examples FILE]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG = "gpt-4-1106-preview"
MMLU_MATH = {"elementary_mathematics", "college_mathematics", "abstract_algebra", "high_school_statistics"}
MATHY = re.compile(r"\b(solve|equation|probability|calculate|compute|how many|how much|how long|sum|average|percent|cost|price)\b")
CODE = re.compile(r"\b(python|code|script|program|function)\b")


def score(value, label_type):
    if value is None:
        return None
    if label_type == "judge_score_1_10":
        return (value - 1) / 9 if 1 <= value <= 10 else None
    return float(value)


def apgr(weak, strong, scores):
    """Area under PGR(c), ties averaged: the same definition as src/eval.rs."""
    n = len(weak)
    mw, ms = sum(weak) / n, sum(strong) / n
    if abs(ms - mw) < 1e-12:
        return None
    order = sorted(range(n), key=lambda i: -scores[i])
    q, curve, i = mw, [mw], 0
    while i < n:
        j = i + 1
        while j < n and scores[order[j]] == scores[order[i]]:
            j += 1
        gain = sum(strong[k] - weak[k] for k in order[i:j]) / (j - i)
        for _ in range(i, j):
            q += gain / n
            curve.append(q)
        i = j
    return sum((curve[k] + curve[k + 1]) / 2 - mw for k in range(n)) / n / (ms - mw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", help="labeled examples to index (default: the config's)")
    ap.add_argument("--data", default=os.environ.get("EVAL_DATA", "../shared/eval-data"))
    ap.add_argument("--binary", default="target/release/model-router")
    args = ap.parse_args()

    seed = set(open(f"{args.data}/splits/seed_ids.txt").read().split())
    groups = {"arena": [], "arena-math": [], "mmlu-math": []}
    rows = []
    for path in ("routellm/routellm.jsonl", "arena-bench-v1/arena_bench_v1.jsonl"):
        for line in open(f"{args.data}/{path}", encoding="utf-8"):
            r = json.loads(line)
            if r["id"] not in seed:
                continue
            arena = r["id"].startswith("arena-bench-v1/")
            if not arena and r.get("subject") not in MMLU_MATH:
                continue
            o = r["outcomes"]
            w, s = score(o.get(WEAK), r["label_type"]), score(o.get(STRONG), r["label_type"])
            if w is None or s is None:
                continue
            k = len(rows)
            rows.append((r["id"], r["prompt"], w, s))
            if arena:
                groups["arena"].append(k)
                p = r["prompt"].lower()
                if MATHY.search(p) and not CODE.search(p):
                    groups["arena-math"].append(k)
            else:
                groups["mmlu-math"].append(k)

    with tempfile.TemporaryDirectory() as tmp:
        src, out = f"{tmp}/in.jsonl", f"{tmp}/out.jsonl"
        with open(src, "w", encoding="utf-8") as f:
            for k, (_, prompt, _, _) in enumerate(rows):
                f.write(json.dumps({"id": str(k), "prompt": prompt}) + "\n")
        cmd = [args.binary, "--config", "data/router.toml", "route", "--input", src, "--output", out]
        if args.examples:
            cmd[3:3] = ["--examples", args.examples]
        subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
        scores = [0.0] * len(rows)
        for line in open(out, encoding="utf-8"):
            d = json.loads(line)
            q = d["quality"]
            best = max(q.values()) if q else 0.0
            if d.get("basis") == "out_of_distribution":
                scores[int(d["id"])] = float("inf")
            else:
                scores[int(d["id"])] = 1 - q.get("small", 0.0) / best if best > 0 else 0.0

    for name, ix in groups.items():
        a = apgr([rows[k][2] for k in ix], [rows[k][3] for k in ix], [scores[k] for k in ix])
        print(f"{name:<11} n={len(ix):<4} APGR {a:.3f}")


if __name__ == "__main__":
    sys.exit(main())
