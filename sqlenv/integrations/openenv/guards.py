"""Connection guards for the OpenEnv server: token, body limit, deadline, connection cap, logs.

- :class:`TokenGuard` (ASGI): with a token set, every HTTP request and WebSocket handshake except
  ``GET /health`` must carry ``Authorization: Bearer <token>`` (compared in constant time); others
  get 401.
- :class:`BodyLimit` (ASGI): an HTTP body over the limit gets 413, declared or streamed.
- :func:`guarded_http_protocol`: uvicorn's h11 protocol with a deadline for each request (a
  connection that sends nothing, or part of a request, is closed) and a cap on open connections
  (the excess gets 503 and is closed at once, so half-open sockets cannot use up the descriptors).
- :class:`RateLimitFilter`: at most ``per_minute`` log lines per kind of message, then one summary.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections import OrderedDict

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = [
    "BodyLimit",
    "RateLimitFilter",
    "TokenGuard",
    "configure_logging",
    "guarded_http_protocol",
]

log = logging.getLogger("sqlenv.integrations.openenv")

OPEN_PATHS = frozenset({"/health"})


def _json_response(status: int, detail: str, extra_headers=()) -> tuple[dict, dict]:
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra_headers,
    ]
    return (
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    )


class TokenGuard:
    """ASGI middleware: requests and WebSocket handshakes need ``Authorization: Bearer <token>``.

    ``GET /health`` stays open. HTTP requests without the token get 401; a WebSocket handshake gets
    an HTTP 401 answer when the server supports it, and a 1008 close otherwise.
    """

    def __init__(self, app, token: str):
        if not token:
            raise ValueError("TokenGuard needs a non-empty token")
        self.app, self.expected = app, b"Bearer " + token.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or scope.get("path") in OPEN_PATHS:
            return await self.app(scope, receive, send)
        if self._authorized(scope):
            return await self.app(scope, receive, send)
        client = scope.get("client") or ("?", 0)
        log.warning(
            "refused a %s request to %r from %s: missing or wrong token",
            scope["type"],
            scope.get("path"),
            client[0],
        )
        start, body = _json_response(
            401,
            "missing or wrong token: send 'Authorization: Bearer <token>'",
            [(b"www-authenticate", b"Bearer")],
        )
        if scope["type"] == "http":
            await send(start)
            return await send(body)
        if "websocket.http.response" in scope.get("extensions", {}):
            await send({**start, "type": "websocket.http.response.start"})
            return await send({**body, "type": "websocket.http.response.body"})
        await send({"type": "websocket.close", "code": 1008, "reason": "missing or wrong token"})

    def _authorized(self, scope) -> bool:
        given = [value for name, value in scope.get("headers") or [] if name == b"authorization"]
        return len(given) == 1 and hmac.compare_digest(given[0], self.expected)


class BodyLimit:
    """ASGI middleware: an HTTP body over ``limit`` bytes gets 413 (declared or streamed)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._refuse(send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            return await self.app(scope, limited, send)
        except _TooLarge:
            return await self._refuse(send)

    async def _refuse(self, send):
        for message in _json_response(413, f"request body larger than {self.limit} bytes"):
            await send(message)


class _TooLarge(Exception):
    pass


_INCOMPLETE = (h11.IDLE, h11.SEND_BODY)


def guarded_http_protocol(request_timeout: float, max_connections: int) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a per-request deadline and a cap on open connections.

    A connection must deliver each whole request (headers and body) within ``request_timeout``
    seconds of its first byte, or of the connection opening: one that sends nothing is closed
    silently, one that sent part of a request gets 408 and is closed. While ``max_connections``
    connections (HTTP and WebSocket) are open, a new one closes the oldest connection still
    waiting for its request (silent or half-open ones go first, so they cannot lock out clients
    that send a whole request at once); with none such, the new one gets 503 and is closed.
    """
    waiting: OrderedDict[H11Protocol, None] = OrderedDict()  # incomplete requests, oldest first

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._deadline, self._upgraded = None, False
            if len(self.connections) > max_connections and not self._evict_oldest():
                log.warning(
                    "refused a connection: %d connections open, none idle (--max-connections)",
                    len(self.connections) - 1,
                )
                self._close_with(503, b"too many open connections; retry later\n")
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            incomplete = self.conn.their_state in _INCOMPLETE and not self.transport.is_closing()
            if incomplete and not self._upgraded:
                self._arm()
            else:
                self._disarm()

        def handle_websocket_upgrade(self, event) -> None:
            self._upgraded = True  # the transport now belongs to the WebSocket protocol
            self._disarm()
            super().handle_websocket_upgrade(event)

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._deadline is None:
                self._deadline = self.loop.call_later(request_timeout, self._expire)
                waiting[self] = None

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            waiting.pop(self, None)

        def _evict_oldest(self) -> bool:
            oldest = next((other for other in waiting if other is not self), None)
            if oldest is None:
                return False
            oldest._expire("closed to make room for a new connection (--max-connections)")
            return True

        def _expire(self, why: str = "") -> None:
            self._disarm()
            if self._upgraded or self.transport.is_closing():
                return
            if self.conn.their_state not in _INCOMPLETE:
                return
            started = self.conn.their_state is h11.SEND_BODY or bool(self.conn.trailing_data[0])
            why = why or f"no complete request within {request_timeout:g} s"
            log.warning("closed a connection from %s: %s", (self.client or ("?",))[0], why)
            if started:
                self._close_with(408, b"request not completed in time\n")
            else:
                self.transport.close()

        def _close_with(self, status: int, body: bytes) -> None:
            phrase = {408: b"Request Timeout", 503: b"Service Unavailable"}[status]
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n%s" % (status, phrase, len(body), body)
            )
            self.transport.close()

    return GuardedH11Protocol


class RateLimitFilter(logging.Filter):
    """Lets through at most ``per_minute`` records per kind (logger, level, message template) per
    minute, and ``total_per_minute`` overall; the next record let through reports how many were
    dropped. Only the first record of a kind in each minute keeps its traceback."""

    def __init__(self, per_minute: int = 10, total_per_minute: int = 60):
        super().__init__()
        self.per_minute, self.total_per_minute = per_minute, total_per_minute
        self._lock = threading.Lock()
        self._window = -1
        self._counts: dict[tuple, int] = {}
        self._total = 0
        self._dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg)[:200])
        with self._lock:
            window = int(time.monotonic() // 60)
            if window != self._window:
                self._window, self._counts, self._total = window, {}, 0
            seen = self._counts.get(key, 0)
            if seen >= self.per_minute or self._total >= self.total_per_minute:
                self._dropped += 1
                return False
            self._counts[key], self._total = seen + 1, self._total + 1
            dropped, self._dropped = self._dropped, 0
        if seen:
            record.exc_info = record.exc_text = None
        if dropped:
            record.msg = f"{record.getMessage()} [{dropped} similar log lines dropped]"
            record.args = None
        return True


def configure_logging(level: str = "warning") -> logging.Handler:
    """One stderr handler on the root logger, rate limited; uvicorn's access log off."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RateLimitFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.asgi"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    return handler
