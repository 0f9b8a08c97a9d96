#!/usr/bin/env python3
"""Propagation between two replicas sharing a store: adds N examples on replica A
(POST /v1/examples, timed from the 201) and polls replica B (/v1/route on the example's own
text) until the example is its nearest neighbour. Prints p50/p99 in milliseconds.

Usage: scripts/store_propagation.py --a http://HOST:PORT --b http://HOST:PORT --key KEY [-n 50]
(both replicas serving with the same [store]; standard library only)."""

import argparse
import json
import time
import urllib.request
import uuid


def post(url, path, key, body):
    req = urllib.request.Request(
        url + path,
        data=json.dumps(body).encode(),
        headers={"authorization": "Bearer " + key, "content-type": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        return r.status, json.loads(r.read())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--a", required=True)
    p.add_argument("--b", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("-n", type=int, default=50)
    args = p.parse_args()
    # What a route on B takes by itself: the floor under every propagation figure.
    alone = []
    for i in range(50):
        t0 = time.perf_counter()
        post(args.b, "/v1/route", args.key, {"query": f"how should I store sourdough starter {i}"})
        alone.append((time.perf_counter() - t0) * 1e3)
    alone.sort()
    waits = []
    for i in range(args.n):
        tag = uuid.uuid4().hex[:8]
        ex_id = f"prop-{tag}"
        text = f"propagation probe {tag}: how should I store {tag} sourdough starter {i}"
        status, _ = post(args.a, "/v1/examples", args.key, {"examples": [{"id": ex_id, "text": text, "tier": "small"}]})
        assert status == 201, status
        t0 = time.perf_counter()
        while True:
            _, d = post(args.b, "/v1/route", args.key, {"query": text})
            if d["neighbors"] and d["neighbors"][0]["id"] == ex_id:
                break
            if time.perf_counter() - t0 > 30:
                raise SystemExit(f"{ex_id} never reached B")
        waits.append((time.perf_counter() - t0) * 1e3)
    waits.sort()
    pct = lambda q: waits[min(len(waits) - 1, int(q * len(waits)))]
    print(f"propagation A -> B over {len(waits)} examples: p50 {pct(0.5):.1f} ms, p99 {pct(0.99):.1f} ms, max {waits[-1]:.1f} ms")
    print(f"a route on B alone (50 routes): p50 {alone[len(alone) // 2]:.1f} ms")


if __name__ == "__main__":
    main()
