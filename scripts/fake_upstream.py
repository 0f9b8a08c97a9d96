#!/usr/bin/env python3
"""A local OpenAI-compatible upstream for the end-to-end check (standard library only).

POST /v1/chat/completions answers a chat completion naming the model it received, streamed as
server-sent events when the body says "stream": true (with a short pause between chunks, so a
buffering proxy would show). Requests without `Authorization: Bearer $FAKE_UPSTREAM_KEY` get a
401. GET /_last returns the last request received (model, Authorization, body) so the check
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
            LAST.update({"model": body.get("model"), "authorization": auth, "body": body})
        if self.path != "/v1/chat/completions":
            return self.send_json(404, {"error": {"message": "not found", "type": "x", "code": "x"}})
        if auth != "Bearer " + os.environ["FAKE_UPSTREAM_KEY"]:
            return self.send_json(
                401, {"error": {"message": "bad upstream key", "type": "auth", "code": "invalid_api_key"}}
            )
        model = body.get("model")
        words = ["answered", "by", str(model)]
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
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

        def event(data):
            payload = ("data: " + data + "\n\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
            self.wfile.flush()

        for i, word in enumerate(words + [None]):
            delta = {"role": "assistant", "content": word + " "} if word else {}
            chunk = {
                "id": "chatcmpl-e2e",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": None if word else "stop"}],
            }
            event(json.dumps(chunk))
            time.sleep(0.05)
        event("[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


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
