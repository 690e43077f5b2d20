"""`pairbert serve` for real: a uvicorn server on a free 127.0.0.1 port (a `pairbert serve` subprocess, or
a thread where the test must hold the loader), the tiny bundle, answers compared with the in-process
predictor. Every loop is bounded by count and time; all traffic stays on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import varied_pairs

pytest.importorskip("starlette", reason="needs pairbert[serve]")

from pairbert.benchmarks.serve_load import SERVE_MAIN, ServerProcess  # noqa: E402
from pairbert.runtime.devices import cgroup_cpu_quota, physical_cores  # noqa: E402
from pairbert.runtime.predictor import PairClassifier  # noqa: E402
from pairbert.serving.batcher import DynamicBatcher, QueueFull  # noqa: E402
from pairbert.serving.server import worker_threads  # noqa: E402
from pairbert.serving.settings import ServeSettings  # noqa: E402

VARIANT = "optimized"  # fp32: answers independent of batch composition (dynamic int8 depends on it)
MAX_REQUEST_PAIRS, MAX_QUEUE_PAIRS, MAX_TEXT_CHARS = 200, 100, 500
LIMIT_ARGS = (
    "--variant",
    VARIANT,
    "--threads",
    "1",
    "--max-request-pairs",
    str(MAX_REQUEST_PAIRS),
    "--max-queue-pairs",
    str(MAX_QUEUE_PAIRS),
    "--max-text-chars",
    str(MAX_TEXT_CHARS),
)


@contextlib.contextmanager
def in_process_server(app):
    """`app` served by uvicorn in a thread of this process on a free loopback port (for tests that hold
    the loader or the predictor); yields the port once listening, and stops the server after."""
    import uvicorn

    from pairbert.serving.server import bind

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server never started"
            time.sleep(0.02)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()
    assert not thread.is_alive()


def _pairs(n: int, seed: int) -> list[tuple[str, str]]:
    return [(r["question"], r["answer"]) for r in varied_pairs(n, seed)]


def call(
    port: int, method: str, path: str, body: object | bytes | None = None, headers: dict | None = None
) -> tuple[int, dict, object]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        raw = resp.read()
        ctype = resp.getheader("Content-Type", "")
        return resp.status, dict(resp.getheaders()), json.loads(raw) if "json" in ctype else raw.decode()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def clf(tiny_bundle):
    return PairClassifier.load(tiny_bundle, variant=VARIANT, threads=1)


@pytest.fixture(scope="module")
def server(tiny_bundle):
    proc = ServerProcess(str(tiny_bundle), *LIMIT_ARGS)
    yield proc
    assert proc.stop() == 0, proc.errors()


# --- endpoints ---------------------------------------------------------------------------------------------


def test_health_ready_and_predict_match_the_in_process_predictor(server, clf):
    assert call(server.port, "GET", "/health")[0] == 200
    status, _, ready = call(server.port, "GET", "/ready")
    assert status == 200 and ready["status"] == "ready" and ready["variant"] == clf.variant
    pairs = _pairs(12, seed=1)
    status, _, body = call(server.port, "POST", "/predict", {"pairs": [list(p) for p in pairs]})
    expected = clf.predict(pairs)
    assert status == 200
    assert body["labels"] == expected.labels.tolist()
    assert body["label_names"] == list(expected.label_names)
    np.testing.assert_allclose(body["probabilities"], expected.probabilities, atol=1e-5)
    np.testing.assert_allclose(body["match_probability"], expected.match_probability, atol=1e-5)
    assert call(server.port, "POST", "/predict", {"pairs": []})[2]["labels"] == []


def test_rerank_matches_rank_and_honours_top_n(server, clf):
    query = "what is the capital of france?"
    texts = [a for _, a in _pairs(9, seed=2)] + ["paris is the capital of france."]
    status, _, body = call(server.port, "POST", "/rerank", {"query": query, "texts": texts})
    expected = clf.rank(query, texts)
    assert status == 200
    assert [r["index"] for r in body] == [i for i, _ in expected]
    np.testing.assert_allclose([r["score"] for r in body], [s for _, s in expected], atol=1e-5)
    assert [r["score"] for r in body] == sorted((r["score"] for r in body), reverse=True)
    top = call(server.port, "POST", "/rerank", {"query": query, "texts": texts, "top_n": 3})[2]
    assert top == body[:3] and len(clf.rank(query, texts, top_k=3)) == 3


def test_metrics_count_requests_batches_and_queue(server):
    call(server.port, "POST", "/predict", {"pairs": [["a", "b"]]})
    call(server.port, "POST", "/predict", {"pairs": "nope"})
    status, headers, text = call(server.port, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert 'pairbert_requests_total{endpoint="/predict",status="200"}' in text
    assert 'pairbert_requests_total{endpoint="/predict",status="422"}' in text
    assert 'pairbert_request_duration_seconds_bucket{endpoint="/predict"' in text
    assert "pairbert_batch_pairs_count" in text and "pairbert_queue_pairs 0.0" in text
    assert "pairbert_ready 1.0" in text


# --- batching ----------------------------------------------------------------------------------------------


def test_concurrent_requests_each_get_their_own_results(server, clf):
    requests = [_pairs(1 + k % 4, seed=100 + k) for k in range(24)]
    results: dict[int, tuple] = {}
    barrier = threading.Barrier(len(requests))

    def send(k: int) -> None:
        barrier.wait(timeout=30)
        results[k] = call(server.port, "POST", "/predict", {"pairs": [list(p) for p in requests[k]]})

    threads = [threading.Thread(target=send, args=(k,)) for k in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results) == list(range(len(requests)))
    for k, pairs in enumerate(requests):
        status, _, body = results[k]
        assert status == 200
        np.testing.assert_allclose(body["probabilities"], clf.predict(pairs).probabilities, atol=1e-5)


def test_one_send_transport_joins_a_steps_writes_and_flushes_before_close():
    from pairbert.serving.server import _OneSendTransport

    class Recording(asyncio.Transport):  # a real Transport subclass that keeps what it is given
        def __init__(self):
            super().__init__()
            self.sent, self.closed = [], False

        def write(self, data):
            self.sent.append(bytes(data))

        def is_closing(self):
            return self.closed

        def close(self):
            self.closed = True

    async def main():
        inner = Recording()
        transport = _OneSendTransport(inner, asyncio.get_running_loop())
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(memoryview(b"body"))
        assert inner.sent == []  # nothing leaves before the step ends
        await asyncio.sleep(0)
        assert inner.sent == [b"HTTP/1.1 200 OK\r\n\r\nbody"]  # one send for both
        transport.write(b"last")
        transport.close()  # what is pending leaves before the close
        assert inner.sent[-1] == b"last" and inner.closed and transport.is_closing()

    asyncio.run(main())


def test_answers_stay_intact_on_a_kept_alive_connection(server, clf):
    """Each answer whole and in order through the one-send transport, several on one connection."""
    pairs = _pairs(3, seed=7)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        for pair in pairs:  # several requests on one connection: the buffering must not mix answers up
            body = json.dumps({"pairs": [list(pair)]}).encode()
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            data = sock.recv(1 << 16)  # returns as soon as the first segment is in
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int(next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))[15:])
            assert head.startswith(b"HTTP/1.1 200") and len(rest) == length
            np.testing.assert_allclose(
                json.loads(rest)["probabilities"], clf.predict([pair]).probabilities, atol=1e-5
            )
    finally:
        sock.close()


def _run_batcher(
    clf, jobs: list[list[tuple[str, str]]], **kwargs
) -> tuple[list[np.ndarray], DynamicBatcher, list]:
    """Submit every job in the same event-loop tick to a real batcher around the real predictor."""
    runs: list[int] = []

    def predict(questions, answers):
        runs.append(len(questions))
        return clf.predict(list(zip(questions, answers, strict=True))).probabilities

    async def main():
        batcher = DynamicBatcher(predict, **kwargs)
        batcher.start()
        lengths = [sum(clf.encoder.lengths([q for q, _ in j], [a for _, a in j])) for j in jobs]
        out = await asyncio.gather(
            *(
                batcher.submit([q for q, _ in j], [a for _, a in j], n)
                for j, n in zip(jobs, lengths, strict=True)
            )
        )
        await batcher.close()
        return out, batcher

    out, batcher = asyncio.run(asyncio.wait_for(main(), 60))
    return out, batcher, runs


def test_batcher_coalesces_requests_and_splits_results_back(clf):
    jobs = [_pairs(1 + k % 3, seed=200 + k) for k in range(10)]
    out, batcher, runs = _run_batcher(clf, jobs, max_wait_ms=50)
    assert runs == [sum(len(j) for j in jobs)]  # one run for all ten requests
    for job, probabilities in zip(jobs, out, strict=True):
        np.testing.assert_allclose(probabilities, clf.predict(job).probabilities, atol=1e-6)


def test_batcher_respects_token_and_pair_budgets_and_batching_off(clf):
    jobs = [_pairs(2, seed=300 + k) for k in range(8)]
    _, _, runs = _run_batcher(clf, jobs, max_batch_pairs=4)
    assert runs == [4, 4, 4, 4]
    lengths = [sum(clf.encoder.lengths([q for q, _ in j], [a for _, a in j])) for j in jobs]
    _, _, runs = _run_batcher(clf, jobs, max_batch_tokens=max(lengths))  # at most one job's tokens per run
    assert runs == [2] * 8
    _, batcher, runs = _run_batcher(clf, jobs, batching=False)
    assert runs == [2] * 8 and batcher.stats.runs == 8


def test_batcher_refuses_past_its_queue_bound(clf):
    async def main():
        batcher = DynamicBatcher(
            lambda q, a: clf.predict(list(zip(q, a, strict=True))).probabilities, max_queue_pairs=3
        )
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(["a", "b"], ["c", "d"], 8))
        await asyncio.sleep(0)  # queued, not yet taken
        with pytest.raises(
            QueueFull, match="the queue is full: 2 pairs are waiting and this request's 2 would"
        ):
            await batcher.submit(["a", "b"], ["c", "d"], 8)
        assert (await first).shape == (2, len(clf.label_names))
        await batcher.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_cancelled_request_is_withdrawn_and_never_run(clf):
    """A request cancelled while queued (its client left, or the graceful shutdown ran out) frees its place
    and its pairs are never run, while the run in flight and the requests behind it are answered."""
    gate, ran = threading.Event(), []

    def predict(questions, answers):
        ran.append(list(questions))
        assert gate.wait(60), "the test never opened the gate"
        return clf.predict(list(zip(questions, answers, strict=True))).probabilities

    async def main():
        batcher = DynamicBatcher(predict, max_wait_ms=0, max_queue_pairs=4)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(["q1"], ["a1"], 4))
        while not ran:  # the first run is on the worker, held at the gate
            await asyncio.sleep(0.01)
        left = asyncio.ensure_future(batcher.submit(["gone1", "gone2", "gone3"], ["x", "y", "z"], 12))
        await asyncio.sleep(0.01)
        assert batcher.stats.queued_pairs == 3
        left.cancel()
        with pytest.raises(asyncio.CancelledError):
            await left
        assert batcher.stats.queued_pairs == 0  # its place is free again: 3 more pairs fit the bound of 4
        behind = asyncio.ensure_future(batcher.submit(["q2", "q3", "q4"], ["a2", "a3", "a4"], 12))
        await asyncio.sleep(0.01)
        gate.set()
        assert (await first).shape == (1, len(clf.label_names))
        assert (await behind).shape == (3, len(clf.label_names))
        await batcher.close()
        return batcher

    batcher = asyncio.run(asyncio.wait_for(main(), 60))
    assert ran == [["q1"], ["q2", "q3", "q4"]]  # never the withdrawn request's pairs
    assert batcher.stats.pairs == 4 and batcher.stats.queued_pairs == 0


def test_a_client_that_disconnects_has_its_queued_pairs_withdrawn(tiny_bundle):
    """A real server: while the worker is busy, a client sends a whole request and hangs up. Its pairs are
    never run, /metrics counts it as 499 (not 200), and the request in flight is answered. While it waited,
    a request the queue had no room for was refused without being tokenized."""
    from pairbert.serving.app import create_app

    real = PairClassifier.load(tiny_bundle, variant=VARIANT, threads=1)
    gate, ran, tokenized = threading.Event(), [], []

    class Counted:  # the real encoder, its tokenize calls counted
        def __getattr__(self, name):
            return getattr(real.encoder, name)

        def tokenize(self, questions, answers):
            tokenized.append(len(questions))
            return real.encoder.tokenize(questions, answers)

    class Gated:  # the real predictor, its runs recorded and held until the test opens the gate
        encoder = Counted()

        def __getattr__(self, name):
            return getattr(real, name)

        def predict_encoded(self, qa, aq, batch_size=32):
            ran.append(len(qa))
            assert gate.wait(60), "the test never opened the gate"
            return real.predict_encoded(qa, aq, batch_size=batch_size)

    settings = ServeSettings(bundle=str(tiny_bundle), warmup=False, max_wait_ms=0, max_queue_pairs=6)
    answered = []
    with in_process_server(create_app(settings, loader=Gated)) as port:
        try:
            deadline = time.monotonic() + 60
            while call(port, "GET", "/ready")[0] != 200:
                assert time.monotonic() < deadline, "the server never became ready"
                time.sleep(0.05)
            first = threading.Thread(
                target=lambda: answered.append(call(port, "POST", "/predict", {"pairs": [["q", "a"]]})[0])
            )
            first.start()
            while not ran and time.monotonic() < deadline:  # the first request's run is held at the gate
                time.sleep(0.01)
            body = json.dumps({"pairs": [["gone", str(i)] for i in range(5)]}).encode()
            with socket.create_connection(("127.0.0.1", port), timeout=60) as leaving:
                leaving.sendall(
                    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
                while "pairbert_queue_pairs 5.0" not in call(port, "GET", "/metrics")[2]:
                    assert time.monotonic() < deadline, "the request never reached the queue"
                    time.sleep(0.02)  # queued behind the held run
                assert tokenized == [1, 5]
                status, _, answer = call(port, "POST", "/predict", {"pairs": [["no", "room"]] * 2})
                assert status == 503 and "the queue is full: 5 pairs are waiting" in answer["error"]
                assert tokenized == [1, 5]  # refused before the tokenizer's work
                leaving.shutdown(socket.SHUT_RDWR)
            while 'status="499"' not in call(port, "GET", "/metrics")[2]:
                assert time.monotonic() < deadline, "the server never noticed the client leave"
                time.sleep(0.05)
            assert "pairbert_queue_pairs 0.0" in call(port, "GET", "/metrics")[2]  # withdrawn at once
            gate.set()
            first.join(60)
            assert answered == [200]
            assert call(port, "POST", "/predict", {"pairs": [["q2", "a2"]]})[0] == 200
            metrics = call(port, "GET", "/metrics")[2]
            assert 'pairbert_requests_total{endpoint="/predict",status="499"} 1.0' in metrics
            assert ran == [1, 1]  # the first request and the last: never the 5 pairs whose client left
        finally:
            gate.set()


# --- limits and bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, status, field",
    [
        (b'{"pairs": [["a", "b"]', 422, None),  # truncated JSON
        (b"\xff\xfe{}", 422, None),  # not UTF-8
        (b"[1, 2]", 422, None),
        (b'{"pairs": [["a", "b"]], "x": NaN}', 422, None),
        (b'{"pair": []}', 422, "pairs"),
        (b'{"pairs": "a b"}', 422, "pairs"),
        (b'{"pairs": [["a", "b"], ["c"]]}', 422, "pairs[1]"),
        (b'{"pairs": [["a", 7]]}', 422, "pairs[0][1]"),
        (b'{"pairs": [[null, "b"]]}', 422, "pairs[0][0]"),
        (b'{"pairs": [["\\ud800", "b"]]}', 422, "pairs[0][0]"),  # a lone surrogate
        (b'{"pairs": [["a", "b"]], "n": 1e999999}', 200, None),  # huge numbers in fields we ignore are fine
        (b'{"pairs": [["a", "b"]], "n": ' + b"9" * 5000 + b"}", 422, None),  # past Python's int digit limit
        (b'{"pairs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 422, None),  # nested junk
    ],
)
def test_malformed_bodies_get_a_json_error_naming_the_field(server, body, status, field):
    got, _, answer = call(server.port, "POST", "/predict", body)
    assert got == status, answer
    if status != 200:
        assert isinstance(answer, dict) and answer["error"]
        assert answer.get("field") == field


def test_a_body_that_is_not_utf8_names_its_first_bad_byte_counting_from_1():
    from pairbert.serving.schema import RequestError, parse_json

    with pytest.raises(RequestError, match=r"body is not UTF-8 \(byte 8\)"):  # as the pair-file reader counts
        parse_json(b'{"a": "\xff"}')


def test_limits_answer_413_and_a_full_queue_503_with_retry_after(server):
    too_many = {"pairs": [["a", "b"]] * (MAX_REQUEST_PAIRS + 1)}
    status, _, body = call(server.port, "POST", "/predict", too_many)
    assert status == 413 and body["field"] == "pairs"
    status, _, body = call(server.port, "POST", "/predict", {"pairs": [["a", "b" * (MAX_TEXT_CHARS + 1)]]})
    assert status == 413 and body["field"] == "pairs[0][1]"
    status, _, body = call(
        server.port, "POST", "/rerank", {"query": "q" * (MAX_TEXT_CHARS + 1), "texts": ["a"]}
    )
    assert status == 413 and body["field"] == "query"
    # More pairs than the queue ever holds (max-queue-pairs < max-request-pairs): 413 naming both limits,
    # not a 503 that retrying could never get past.
    for path, body in (
        ("/predict", {"pairs": [["a", "b"]] * (MAX_QUEUE_PAIRS + 1)}),
        ("/rerank", {"query": "q", "texts": ["a"] * (MAX_QUEUE_PAIRS + 1)}),
    ):
        status, headers, answer = call(server.port, "POST", path, body)
        assert status == 413 and "retry-after" not in headers, answer
        assert answer["field"] == ("pairs" if path == "/predict" else "texts")
        assert f"{MAX_QUEUE_PAIRS + 1} items" in answer["error"]
        assert f"({MAX_QUEUE_PAIRS}, max-queue-pairs" in answer["error"]
        assert f"max-request-pairs is {MAX_REQUEST_PAIRS}" in answer["error"]
    status, _, answer = call(server.port, "POST", "/predict", {"pairs": [["a", "b"]] * MAX_QUEUE_PAIRS})
    assert status == 200 and len(answer["labels"]) == MAX_QUEUE_PAIRS
    status, _, body = call(server.port, "GET", "/nowhere")
    assert status == 404 and body["error"]
    status, _, body = call(server.port, "GET", "/predict")
    assert status == 405 and body["error"]


def test_unclear_inputs_get_errors_that_say_what_came(server):
    import gzip

    packed = gzip.compress(json.dumps({"pairs": [["a", "b"]]}).encode())
    status, _, body = call(server.port, "POST", "/predict", packed, {"Content-Encoding": "gzip"})
    assert status == 415 and 'Content-Encoding "gzip" is not supported' in body["error"], body
    status, _, body = call(server.port, "POST", "/rerank", b"x", {"Content-Encoding": "br"})
    assert status == 415 and '"br"' in body["error"], body
    plain = {"pairs": [["a", "b"]]}
    assert call(server.port, "POST", "/predict", plain, {"Content-Encoding": "identity"})[0] == 200
    status, _, body = call(server.port, "POST", "/predict", b'{"pairs": [["a", "b"]], "pairs": [["c", "d"]]}')
    assert status == 422 and 'the key "pairs" twice' in body["error"], body
    status, _, body = call(server.port, "POST", "/rerank", b'{"query": "q", "texts": [{"k": 1, "k": 2}]}')
    assert status == 422 and 'the key "k" twice' in body["error"], body
    for top_n, shown in ((-1, "got -1"), (2.5, "got 2.5"), ("3", 'got "3"'), (True, "got true")):
        status, _, body = call(server.port, "POST", "/rerank", {"query": "q", "texts": ["a"], "top_n": top_n})
        assert status == 422 and body["field"] == "top_n" and body["error"].endswith(shown), body
    status, _, body = call(server.port, "POST", "/predict", {"pairs": [["a", 7]]})
    assert status == 422 and body["error"] == "pairs[0][1] must be a string, got 7", body
    status, _, body = call(server.port, "POST", "/predict", {"pairs": [["a", ["b"]]]})
    assert status == 422 and body["error"] == "pairs[0][1] must be a string, got a list", body
    status, headers, body = call(server.port, "POST", "/predict/", plain, {"Host": "evil.example"})
    assert status == 404 and "location" not in {k.lower() for k in headers}, headers  # no redirect to Host


def test_malformed_http_gets_a_json_400(server):
    answer = _raw(server.port, b"GARBAGE / HTTP/9.9\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head, answer[:300]
    assert "malformed HTTP request" in json.loads(body)["error"]


def _raw(port: int, data: bytes, timeout: float = 30) -> bytes:
    """Send bytes, half-close, read until the server closes. A reset (the server dropping a connection it
    cannot parse, with our bytes unread) counts as an answer without a body: it can show at any step, as
    ECONNRESET, EPIPE, or ENOTCONN from the half-close when the reset came first."""
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except OSError as e:
            if e.errno not in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN):
                raise
    return b"".join(chunks)


def test_fuzz_never_crashes_or_wedges_the_server(server, clf):
    import random

    rng = random.Random(7)
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
    cases = [
        head + b"Content-Length: 100\r\n\r\n" + b'{"pairs": [["a",',  # body shorter than announced, then EOF
        head + b"Content-Length: -5\r\n\r\n{}",
        head + b"Content-Length: 99999999999999999999\r\n\r\n{}",
        b"GARBAGE / HTTP/9.9\r\n\r\n",
        b"POST /predict HTTP/1.1\r\n" + b"X: " + b"y" * 200_000 + b"\r\n\r\n",  # header flood
        head + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        json.dumps({"pairs": [["a", "b"]] * 10_000}).encode(),  # not even HTTP
    ]
    cases += [
        head + f"Content-Length: {n}\r\n\r\n".encode() + bytes(rng.randrange(256) for _ in range(n))
        for n in (1, 17, 400, 5000)
    ]
    junk = [
        {"pairs": [[{"a": 1}, ["b"]]]},
        {"pairs": [[1e308, -1e308]]},
        {"pairs": [[True, False]]},
        {"pairs": {"0": ["a", "b"]}},
        {"query": 5, "texts": None},
        {"pairs": [["a", "b"]] * 10_000},
    ]
    for case in cases:
        answer = _raw(server.port, case)
        if answer:  # the server may close a connection it cannot parse; if it answers, it is an error
            assert int(answer.split(b" ", 2)[1]) >= 400, answer[:200]
    for body in junk:
        for path in ("/predict", "/rerank"):
            status, _, answer = call(server.port, "POST", path, body)
            assert status in (413, 422) and answer["error"], (path, body if len(str(body)) < 200 else "...")
    # A slow client that never finishes its body holds its own connection only.
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as slow:
        slow.sendall(head.replace(b"Connection: close\r\n", b"") + b'Content-Length: 40\r\n\r\n{"pai')
        for k in range(3):
            slow.sendall(b" ")
            pairs = _pairs(2, seed=400 + k)
            status, _, body = call(server.port, "POST", "/predict", {"pairs": [list(p) for p in pairs]})
            assert status == 200
            np.testing.assert_allclose(body["probabilities"], clf.predict(pairs).probabilities, atol=1e-5)
    assert call(server.port, "GET", "/ready")[0] == 200
    assert "Traceback" not in server.errors(last=10**7)  # every case was an answer, none a server error


# --- lifecycle ---------------------------------------------------------------------------------------------


def test_ready_says_503_until_the_bundle_is_loaded_and_warmed_up(tiny_bundle):
    from pairbert.serving.app import create_app

    release = threading.Event()

    def gated_load():  # the real predictor, loaded once the test has seen the server before it
        assert release.wait(60), "the test never released the loader"
        return PairClassifier.load(tiny_bundle, variant=VARIANT, threads=1)

    with in_process_server(create_app(ServeSettings(bundle=str(tiny_bundle)), loader=gated_load)) as port:
        try:
            deadline = time.monotonic() + 60
            assert call(port, "GET", "/health")[0] == 200
            status, _, body = call(port, "GET", "/ready")
            assert status == 503 and body["status"] == "loading"
            status, headers, body = call(port, "POST", "/predict", {"pairs": [["a", "b"]]})
            assert status == 503 and headers["retry-after"] == "1" and "not ready" in body["error"]
            assert "pairbert_ready 0.0" in call(port, "GET", "/metrics")[2]
            release.set()
            while call(port, "GET", "/ready")[0] != 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert call(port, "GET", "/ready")[0] == 200
            assert call(port, "POST", "/predict", {"pairs": [["a", "b"]]})[0] == 200
        finally:
            release.set()


def test_sigterm_finishes_the_request_in_flight_then_exits_0(tiny_bundle, clf):
    server = ServerProcess(str(tiny_bundle), *LIMIT_ARGS)
    pairs = _pairs(3, seed=500)
    body = json.dumps({"pairs": [list(p) for p in pairs]}).encode()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Expect: 100-continue\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
            )
            # "100 Continue" comes when the app starts reading the body: the request is now in flight.
            assert sock.recv(1024).startswith(b"HTTP/1.1 100")
            server.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)  # let the server begin its shutdown with our request half-sent
            sock.sendall(body)
            reader = sock.makefile("rb")
            assert reader.readline().startswith(b"HTTP/1.1 200")
            headers = {}
            while (line := reader.readline()) not in (b"\r\n", b""):
                key, _, value = line.decode().partition(":")
                headers[key.strip().lower()] = value.strip()
            answer = json.loads(reader.read(int(headers["content-length"])))
        np.testing.assert_allclose(answer["probabilities"], clf.predict(pairs).probabilities, atol=1e-5)
        assert server.proc.wait(60) == 0, server.errors()
    finally:
        server.stop()


def _serve_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SERVE_MAIN, *args], capture_output=True, text=True, timeout=timeout
    )


def test_a_bad_bundle_stops_the_server_with_the_cli_one_line_error(tiny_bundle, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle, bad)
    tokenizer = bad / "tokenizer.json"  # every load reads it, whichever variant auto picks
    tokenizer.write_bytes(tokenizer.read_bytes()[:-10] + b"0123456789")  # tampered: no longer its checksum
    predicted = _serve_cli("predict", str(bad), "-q", "a", "-a", "b")
    for extra in ((), ("--workers", "2")):
        served = _serve_cli("serve", str(bad), "--port", "0", *extra)
        assert served.returncode == predicted.returncode == 1, served.stderr  # 1: a bad bundle (not usage)
        error = served.stderr.strip().splitlines()
        assert len(error) == 1 and error[0].startswith("pairbert serve: error: "), served.stderr
        assert error[0].removeprefix("pairbert serve: ") == predicted.stderr.strip().removeprefix(
            "pairbert predict: "
        )
    missing = _serve_cli("serve", str(tmp_path / "nowhere"), "--port", "0")
    assert missing.returncode == 1 and "listening" not in missing.stdout
    assert missing.stderr.startswith("pairbert serve: error: ") and "nowhere" in missing.stderr


def test_a_variant_the_bundle_lacks_stops_serve_before_it_listens(tiny_checkpoint, tmp_path):
    from pairbert.export.bundle_writer import ExportSettings, build_bundle

    build_bundle(tiny_checkpoint, tmp_path / "b", ExportSettings(variants=("fp32",)), echo=None)
    served = _serve_cli("serve", str(tmp_path / "b"), "--port", "0", "--variant", "int8")
    assert served.returncode == 1 and "listening" not in served.stdout, served.stdout
    assert (
        served.stderr.startswith("pairbert serve: error: ")
        and "variant 'int8' not in this bundle" in served.stderr
    )


def test_two_workers_split_the_cores_and_both_serve(tiny_bundle, clf):
    server = ServerProcess(str(tiny_bundle), "--variant", VARIANT, "--workers", "2")
    try:
        children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()
        workers = [c for c in children if b"resource_tracker" not in Path(f"/proc/{c}/cmdline").read_bytes()]
        assert len(workers) == 2
        pairs = _pairs(4, seed=600)
        seen, deadline = set(), time.monotonic() + 60
        # /ready said 200 (ServerProcess waits for it) only once both workers were: every connection,
        # whichever worker it lands on, is served from now on
        while len(seen) < 2 and time.monotonic() < deadline:
            status, _, ready = call(server.port, "GET", "/ready")
            assert status == 200, ready
            assert ready["threads"] == max(1, physical_cores() // 2)
            seen.add(ready["pid"])
            status, _, body = call(server.port, "POST", "/predict", {"pairs": [list(p) for p in pairs]})
            assert status == 200, body
            np.testing.assert_allclose(body["probabilities"], clf.predict(pairs).probabilities, atol=1e-5)
            time.sleep(0.02)
        assert seen == {int(c) for c in workers}
    finally:
        assert server.stop() == 0, server.errors()


def test_ready_waits_for_every_live_worker(tiny_bundle, tmp_path):
    """A worker's /ready says 200 only once every worker of its server has marked itself ready; a dead
    worker's mark does not count."""
    from pairbert.serving.app import create_app
    from pairbert.serving.peers import Peers

    peers = Peers(tmp_path, workers=2)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    settings = ServeSettings(bundle=str(tiny_bundle), variant=VARIANT, threads=1)
    try:
        with in_process_server(create_app(settings, peers=peers)) as port:
            peers.mark(True, pid=int(dead.stdout))  # a worker that died after marking itself ready
            deadline = time.monotonic() + 120
            while (body := call(port, "GET", "/ready")[2])["status"] != "waiting for the other workers":
                assert body["status"] == "loading" and time.monotonic() < deadline, body
                time.sleep(0.05)
            assert (
                call(port, "GET", "/ready")[0] == 503 and body["workers_ready"] == 1 and body["workers"] == 2
            )
            assert call(port, "POST", "/predict", {"pairs": [["q", "a"]]})[0] == 200  # this worker serves
            peers.mark(True, pid=other.pid)  # the other worker is ready
            status, _, body = call(port, "GET", "/ready")
            assert status == 200 and body["status"] == "ready"
    finally:
        other.kill()
        other.wait()
    assert sorted(os.listdir(tmp_path)) == sorted([str(other.pid), dead.stdout.strip()])  # own mark removed


