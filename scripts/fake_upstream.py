#!/usr/bin/env python3
"""A local upstream for the end-to-end checks (standard library only), speaking both kinds.

OpenAI: POST /v1/chat/completions and /v1/responses answer naming the model they received,
streamed as server-sent events when the body says "stream": true (with a short pause between
events, so a buffering proxy would show); they need `Authorization: Bearer $FAKE_UPSTREAM_KEY`.
Anthropic: POST /v1/messages (streamed too) and /v1/messages/count_tokens, which need
`x-api-key: $FAKE_UPSTREAM_KEY` and an `anthropic-version`. Others get a 401 in their kind's
shape. GET /_last returns the last request received (path, model, key headers, body) so a check
can see what the router sent. Writes its port to --port-file once listening.
"""

import argparse
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LAST = {}
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_json(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/_last":
            with LOCK:
                self.send_json(200, LAST)
        else:
            self.send_json(404, {"error": {"message": "not found", "type": "x", "code": "x"}})

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        raw = self.rfile.read(length).decode()
        body = json.loads(raw)
        auth = self.headers.get("authorization")
        with LOCK:
            LAST.clear()
            LAST.update(
                {
                    "path": self.path,
                    "model": body.get("model"),
                    "authorization": auth,
                    "x-api-key": self.headers.get("x-api-key"),
                    "anthropic-version": self.headers.get("anthropic-version"),
                    "body": body,
                }
            )
        key = os.environ["FAKE_UPSTREAM_KEY"]
        model = str(body.get("model"))
        words = ["answered", "by", model]
        if self.path.startswith("/v1/messages"):
            if self.headers.get("x-api-key") != key or not self.headers.get("anthropic-version"):
                return self.send_json(
                    401,
                    {"type": "error", "error": {"type": "authentication_error", "message": "bad upstream key"}},
                )
            if self.path == "/v1/messages/count_tokens":
                return self.send_json(200, {"input_tokens": 11})
            if self.path == "/v1/messages":
                return self.answer_messages(body, model, words)
        elif auth != "Bearer " + key:
            return self.send_json(
                401, {"error": {"message": "bad upstream key", "type": "auth", "code": "invalid_api_key"}}
            )
        if self.path == "/v1/chat/completions":
            return self.answer_chat(body, model, words)
        if self.path == "/v1/responses":
            return self.answer_responses(body, model, words)
        return self.send_json(404, {"error": {"message": "not found", "type": "x", "code": "x"}})

    def start_stream(self):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

    def event(self, data, name=None):
        payload = (("event: %s\n" % name if name else "") + "data: " + data + "\n\n").encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
        self.wfile.flush()
        time.sleep(0.05)

    def end_stream(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def answer_chat(self, body, model, words):
        if not body.get("stream"):
            return self.send_json(
                200,
                {
                    "id": "chatcmpl-e2e",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": " ".join(words)},
                            "finish_reason": "stop",
                            "logprobs": None,
                        }
                    ],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
                },
            )
        self.start_stream()
        for word in words + [None]:
            delta = {"role": "assistant", "content": word + " "} if word else {}
            chunk = {
                "id": "chatcmpl-e2e",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": None if word else "stop"}],
            }
            self.event(json.dumps(chunk))
        self.event("[DONE]")
        self.end_stream()

    def answer_responses(self, body, model, words):
        text = " ".join(words)
        message = {
            "id": "msg_e2e",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }

        def response(status, output):
            return {
                "id": "resp_e2e",
                "object": "response",
                "created_at": int(time.time()),
                "status": status,
                "model": model,
                "output": output,
                "parallel_tool_calls": True,
                "tool_choice": "auto",
                "tools": [],
                "usage": {
                    "input_tokens": 5,
                    "output_tokens": 3,
                    "total_tokens": 8,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens_details": {"reasoning_tokens": 0},
                },
            }

        if not body.get("stream"):
            return self.send_json(200, response("completed", [message]))
        self.start_stream()
        seq = iter(range(1000))

        def ev(name, **data):
            data.update({"type": name, "sequence_number": next(seq)})
            self.event(json.dumps(data), name)

        ev("response.created", response=response("in_progress", []))
        ev("response.output_item.added", output_index=0, item=dict(message, status="in_progress", content=[]))
        ev(
            "response.content_part.added",
            item_id="msg_e2e",
            output_index=0,
            content_index=0,
            part={"type": "output_text", "text": "", "annotations": []},
        )
        for i, word in enumerate(words):
            delta = word if i == 0 else " " + word
            ev("response.output_text.delta", item_id="msg_e2e", output_index=0, content_index=0, delta=delta)
        ev("response.output_text.done", item_id="msg_e2e", output_index=0, content_index=0, text=text)
        ev(
            "response.content_part.done",
            item_id="msg_e2e",
            output_index=0,
            content_index=0,
            part=message["content"][0],
        )
        ev("response.output_item.done", output_index=0, item=message)
        ev("response.completed", response=response("completed", [message]))
        self.end_stream()

    def answer_messages(self, body, model, words):
        text = " ".join(words)
        message = {
            "id": "msg_e2e",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 5, "output_tokens": 3},
        }
        if not body.get("stream"):
            return self.send_json(200, message)
        self.start_stream()

        def ev(name, **data):
            data["type"] = name
            self.event(json.dumps(data), name)

        ev("message_start", message=dict(message, content=[], stop_reason=None))
        ev("content_block_start", index=0, content_block={"type": "text", "text": ""})
        for i, word in enumerate(words):
            delta = word if i == 0 else " " + word
            ev("content_block_delta", index=0, delta={"type": "text_delta", "text": delta})
        ev("content_block_stop", index=0)
        ev("message_delta", delta={"stop_reason": "end_turn", "stop_sequence": None}, usage={"output_tokens": 3})
        ev("message_stop")
        self.end_stream()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file", required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(args.port_file + ".tmp", args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
