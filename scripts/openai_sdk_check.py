#!/usr/bin/env python3
"""End-to-end check of model-router with the official `openai` Python SDK.

The client is an unmodified `openai.OpenAI` with only `base_url` (and the router's own key)
changed. It checks `models.list()`, a chat completion routed by `model="auto"`, a streamed one,
an explicit tier, the error mapping (a wrong key, an unknown model), the Responses API
(`responses.create` and a streamed `responses.stream`), and a session that only escalates. It also asks the local
fake upstream (scripts/fake_upstream.py) what the router sent it: the rewritten model, the
upstream's own key (never the client's) and the untouched extra fields.
Run by scripts/e2e_sdk.sh, which starts everything; exits non-zero on the first failure.
"""

import argparse
import json
import sys
import urllib.request

import openai
from openai import OpenAI

HARD = "Prove that every finite group of order p^2, with p prime, is abelian."
EASY = "hey! how's your day going?"


def last_upstream_request(fake_url):
    with urllib.request.urlopen(fake_url + "/_last") as r:
        return json.load(r)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--api-key", required=True)
    p.add_argument("--fake-url", required=True)
    p.add_argument("--upstream-key", required=True)
    args = p.parse_args()
    client = OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0)
    passed = []

    def check(name, fn):
        fn()
        passed.append(name)
        print(f"ok   {name}", flush=True)

    def models():
        ids = [m.id for m in client.models.list()]
        assert ids == ["auto", "small", "medium", "large"], ids

    def completion():
        raw = client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": HARD}],
            temperature=0.3,
            max_tokens=50,
            response_format={"type": "text"},
        )
        c = raw.parse()
        assert raw.headers["x-router-tier"] == "large", dict(raw.headers)
        assert raw.headers["x-router-model"] == "e2e-large", dict(raw.headers)
        assert 0.0 <= float(raw.headers["x-router-confidence"]) <= 1.0
        assert c.model == "e2e-large", c
        assert c.choices[0].message.content == "answered by e2e-large", c
        assert c.usage.total_tokens == 8, c
        sent = last_upstream_request(args.fake_url)
        assert sent["model"] == "e2e-large", sent
        assert sent["authorization"] == "Bearer " + args.upstream_key, sent
        assert args.api_key not in json.dumps(sent), "the client's key reached the upstream"
        body = sent["body"]
        assert body["temperature"] == 0.3 and body["max_tokens"] == 50, body
        assert body["response_format"] == {"type": "text"}, body

    def streaming():
        stream = client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": EASY}], stream=True
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert len(chunks) >= 4, chunks
        assert text.strip() == "answered by e2e-small", text
        assert chunks[-1].choices[0].finish_reason == "stop", chunks[-1]
        assert last_upstream_request(args.fake_url)["body"]["stream"] is True

    def explicit_tier():
        c = client.chat.completions.create(model="medium", messages=[{"role": "user", "content": HARD}])
        assert c.model == "e2e-medium", c

    def errors():
        bad = OpenAI(base_url=args.base_url, api_key="not-a-key", max_retries=0)
        try:
            bad.models.list()
            raise AssertionError("a wrong key was accepted")
        except openai.AuthenticationError as e:
            assert e.status_code == 401 and e.code == "invalid_api_key", e
        try:
            client.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "hi"}])
            raise AssertionError("an unknown model was accepted")
        except openai.BadRequestError as e:
            assert e.code == "model_not_found", e

    def responses():
        raw = client.responses.with_raw_response.create(
            model="auto", input=HARD, instructions="Be brief.", previous_response_id="resp_0"
        )
        r = raw.parse()
        assert raw.headers["x-router-tier"] == "large", dict(raw.headers)
        assert r.output_text == "answered by e2e-large", r
        sent = last_upstream_request(args.fake_url)
        assert sent["path"] == "/v1/responses" and sent["model"] == "e2e-large", sent
        assert sent["body"]["previous_response_id"] == "resp_0", sent
        assert sent["authorization"] == "Bearer " + args.upstream_key, sent

    def responses_stream():
        with client.responses.stream(
            model="auto", input=[{"role": "user", "content": [{"type": "input_text", "text": EASY}]}]
        ) as s:
            deltas = [e.delta for e in s if e.type == "response.output_text.delta"]
            final = s.get_final_response()
        assert "".join(deltas) == "answered by e2e-small", deltas
        assert final.output_text == "answered by e2e-small", final

    def session():
        def turn(text, session_id=None):
            headers = {"x-session-id": session_id} if session_id else {}
            raw = client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": text}], extra_headers=headers
            )
            return raw.headers
        assert turn(HARD, "e2e-s1")["x-router-tier"] == "large"
        h = turn(EASY, "e2e-s1")
        assert h["x-router-tier"] == "large" and h["x-router-session-tier"] == "large", dict(h)
        assert turn(EASY)["x-router-tier"] == "small", "without a session it drops"

    check("models.list() lists auto and the tiers", models)
    check("chat completion routed by model=auto, forwarded with the upstream's key", completion)
    check("streamed chat completion", streaming)
    check("explicit tier", explicit_tier)
    check("errors map to the SDK's exception types", errors)
    check("responses.create routed on input, previous_response_id passed on", responses)
    check("responses.stream relays the Responses events", responses_stream)
    check("a session stays on its hardest tier; without one it drops", session)
    print(f"openai SDK {openai.__version__}: all {len(passed)} checks passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAIL {e}", file=sys.stderr)
        sys.exit(1)
