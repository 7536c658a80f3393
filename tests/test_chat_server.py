"""``ChatServer`` under careless and hostile clients, over real sockets and the openai client.

Outcomes only (statuses, bodies, what the server keeps, peak memory); never timings.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import threading
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest

from sqlenv.integrations.chat_server import ChatServer

openai = pytest.importorskip("openai")

PATH = "/v1/chat/completions"
GUARD = 60  # seconds a test socket waits before failing instead of hanging


def echo(messages):
    return f"echo: {messages[-1]['content']}"


def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0, timeout=GUARD)


def ask(server, text, **kwargs):
    messages = [{"role": "user", "content": text}]
    return client(server).chat.completions.create(model="m", messages=messages, **kwargs)


def raw(server, data: bytes, *, read: bool = True) -> socket.socket | bytes:
    """Send ``data`` on a new connection; the answer (until the server closes), or the socket."""
    sock = socket.create_connection(("127.0.0.1", urlsplit(server.base_url).port))
    sock.settimeout(GUARD)
    sock.sendall(data)
    if not read:
        return sock
    with sock:
        return read_all(sock)


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def status_and_body(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def post(body: bytes, length: str | None = None, extra: str = "") -> bytes:
    length_header = "" if length is None else f"Content-Length: {length}\r\n"
    return (f"POST {PATH} HTTP/1.1\r\nHost: x\r\n{length_header}{extra}\r\n").encode() + body


def test_64_concurrent_requests_are_all_answered():
    start = threading.Barrier(64)

    def one(i):
        model = client(server)
        start.wait()  # all 64 connect at once: more than a small listen backlog holds
        messages = [{"role": "user", "content": f"q{i}"}]
        reply = model.chat.completions.create(model="m", messages=messages)
        return reply.choices[0].message.content

    with ChatServer(echo) as server, ThreadPoolExecutor(64) as pool:
        replies = list(pool.map(one, range(64)))
        assert replies == [f"echo: q{i}" for i in range(64)]
        assert server.request_count == 64


def test_an_oversized_body_is_refused_unread_and_nothing_is_kept():
    body = b"x" * (8 << 20)
    with ChatServer(echo, max_request_bytes=1 << 20) as server:
        tracemalloc.start()
        try:
            answer = raw(server, post(body[: 1 << 20], length=str(150_000_000)))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert status_and_body(answer) == (
            413, {"error": "the body is 150000000 bytes; at most 1048576 are accepted"})
        assert peak < 4 << 20  # the 1 MiB sent, let alone 150 MB, was never held
        # a real client sending the whole (8 MB) body sees the 413, not a reset
        too_big = {"model": "m", "messages": [{"role": "user", "content": body.decode()}]}
        with pytest.raises(openai.APIStatusError) as error:
            client(server).chat.completions.create(**too_big)
        assert error.value.status_code == 413
        assert len(server.requests) == 0 and server.request_count == 0
        assert ask(server, "still here").choices[0].message.content == "echo: still here"


@pytest.mark.parametrize("length,extra,status,error", [
    (None, "", 411, "Content-Length is required"),
    (None, "Transfer-Encoding: chunked\r\n", 411,
     "send the body with a Content-Length, not Transfer-Encoding"),
    ("-5", "", 400, "Content-Length must be one non-negative integer, got ['-5']"),
    ("ten", "", 400, "Content-Length must be one non-negative integer, got ['ten']"),
])
def test_a_missing_or_bad_content_length_is_refused(length, extra, status, error):
    with ChatServer(echo) as server:
        answer = raw(server, post(b'{"messages": []}', length=length, extra=extra))
        assert status_and_body(answer) == (status, {"error": error})
        assert server.request_count == 0


@pytest.mark.parametrize("body,error", [
    (b"[" * 100_000 + b"]" * 100_000, "bad request: the body is not JSON (RecursionError)"),
    (b"{\x80\x81}", "bad request: the body is not JSON (UnicodeDecodeError)"),
    (b"[1, 2]", "bad request: the body must be a JSON object, not list"),
    (b'{"model": "m"}', "bad request: 'messages' is required"),
    (b'{"messages": {}}', "bad request: messages must be a list"),
    (b'{"messages": [{}, "hi"]}', "bad request: messages[1] must be an object"),
    (b'{"messages": [], "model": 7}', "bad request: model must be a string"),
])
def test_a_malformed_body_is_answered_400_naming_the_field(body, error):
    with ChatServer(echo) as server:
        answer = raw(server, post(body, length=str(len(body))))
        assert status_and_body(answer) == (400, {"error": error})


def test_half_open_clients_do_not_block_others_and_are_closed():
    with ChatServer(echo, timeout=1) as server:
        stalled = [raw(server, b"POST /v1/chat/comp", read=False),  # a request line cut short
                   raw(server, post(b'{"mess', length="100"), read=False)]  # a body cut short
        assert ask(server, "hello").choices[0].message.content == "echo: hello"
        for sock in stalled:  # the server gives up on them: it closes without an answer
            with sock:
                assert read_all(sock) == b""
        assert server.request_count == 1


def test_a_long_reply_is_cut_with_finish_reason_length():
    replies = {"ascii": "x" * 5_000_000, "accents": "é" * 1000, "short": "SELECT 1"}
    with ChatServer(lambda m: replies[m[-1]["content"]], max_reply_bytes=1001) as server:
        plain = ask(server, "ascii").choices[0]
        assert (plain.message.content, plain.finish_reason) == ("x" * 1001, "length")
        plain = ask(server, "accents").choices[0]  # 2 bytes each: cut at a character boundary
        assert (plain.message.content, plain.finish_reason) == ("é" * 500, "length")
        plain = ask(server, "short").choices[0]
        assert (plain.message.content, plain.finish_reason) == ("SELECT 1", "stop")
        chunks = list(ask(server, "ascii", stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices]
        assert (text, finish) == ("x" * 1001, [None, "length"])


def test_a_policy_that_returns_no_text_is_a_500():
    with ChatServer(lambda m: {"sql": "SELECT 1"}) as server:
        with pytest.raises(openai.InternalServerError) as error:
            ask(server, "hi")
        assert error.value.response.json() == {
            "error": "policy failed: TypeError: the policy returned dict, not str"}


def test_only_the_last_requests_are_kept():
    with ChatServer(echo, keep_requests=4) as server:
        for i in range(10):
            ask(server, f"q{i}")
        kept = [body["messages"][0]["content"] for body in server.requests]
        assert kept == ["q6", "q7", "q8", "q9"]
        assert server.request_count == 10


@pytest.mark.parametrize("kwargs,field", [
    ({"max_request_bytes": 0}, "max_request_bytes"), ({"max_reply_bytes": "1"}, "max_reply_bytes"),
    ({"keep_requests": -1}, "keep_requests"), ({"backlog": True}, "backlog"),
    ({"timeout": 0}, "timeout"),
])
def test_bad_limits_are_refused_naming_the_argument(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}="):
        ChatServer(echo, **kwargs)


def test_a_client_that_trickles_its_request_is_closed():
    with ChatServer(echo, timeout=1) as server:
        sock = raw(server, post(b"", length="10")[:-2], read=False)  # headers not yet ended
        with sock:
            closed = False
            for _ in range(600):  # a header line every 0.1 s, each well within the timeout
                try:
                    sock.sendall(b"X-Pad: a\r\n")
                    sock.settimeout(0.1)
                    closed = sock.recv(1) == b""
                except TimeoutError:
                    continue
                except OSError:  # reset: closed while we were still sending
                    closed = True
                if closed:
                    break
            assert closed
        assert ask(server, "next").choices[0].message.content == "echo: next"


def test_clients_that_reset_log_nothing(capfd):
    with ChatServer(echo) as server:
        for data in [post(b'{"messages"', length="100"), b"POST /v1/chat/completions HTTP/1.1\r\n"]:
            sock = raw(server, data, read=False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # a reset, not a FIN
        assert ask(server, "after").choices[0].message.content == "echo: after"
        for _ in range(GUARD * 10):  # until the handlers of the reset connections are done
            if not any("process_request" in t.name for t in threading.enumerate()):
                break
            threading.Event().wait(0.1)
    assert capfd.readouterr().err == ""


@pytest.mark.slow
def test_a_150_mb_post_from_httpx_gets_413_and_the_server_holds_none_of_it():
    code = ("import httpx, sys; body = b'{\"messages\": [], \"x\": \"' + b'x' * 150_000_000"
            " + b'\"}'; r = httpx.post(sys.argv[1], content=body, timeout=120); "
            "print(r.status_code, r.text)")
    with ChatServer(echo) as server:
        url = server.base_url + "/chat/completions"
        tracemalloc.start()
        try:
            done = subprocess.run([sys.executable, "-c", code, url],
                                  capture_output=True, text=True, timeout=300)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        error = "the body is 150000025 bytes; at most 1048576 are accepted"
        assert done.stdout.strip() == f'413 {{"error": "{error}"}}', done.stderr
        assert peak < 4 << 20 and server.request_count == 0
