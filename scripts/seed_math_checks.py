#!/usr/bin/env python3
"""Two seed-split checks behind the README's note on GSM8K (section "Results: held-out routing
quality"). Seed split only; the held-out split is never read.

1. GPT-4-1106's and Mixtral-8x7B's recorded accuracy on routellm's seed MMLU rows, by how many
   numerals the question holds, and on the high_school_mathematics subject. GPT-4's accuracy
   falling to Mixtral's level on numeric questions (and below the 25% of guessing on one
   subject) points at answer extraction in the source, not at the models.
2. Whether dropping high_school_mathematics from the index helps the seed's math stand-in: an
   index of every seed record except the four MMLU math subjects of scripts/seed_proxies.py,
   with and without high_school_mathematics, routes those four subjects
   (`model-router ingest --outcomes` + `eval`, data/eval.toml's vote, no smoothing).

Standard library only. Run from the repository root after `cargo build --release`:
    python3 scripts/seed_math_checks.py
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

MMLU_MATH = {"elementary_mathematics", "college_mathematics", "abstract_algebra", "high_school_statistics"}
BROKEN = "high_school_mathematics"
STRONG, WEAK = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"
NUMERAL = re.compile(r"\d+(?:\.\d+)?")
FILES = ("routellm/routellm.jsonl", "routerbench-subset/routerbench_subset.jsonl",
         "arena-bench-v1/arena_bench_v1.jsonl")


def accuracy(rows):
    n = len(rows)
    return n, sum(bool(r["outcomes"][STRONG]) for r in rows) / n, sum(bool(r["outcomes"][WEAK]) for r in rows) / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("EVAL_DATA", "../shared/eval-data"))
    ap.add_argument("--binary", default="target/release/model-router")
    args = ap.parse_args()

    seed = set(open(f"{args.data}/splits/seed_ids.txt").read().split())
    records = []
    for path in FILES:
        for line in open(f"{args.data}/{path}", encoding="utf-8"):
            r = json.loads(line)
            if r["id"] in seed:
                records.append(r)
    mmlu = [r for r in records if r.get("source_benchmark") == "mmlu"]

    print("seed MMLU accuracy by numerals in the question (GPT-4-1106 / Mixtral-8x7B):")
    for lo, hi in ((0, 1), (1, 3), (3, 6), (6, None)):
        rows = [r for r in mmlu if len(NUMERAL.findall(r["prompt"])) >= lo
                and (hi is None or len(NUMERAL.findall(r["prompt"])) < hi)]
        n, s, w = accuracy(rows)
        label = f"{lo}+" if hi is None else f"{lo}-{hi - 1}"
        print(f"  {label:<4} n={n:<5} {s:.3f} / {w:.3f}")
    n, s, w = accuracy([r for r in mmlu if r.get("subject") == BROKEN])
    print(f"  {BROKEN} n={n} {s:.3f} / {w:.3f}")

    print("math stand-in routed by an index without the four math subjects:")
    with tempfile.TemporaryDirectory() as tmp:
        held = [r["id"] for r in records if r.get("subject") in MMLU_MATH]
        with open(f"{tmp}/held.txt", "w", encoding="utf-8") as f:
            f.write("\n".join(held) + "\n")
        for name, drop in (("with high_school_mathematics", MMLU_MATH),
                           ("without it", MMLU_MATH | {BROKEN})):
            ids = [r["id"] for r in records if r.get("subject") not in drop]
            with open(f"{tmp}/index.txt", "w", encoding="utf-8") as f:
                f.write("\n".join(ids) + "\n")
            examples = f"{tmp}/{len(ids)}.jsonl"
            base = [args.binary, "--config", "data/eval.toml", "--examples", examples]
            for path in FILES:
                subprocess.run(base + ["ingest", "--outcomes", f"{args.data}/{path}", "--ids", f"{tmp}/index.txt"],
                               check=True, stderr=subprocess.DEVNULL)
            out = subprocess.run(base + ["eval", f"{args.data}/{FILES[0]}", "--ids", f"{tmp}/held.txt",
                                         "--plot", f"{tmp}/plot.svg"],
                                 check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            report = json.loads(out.stdout)["settings"][0]["reports"][-1]
            print(f"  {name:<29} index {len(ids):<6} n={report['n']:<4} APGR {report['router']['apgr']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
