"""An OpenAI-compatible chat-completions endpoint on localhost that answers with a local policy.

``ChatServer(policy)`` serves ``POST <base_url>/chat/completions`` for ``policy(messages) -> reply``
(messages as OpenAI chat dicts), plain or streamed (server-sent events, one content chunk). It lets
stacks that only talk to a model endpoint (verifiers' ``vf-eval``) evaluate a scripted or local
policy without a model server or network. One reply per request; no tools, no sampling parameters.

Careless or hostile clients cannot exhaust it: the listen backlog is ``backlog`` (128), so bursts
of connections queue instead of being reset; a body over ``max_request_bytes`` (1 MiB) is answered
413 without being read, one without a valid ``Content-Length`` 411 or 400; a connection whose
request has not fully arrived ``timeout`` seconds (30) after connecting is closed, however slowly
it trickles; a reply over ``max_reply_bytes`` (1 MiB of UTF-8) is cut there with
``finish_reason="length"`` (a response is at most ``6 * max_reply_bytes`` plus 1 KB of JSON);
``requests`` keeps only the last ``keep_requests`` (32) bodies. A malformed request is answered
400 naming the field, a policy that raises or returns a non-string 500 (naming the error); a
client that resets or stalls logs nothing.
"""

from __future__ import annotations

import collections
import io
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["ChatServer"]

Policy = Callable[[list[dict]], str]

MAX_REQUEST_BYTES = 1 << 20
MAX_REPLY_BYTES = 1 << 20
# After a 411 or 413, what the client still sends is read and discarded (at most this much, for
# at most this long), so it can read the answer instead of being reset.
DRAIN_BYTES = 16 << 20
DRAIN_SECONDS = 2.0


class RequestError(Exception):
    """A request answered with ``status`` and a JSON ``{"error": message}`` body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ChatServer:
    """A background HTTP server on ``127.0.0.1``.

    ``requests`` are the last ``keep_requests`` request bodies that reached the policy (oldest
    first; kept as the bytes received), ``request_count`` how many reached it in all. A request's
    line, headers and body must arrive within ``timeout`` seconds of connecting, and no write
    waits longer.
    """

    def __init__(self, policy: Policy, port: int = 0, *, max_request_bytes: int = MAX_REQUEST_BYTES,
                 max_reply_bytes: int = MAX_REPLY_BYTES, keep_requests: int = 32,
                 timeout: float = 30.0, backlog: int = 128) -> None:
        _check_int("max_request_bytes", max_request_bytes, 1)
        _check_int("max_reply_bytes", max_reply_bytes, 1)
        _check_int("keep_requests", keep_requests, 0)
        _check_int("backlog", backlog, 1)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout={timeout!r} must be a number of seconds > 0")
        self.policy = policy
        self.max_request_bytes = max_request_bytes
        self.max_reply_bytes = max_reply_bytes
        self._kept: collections.deque[bytes] = collections.deque(maxlen=keep_requests)
        self.request_count = 0
        self._lock = threading.Lock()
        self._server = _listen(port, _handler(self, timeout), backlog)
        self.base_url = f"http://127.0.0.1:{self._server.server_port}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> ChatServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def requests(self) -> list[dict]:
        """The last ``keep_requests`` request bodies that reached the policy, oldest first."""
        with self._lock:
            kept = list(self._kept)
        return [json.loads(data) for data in kept]

    def complete(self, body: dict) -> tuple[str, bytes]:
        """The response (content type, bytes) to one chat-completions request body."""
        return self._answer(body, self._record(json.dumps(body).encode()))

    def _record(self, data: bytes) -> int:
        """Keep ``data`` (the oldest kept body goes); the request's number."""
        with self._lock:
            self._kept.append(data)
            self.request_count += 1
            return self.request_count

    def _answer(self, body: dict, number: int) -> tuple[str, bytes]:
        reply = self.policy(body["messages"])
        if not isinstance(reply, str):
            raise TypeError(f"the policy returned {type(reply).__name__}, not str")
        content, finish = _cut(reply, self.max_reply_bytes)
        head = {"id": f"chatcmpl-{number}", "created": int(time.time()),
                "model": body.get("model", "")[:256]}
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        if not body.get("stream"):
            choice = {"index": 0, "message": {"role": "assistant", "content": content},
                      "finish_reason": finish}
            return "application/json", _json({**head, "object": "chat.completion",
                                              "choices": [choice], "usage": usage})
        chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": content},
                                "finish_reason": None}]},
                  {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]},
                  {"choices": [], "usage": usage}]
        events = [_json({**head, "object": "chat.completion.chunk", **chunk}) for chunk in chunks]
        return "text/event-stream", b"".join(b"data: " + e + b"\n\n" for e in [*events, b"[DONE]"])


