#!/usr/bin/env python3
"""Seed-split stand-ins for the held-out benchmarks the seed split lacks, for judging edits to
data/examples.jsonl without looking at held-out prompts.

The seed split (../shared/eval-data/splits/seed_ids.txt) has no GSM8K, MT-Bench or AlpacaEval.
This script routes three seed subsets with the default set (or --examples FILE) and prints the
APGR of the score Q(large) - Q(small) on each, with GPT-4-1106 as the strong and Mixtral-8x7B as
the weak model:

- arena:      all arena-bench-v1 rows of the seed (natural chat; stands in for MT-Bench/AlpacaEval)
- arena-math: arena rows that ask for a calculation or a word problem (no code)
- mmlu-math:  MMLU elementary_mathematics, college_mathematics, abstract_algebra and
              high_school_statistics (stands in for GSM8K; high_school_mathematics is left out
              because GPT-4's recorded accuracy there is 3%, an artefact of the source data)

Standard library only. The metric is not recomputed here: the script picks the ids of each
subset and hands them to `model-router eval --ids` (the same command, config and --map flags as
scripts/eval_default_set.sh). Run from the repository root after `cargo build --release`:
    python3 scripts/seed_proxies.py [--examples FILE]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

MMLU_MATH = {"elementary_mathematics", "college_mathematics", "abstract_algebra", "high_school_statistics"}
MATHY = re.compile(r"\b(solve|equation|probability|calculate|compute|how many|how much|how long|sum|average|percent|cost|price)\b")
CODE = re.compile(r"\b(python|code|script|program|function)\b")
MAP = [
    "--map", "small=mistralai/Mixtral-8x7B-Instruct-v0.1,mistralai/mixtral-8x7b-chat,Mixtral-8x7B-Instruct-v0.1_concise",
    "--map", "large=gpt-4-1106-preview,gpt4_1106_preview",
]
FILES = ("routellm/routellm.jsonl", "arena-bench-v1/arena_bench_v1.jsonl")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", help="labeled examples to index (default: the config's)")
    ap.add_argument("--data", default=os.environ.get("EVAL_DATA", "../shared/eval-data"))
    ap.add_argument("--binary", default="target/release/model-router")
    args = ap.parse_args()

    seed = set(open(f"{args.data}/splits/seed_ids.txt").read().split())
    groups = {"arena": [], "arena-math": [], "mmlu-math": []}
    for path in FILES:
        for line in open(f"{args.data}/{path}", encoding="utf-8"):
            r = json.loads(line)
            if r["id"] not in seed:
                continue
            if r["id"].startswith("arena-bench-v1/"):
                groups["arena"].append(r["id"])
                p = r["prompt"].lower()
                if MATHY.search(p) and not CODE.search(p):
                    groups["arena-math"].append(r["id"])
            elif r.get("subject") in MMLU_MATH:
                groups["mmlu-math"].append(r["id"])

    with tempfile.TemporaryDirectory() as tmp:
        for name, ids in groups.items():
            with open(f"{tmp}/{name}.txt", "w", encoding="utf-8") as f:
                f.write("\n".join(ids) + "\n")
            cmd = [args.binary, "--config", "data/router.toml"]
            if args.examples:
                cmd += ["--examples", args.examples]
            cmd += ["eval", *(f"{args.data}/{p}" for p in FILES), "--ids", f"{tmp}/{name}.txt",
                    *MAP, "--plot", f"{tmp}/{name}.svg"]
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            report = json.loads(out.stdout)
            # Each subset is one benchmark (one report); several would end with their "all".
            total = report["settings"][0]["reports"][-1]
            print(f"{name:<11} n={total['n']:<4} APGR {total['router']['apgr']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
