"""Slow and stalled clients against a real `pairbert serve` process on 127.0.0.1: a body that never arrives
gets 408 and its connection closed, SIGTERM ends the process (exit 0) even while a client holds a half-sent
body, and connections past max_connections get uvicorn's 503. The settings the CLI has no flag for are set
by running serve() on a ServeSettings in the subprocess. Every wait is bounded."""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("starlette", reason="needs pairbert[serve]")

from pairbert.serving.settings import ServeSettings, SettingsError  # noqa: E402

SERVE_SETTINGS_MAIN = (
    "import sys\n"
    "from pairbert.serving.server import serve\n"
    "from pairbert.serving.settings import ServeSettings\n"
    "serve(ServeSettings.from_json(sys.argv[1]))\n"
)
STALLED_HEAD = (
    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Expect: 100-continue\r\nContent-Length: 100\r\n\r\n"
)


class Server:
    """serve(ServeSettings(...)) in a subprocess; knows its port once /ready says yes."""

    def __init__(self, bundle, **settings):
        text = ServeSettings(str(bundle), port=0, threads=1, variant="optimized", **settings).to_json()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVE_SETTINGS_MAIN, text],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert match, f"the server did not start: {line}{self.proc.stderr.read() if self.proc.poll() else ''}"
        self.port = int(match.group(1))
        deadline = time.monotonic() + 120
        while self.get("/ready")[0] != 200:
            assert self.proc.poll() is None and time.monotonic() < deadline, "the server never became ready"
            time.sleep(0.1)

    def get(self, path: str) -> tuple[int, str, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.getheader("Content-Type", ""), resp.read()
        except OSError:
            return 0, "", b""
        finally:
            conn.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _stall(port: int) -> socket.socket:
    """A connection whose request is in the app (it asked for the body: "100 Continue") with 1 of its 100
    body bytes sent, and no more coming."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(STALLED_HEAD)
    assert sock.recv(1024).startswith(b"HTTP/1.1 100")
    sock.sendall(b"{")
    return sock


def _read_to_close(sock: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def test_a_stalled_body_gets_408_json_and_its_connection_closed(tiny_bundle):
    server = Server(tiny_bundle, body_timeout_s=1)
    try:
        with _stall(server.port) as sock:
            answer = _read_to_close(sock)  # returns only once the server closed the connection
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), answer[:300]
        assert b"application/json" in head.lower() and b"connection: close" in head.lower()
        error = json.loads(body)["error"]
        assert "1 s" in error and "1 of 100 bytes" in error, error
        assert server.get("/ready")[0] == 200  # the server goes on serving
    finally:
        assert server.stop() == 0, server.proc.stderr.read()


@pytest.mark.parametrize(
    "body_timeout_s, graceful_shutdown_s",
    [(600, 1), (1, 600)],
    ids=["graceful-timeout-cancels-it", "body-timeout-answers-it"],
)
def test_sigterm_exits_0_while_a_client_holds_a_half_sent_body(
    tiny_bundle, body_timeout_s, graceful_shutdown_s
):
    server = Server(tiny_bundle, body_timeout_s=body_timeout_s, graceful_shutdown_s=graceful_shutdown_s)
    try:
        with _stall(server.port) as sock:
            server.proc.send_signal(signal.SIGTERM)
            assert server.proc.wait(60) == 0, server.proc.stderr.read()
            answer = _read_to_close(sock)
        # The stalled client is told why, in JSON, before the exit: 408 when its body time ran out first,
        # 503 (retry elsewhere) when the graceful shutdown ran out first and cancelled its request.
        head, _, body = answer.partition(b"\r\n\r\n")
        expected = b"HTTP/1.1 408" if body_timeout_s < graceful_shutdown_s else b"HTTP/1.1 503"
        assert head.startswith(expected) and json.loads(body)["error"], answer[:300]
        assert "Traceback" not in server.proc.stderr.read()
    finally:
        server.stop()


def test_a_body_still_coming_is_not_cut_off(tiny_bundle):
    """body_timeout_s bounds a silence, not the whole upload: a body sent in pieces over more than the
    timeout, none of them late, is answered."""
    server = Server(tiny_bundle, body_timeout_s=1)
    body = json.dumps({"pairs": [["how long to boil an egg", "six minutes"]]}).encode()
    pieces = [body[i : i + 12] for i in range(0, len(body), 12)]
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
            )
            for piece in pieces:  # ~0.4 s apart: well over 1 s in all
                sock.sendall(piece)
                time.sleep(0.4)
            answer = _read_to_close(sock)
        assert len(pieces) * 0.4 > 1.5
        head, _, reply = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), answer[:300]
        assert len(json.loads(reply)["labels"]) == 1
    finally:
        assert server.stop() == 0, server.proc.stderr.read()


def test_max_connections_1_serves_one_client(tiny_bundle):
    server = Server(tiny_bundle, max_connections=1)
    try:
        assert [server.get("/health")[0] for _ in range(3)] == [200, 200, 200]
    finally:
        assert server.stop() == 0, server.proc.stderr.read()


def test_connections_past_max_connections_get_503(tiny_bundle):
    server = Server(tiny_bundle, max_connections=2)
    try:
        assert server.get("/health")[0] == 200
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=30),  # two idle clients
            socket.create_connection(("127.0.0.1", server.port), timeout=30),
        ):
            for _ in range(100):  # until the server has accepted the idle connections (bounded)
                status, ctype, body = server.get("/health")
                if status == 503:
                    break
                time.sleep(0.05)
            assert status == 503 and ctype.startswith("text/plain") and body == b"Service Unavailable"
        for _ in range(100):  # the idle client left: served again
            if server.get("/health")[0] == 200:
                break
            time.sleep(0.05)
        assert server.get("/health")[0] == 200
    finally:
        assert server.stop() == 0, server.proc.stderr.read()


def _until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):  # the socket's own timeout bounds each wait
        data += chunk
    return data


def test_a_request_head_that_never_completes_gets_408_and_frees_its_slot(tiny_bundle):
    server = Server(tiny_bundle, max_connections=3, header_timeout_s=1.0)
    try:
        half = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        half.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # half a head, then nothing
        byte = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        byte.sendall(b"G")  # one byte: uvicorn's own idle timer stops counting here
        kept = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        kept.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")  # answered, kept alive...
        assert kept.recv(65536).startswith(b"HTTP/1.1 200 ")
        kept.sendall(b"GET /health HTTP/1.1\r\n")  # ...then half of the next request
        for sock in (half, byte, kept):
            with sock:
                data = _until_closed(sock)
            assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data
            assert json.loads(data.split(b"\r\n\r\n", 1)[1]) == {
                "error": "the request line and headers did not arrive within 1 s"
            }
        assert server.get("/health")[0] == 200  # the three slots are free again
        # a complete head starts the body's own (longer) timeout: a body still coming is not cut off
        body = json.dumps({"pairs": [["what is the capital of france?", "paris."]]}).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as slow:
            slow.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
            )
            for i in range(0, len(body), len(body) // 3 + 1):
                time.sleep(0.6)  # 1.8 s in all, past the head's 1 s
                slow.sendall(body[i : i + len(body) // 3 + 1])
            assert slow.recv(65536).startswith(b"HTTP/1.1 200 ")
    finally:
        assert server.stop() == 0, server.proc.stderr.read()


def test_a_request_head_past_64_kib_gets_431_but_a_big_body_in_the_same_write_does_not(tiny_bundle):
    from pairbert.serving.server import MAX_HEAD_BYTES

    server = Server(tiny_bundle)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as big:
            big.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
            try:
                for _ in range(64):  # up to 4 MiB, in 64 KiB writes; the server closes long before
                    big.sendall(b"a" * 65536)
            except OSError:  # reset by the closing server: what a client past the limit gets
                pass
            data = _until_closed(big)
        assert data.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), data[:80]
        assert f"over {MAX_HEAD_BYTES} bytes".encode() in data
        # a whole head in one write, from just past the bound to 3 times it (the reads that began or ended
        # the head went uncounted once, so up to ~192 KiB passed)
        for size in (MAX_HEAD_BYTES + 10, 3 * MAX_HEAD_BYTES - 100):
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as one_write:
                one_write.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n")
                data = _until_closed(one_write)
            assert data.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), (size, data[:80])
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as under:
            under.sendall(
                b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES - 200) + b"\r\n\r\n"
            )
            assert under.recv(65536).startswith(b"HTTP/1.1 200 ")
        pairs = [["what is the capital of france? " * 20, "paris. " * 20]] * 300  # a ~250 kB body
        body = json.dumps({"pairs": pairs}).encode()
        head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as one_write:
            one_write.sendall(head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            assert one_write.recv(65536).startswith(b"HTTP/1.1 200 ")
        assert server.get("/health")[0] == 200
    finally:
        assert server.stop() == 0, server.proc.stderr.read()


def _responses(sock: socket.socket, n: int) -> list[bytes]:
    """The next n HTTP responses on a connection (each with a Content-Length)."""
    data, out = b"", []
    while len(out) < n:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            length = int(re.search(rb"content-length: (\d+)", data[:head_end].lower()).group(1))
            if len(data) >= head_end + 4 + length:
                out.append(data[: head_end + 4 + length])
                data = data[head_end + 4 + length :]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(out)} responses"
        data += chunk
    return out


def test_bodies_are_not_heads_pipelined_or_answered_early(tiny_bundle):
    """The head bounds count only request lines and headers: a pipelined request's large body, or the rest of
    a body the server already answered 413 to, is not a head (431 or 408)."""
    server = Server(tiny_bundle, header_timeout_s=1.0)
    try:
        pairs = [["what is the capital of france? " * 20, "paris. " * 20]] * 300
        body = json.dumps({"pairs": pairs}).encode()  # ~250 kB
        post = (
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" + post)  # pipelined
            first, second = _responses(sock, 2)
        assert first.startswith(b"HTTP/1.1 200 ") and second.startswith(b"HTTP/1.1 200 "), second[:80]
        big = 9 * 1024 * 1024  # over the 8 MiB body limit: 413 from Content-Length, the rest drained
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: " + str(big).encode())
            sock.sendall(b"\r\n\r\n")
            (answer,) = _responses(sock, 1)
            assert answer.startswith(b"HTTP/1.1 413 "), answer[:80]
            for _ in range(big // 65536):  # a client that sends its whole body before reading is not cut off
                time.sleep(0.002)
                sock.sendall(b"x" * 65536)
        assert server.get("/health")[0] == 200
    finally:
        assert server.stop() == 0, server.proc.stderr.read()


@pytest.mark.parametrize(
    "field, value",
    [
        ("header_timeout_s", 0),
        ("body_timeout_s", 0),
        ("body_timeout_s", float("nan")),
        ("graceful_shutdown_s", -1),
        ("max_connections", 0),
    ],
)
def test_slow_client_settings_refuse_nonsense(field, value):
    with pytest.raises(SettingsError, match=field.replace("_", "-")):
        ServeSettings("b", **{field: value})