def _check_int(name: str, value: object, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name}={value!r} must be an integer >= {least}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # close() never waits on a slow client; its thread is a daemon

    def handle_error(self, request, client_address) -> None:
        """A client that resets or stalls is its own problem: nothing is logged for it."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _DeadlineReader(io.RawIOBase):
    """A connection's reads, each waiting at most until one deadline."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self._sock = sock
        self.restart(seconds)

    def restart(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the client sent too slowly")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


def _listen(port: int, handler: type[BaseHTTPRequestHandler], backlog: int) -> _Server:
    """A server bound to ``127.0.0.1:port`` listening with a queue of ``backlog`` connections."""
    server = _Server(("127.0.0.1", port), handler, bind_and_activate=False)
    server.request_queue_size = backlog
    try:
        server.server_bind()
        server.server_activate()
    except BaseException:
        server.server_close()
        raise
    return server


def _cut(reply: str, limit: int) -> tuple[str, str]:
    """``reply`` cut to ``limit`` UTF-8 bytes at a character boundary, and the finish reason."""
    if len(reply) * 4 <= limit:
        return reply, "stop"
    data = reply.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return reply, "stop"
    return data[:limit].decode("utf-8", "ignore"), "length"


def _json(value: dict) -> bytes:
    return json.dumps(value).encode()  # ASCII: at most 6 bytes per byte of UTF-8 content


def _error(message: str) -> bytes:
    return _json({"error": message})


def _content_length(headers, limit: int) -> int:
    """The request's declared body length, checked before any of the body is read."""
    if headers.get("Transfer-Encoding"):
        raise RequestError(411, "send the body with a Content-Length, not Transfer-Encoding")
    values = headers.get_all("Content-Length") or []
    if not values:
        raise RequestError(411, "Content-Length is required")
    if len(values) > 1 or not values[0].strip().isdigit():
        raise RequestError(400, f"Content-Length must be one non-negative integer, "
                                f"got {values!r:.80}")
    length = int(values[0])
    if length > limit:
        raise RequestError(413, f"the body is {length} bytes; at most {limit} are accepted")
    return length


def _parse(data: bytes) -> dict:
    """The request body as a chat-completions request, or a 400 naming the bad field."""
    try:
        body = json.loads(data)
    except (ValueError, RecursionError) as exc:
        reason = type(exc).__name__
        raise RequestError(400, f"bad request: the body is not JSON ({reason})") from None
    if not isinstance(body, dict):
        kind = type(body).__name__
        raise RequestError(400, f"bad request: the body must be a JSON object, not {kind}")
    if "messages" not in body:
        raise RequestError(400, "bad request: 'messages' is required")
    if not isinstance(body["messages"], list):
        raise RequestError(400, "bad request: messages must be a list")
    for i, message in enumerate(body["messages"]):
        if not isinstance(message, dict):
            raise RequestError(400, f"bad request: messages[{i}] must be an object")
    if not isinstance(body.get("model", ""), str):
        raise RequestError(400, "bad request: model must be a string")
    return body


def _handler(server: ChatServer, timeout: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def setup(self) -> None:
            self.timeout = timeout  # StreamRequestHandler applies it to the connection
            super().setup()
            self.reader = _DeadlineReader(self.connection, timeout)
            self.rfile = io.BufferedReader(self.reader)

        def do_POST(self) -> None:
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self.close_connection = True  # the body, if any, is not read
                return self._send(404, "application/json",
                                  _error("only /chat/completions is served"))
            try:
                length = _content_length(self.headers, server.max_request_bytes)
                data = self.rfile.read(length)
                body = _parse(data)
            except RequestError as exc:
                unread = exc.status in (411, 413)  # the body was not read: answer, then close
                self.close_connection = self.close_connection or unread
                self._send(exc.status, "application/json", _error(str(exc)))
                return self._drain() if unread else None
            try:
                response = server._answer(body, server._record(data))
            except Exception as exc:  # the policy's failure is the client's 500, not a dropped link
                return self._send(500, "application/json",
                                  _error(f"policy failed: {type(exc).__name__}: {exc}"))
            self._send(200, *response)

        def _send(self, status: int, content_type: str, data: bytes) -> None:
            self.connection.settimeout(timeout)  # the reads may have left less
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        def _drain(self) -> None:
            """Discard what the client still sends (a bounded amount), so it can read the answer."""
            self.wfile.flush()
            try:
                self.connection.shutdown(socket.SHUT_WR)
                self.reader.restart(min(timeout, DRAIN_SECONDS))
                left = DRAIN_BYTES
                while left > 0 and (chunk := self.rfile.read1(min(left, 1 << 16))):
                    left -= len(chunk)
            except OSError:  # a reset or a timeout: the client has gone or stalls
                pass

    return Handler
