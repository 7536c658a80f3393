"""An OpenAI-compatible chat-completions endpoint on localhost that answers with a local policy.

``ChatServer(policy)`` serves ``POST <base_url>/chat/completions`` for ``policy(messages) -> reply``
(messages as OpenAI chat dicts), plain or streamed (server-sent events, one content chunk). It lets
stacks that only talk to a model endpoint (verifiers' ``vf-eval``) evaluate a scripted or local
policy without a model server or network. One reply per request; no tools, no sampling parameters. A malformed request is answered 400, a
policy that raises 500 (naming the error).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["ChatServer"]

Policy = Callable[[list[dict]], str]


class ChatServer:
    """A background HTTP server on ``127.0.0.1``; ``requests`` holds every request body received."""

    def __init__(self, policy: Policy, port: int = 0) -> None:
        self.policy = policy
        self.requests: list[dict] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.base_url = f"http://127.0.0.1:{self._server.server_port}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> ChatServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def complete(self, body: dict) -> tuple[str, bytes]:
        """The response (content type, bytes) to one chat-completions request body."""
        self.requests.append(body)
        reply = self.policy(body["messages"])
        head = {"id": f"chatcmpl-{len(self.requests)}", "created": int(time.time()), "model": body.get("model", "")}
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        if not body.get("stream"):
            choice = {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
            return "application/json", json.dumps({**head, "object": "chat.completion", "choices": [choice],
                                                   "usage": usage}).encode()
        chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": reply}, "finish_reason": None}]},
                  {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                  {"choices": [], "usage": usage}]
        events = [json.dumps({**head, "object": "chat.completion.chunk", **chunk}) for chunk in chunks]
        return "text/event-stream", "".join(f"data: {event}\n\n" for event in [*events, "[DONE]"]).encode()


def _handler(server: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            if not self.path.rstrip("/").endswith("/chat/completions"):
                return self._send(404, "application/json", b'{"error": "only /chat/completions is served"}')
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                messages = body["messages"]
                if not isinstance(messages, list):
                    raise TypeError("messages must be a list")
            except (ValueError, KeyError, TypeError) as exc:
                return self._send(400, "application/json", json.dumps({"error": f"bad request: {exc}"}).encode())
            try:
                response = server.complete(body)
            except Exception as exc:  # the policy's failure is the client's 500, not a dropped connection
                return self._send(500, "application/json",
                                  json.dumps({"error": f"policy failed: {type(exc).__name__}: {exc}"}).encode())
            self._send(200, *response)

        def _send(self, status: int, content_type: str, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
