#!/usr/bin/env python3
"""End-to-end check of model-router with the official `anthropic` Python SDK.

The client is an unmodified `anthropic.Anthropic` with only `base_url` (the router, as
ANTHROPIC_BASE_URL would set it) and the router's own key changed. It checks
`messages.create` routed by `model="auto"` (with the x-router-* headers), `messages.stream`,
`messages.count_tokens`, an explicit tier, a tool loop routed on the user's text, and the error
mapping (a wrong key, a bad request, a tier without an Anthropic upstream). It also asks the
local fake upstream (scripts/fake_upstream.py) what the router sent it: the tier's Anthropic
model, the upstream's own `x-api-key` (never the client's) and the client's
`anthropic-version`. Run by scripts/e2e_sdk.sh; exits non-zero on the first failure.
"""

import argparse
import json
import sys
import urllib.request

import anthropic
from anthropic import Anthropic

HARD = "Prove that every finite group of order p^2, with p prime, is abelian."
EASY = "hey! how's your day going?"


def last_upstream_request(fake_url):
    with urllib.request.urlopen(fake_url + "/_last") as r:
        return json.load(r)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True, help="the router's root URL (no /v1)")
    p.add_argument("--api-key", required=True)
    p.add_argument("--fake-url", required=True)
    p.add_argument("--upstream-key", required=True)
    args = p.parse_args()
    client = Anthropic(base_url=args.base_url, api_key=args.api_key, max_retries=0)
    passed = []

    def check(name, fn):
        fn()
        passed.append(name)
        print(f"ok   {name}", flush=True)

    def create():
        raw = client.messages.with_raw_response.create(
            model="auto",
            max_tokens=64,
            system="Be brief.",
            messages=[{"role": "user", "content": HARD}],
            stop_sequences=["\n\nEND"],
        )
        m = raw.parse()
        assert raw.headers["x-router-tier"] == "large", dict(raw.headers)
        assert raw.headers["x-router-model"] == "claude-e2e-large", dict(raw.headers)
        assert m.model == "claude-e2e-large", m
        assert m.content[0].text == "answered by claude-e2e-large", m
        sent = last_upstream_request(args.fake_url)
        assert sent["path"] == "/v1/messages", sent
        assert sent["x-api-key"] == args.upstream_key, sent
        assert sent["authorization"] is None, sent
        assert sent["anthropic-version"], sent
        assert args.api_key not in json.dumps(sent), "the client's key reached the upstream"
        assert sent["body"]["system"] == "Be brief." and sent["body"]["stop_sequences"] == ["\n\nEND"], sent

    def stream():
        with client.messages.stream(
            model="auto", max_tokens=64, messages=[{"role": "user", "content": EASY}]
        ) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
        assert text == "answered by claude-e2e-small", text
        assert final.model == "claude-e2e-small" and final.stop_reason == "end_turn", final
        assert last_upstream_request(args.fake_url)["body"]["stream"] is True

    def count_tokens():
        n = client.messages.count_tokens(model="auto", messages=[{"role": "user", "content": HARD}])
        assert n.input_tokens == 11, n
        sent = last_upstream_request(args.fake_url)
        assert sent["path"] == "/v1/messages/count_tokens" and sent["model"] == "claude-e2e-large", sent

    def explicit_tier():
        m = client.messages.create(model="small", max_tokens=8, messages=[{"role": "user", "content": HARD}])
        assert m.model == "claude-e2e-small", m

    def tool_loop():
        raw = client.messages.with_raw_response.create(
            model="auto",
            max_tokens=64,
            tools=[{"name": "lookup", "description": "look up", "input_schema": {"type": "object"}}],
            messages=[
                {"role": "user", "content": HARD},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": EASY}]},
            ],
        )
        assert raw.headers["x-router-tier"] == "large", "routed on the tool output, not the user's text"

    def errors():
        bad = Anthropic(base_url=args.base_url, api_key="not-a-key", max_retries=0)
        try:
            bad.messages.create(model="auto", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
            raise AssertionError("a wrong key was accepted")
        except anthropic.AuthenticationError as e:
            assert e.status_code == 401 and e.body["error"]["type"] == "authentication_error", e.body
        try:
            client.messages.create(model="auto", max_tokens=8, messages=[])
            raise AssertionError("a chat without user text was accepted")
        except anthropic.BadRequestError as e:
            assert e.body["error"]["code"] == "missing_query", e.body
        try:
            client.messages.create(model="medium", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
            raise AssertionError("a tier without an Anthropic upstream was accepted")
        except anthropic.BadRequestError as e:
            assert e.body["error"]["code"] == "upstream_protocol_mismatch", e.body

    check("messages.create routed by model=auto, forwarded with the upstream's x-api-key", create)
    check("messages.stream relays Anthropic's events", stream)
    check("messages.count_tokens goes to the routed tier", count_tokens)
    check("explicit tier", explicit_tier)
    check("a tool loop is routed on the user's text", tool_loop)
    check("errors map to the SDK's exception types", errors)
    print(f"anthropic SDK {anthropic.__version__}: all {len(passed)} checks passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAIL {e}", file=sys.stderr)
        sys.exit(1)