# --- cores from the container ------------------------------------------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_cgroup_v2_quota_caps_the_core_count(tmp_path):
    root = _tree(
        tmp_path / "cg",
        {
            "cpu.max": "max 100000\n",
            "kubepods/cpu.max": "max 100000\n",
            "kubepods/pod1/cpu.max": "250000 100000\n",
            "kubepods/pod1/ctr/cpu.max": "max 100000\n",
        },
    )
    proc = _tree(tmp_path, {"self_cgroup": "0::/kubepods/pod1/ctr\n"}) / "self_cgroup"
    assert cgroup_cpu_quota(root, proc) == 2.5  # the parent pod's limit binds the container
    uncapped = physical_cores(tmp_path / "absent", proc)
    assert physical_cores(root, proc) == min(uncapped, 2)
    (root / "kubepods/pod1/cpu.max").write_text("50000 100000\n")  # half a CPU: still one thread
    assert physical_cores(root, proc) == 1
    (root / "kubepods/pod1/cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(root, proc) is None and physical_cores(root, proc) == uncapped
    namespaced = _tree(tmp_path / "ns", {"cpu.max": "100000 100000\n"})  # path not under the root: root only
    assert cgroup_cpu_quota(namespaced, proc) == 1.0


def test_cgroup_v1_quota_caps_the_core_count(tmp_path):
    proc = (
        _tree(tmp_path, {"self_cgroup": "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n"}) / "self_cgroup"
    )
    root = _tree(
        tmp_path / "cg",
        {
            "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "100000\n",
            "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
            "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
            "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        },
    )
    assert cgroup_cpu_quota(root, proc) == 1.0 and physical_cores(root, proc) == 1
    (root / "cpu,cpuacct/docker/abc/cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(root, proc) is None


def test_workers_split_the_cores():
    def threads(workers, cores, explicit=None):
        return worker_threads(ServeSettings(bundle="b", workers=workers, threads=explicit), cores=cores)

    assert threads(1, 8) == 8 and threads(2, 8) == 4 and threads(3, 8) == 2 and threads(4, 2) == 1
    assert threads(2, 8, explicit=3) == 3


def test_serving_imports_runtime_only_never_torch():
    code = (
        "import sys; import pairbert.serving.server, pairbert.serving.app; "
        "heavy = ('torch', 'transformers', 'pairbert.training', 'pairbert.export'); "
        "bad = [m for m in heavy if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_load_benchmark_runs_end_to_end_and_stops_by_itself(tiny_bundle, tmp_path):
    from pairbert.benchmarks.serve_load import LoadSettings, run_load_benchmark

    report = run_load_benchmark(
        LoadSettings(
            str(tiny_bundle),
            str(tmp_path),
            clients=(1, 32),
            seconds=0.5,
            threads=1,
            rss_requests=60,
            pairs=16,
            overhead_rounds=2,
            overhead_requests=5,
        )
    )
    for key in ("server_batching_on", "server_batching_off"):
        runs = report[key]["runs"]
        assert [r["clients"] for r in runs] == [1, 32] and report[key]["exit_code"] == 0
        assert all(r["requests"] > 0 and set(r["statuses"]) == {"200"} for r in runs)
    on = report["server_batching_on"]
    assert on["rss_requests"] == 60 and on["rss_idle_mb"] > 0 and on["rss_after_mb"] > 0
    assert set(report["verdicts"]["measured"]) == set(report["verdicts"]["targets"])
    over = on["overhead_at_1"]  # alternating rounds; the 1-client verdict is their median difference
    assert len(over["rounds"]) == 2
    assert all(r["server_p50_ms"] > 0 and r["inprocess_p50_ms"] > 0 for r in over["rounds"])
    assert report["verdicts"]["measured"]["p50_overhead_ms_at_1"] == over["overhead_ms"]
    assert "p50_overhead_ms_at_1_sequential" in report["verdicts"]["context"]
    assert (tmp_path / "serve_load.json").exists()


def test_rank_checks_its_arguments(clf):
    from pairbert.runtime.predictor import PredictorError

    assert clf.rank("q", []) == []
    with pytest.raises(PredictorError, match="texts"):
        clf.rank("q", "one string")
    with pytest.raises(PredictorError, match="top_k"):
        clf.rank("q", ["a"], top_k=-1)
    with pytest.raises(PredictorError, match="query"):
        clf.rank(None, ["a"])
    ranked = clf.rank("what is the capital of france?", ["paris.", "eight legs.", "paris."], top_k=2)
    assert len(ranked) == 2 and ranked[0][1] >= ranked[1][1]
