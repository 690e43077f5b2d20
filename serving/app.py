"""The ASGI app of `pairbert serve`: /predict, /rerank, /health, /ready, /metrics.

The bundle loads and warms up in a thread after the server is listening: /health answers at once, /ready
says 503 until the predictor has run its first shapes. A bundle that cannot be loaded calls `on_fatal` with
the error (the server then stops; the CLI prints it as one line)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from contextlib import asynccontextmanager

try:
    import prometheus_client  # noqa: F401
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised where the extra is missing
    raise ImportError(
        f"pairbert serve needs starlette, uvicorn and prometheus-client ({exc.name} is missing). "
        "Install the serving extra: pip install 'pairbert[serve]'"
    ) from exc
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pairbert.runtime.errors import PairbertError
from pairbert.runtime.predictor import DEFAULT_MAX_BATCH_TOKENS

from .batcher import DynamicBatcher, NotRunning, QueueFull
from .metrics import Metrics
from .peers import Peers
from .schema import (
    Limits,
    RequestError,
    add_to_body,
    check_body_headers,
    parse_json,
    predict_pairs,
    prediction_body,
    rerank_body,
    rerank_request,
)
from .settings import ServeSettings

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1
# after 4 x body_timeout_s, a body must have come in at least this fast on average (8 MiB: ~14 min)
MIN_BODY_BYTES_PER_S = 10_000
_RETRY = {"Retry-After": str(RETRY_AFTER_S)}
WARMUP_PAIR = ("how long should i boil an egg?", "about six minutes for a soft yolk.")


class ServerState:
    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.limits = Limits(settings.max_request_pairs, settings.max_text_chars)
        self.classifier = None
        self.batcher: DynamicBatcher | None = None
        self.error: BaseException | None = None
        self.status = "loading"  # loading → ready → stopping; or failed
        self.peers: Peers | None = None
        self.metrics = Metrics(lambda: self.batcher.stats.queued_pairs if self.batcher else 0)


def warm_up(classifier, max_pairs: int = 256) -> None:
    """Run the shapes the first requests will have (1 pair, a batch, the longest pair) so they do not pay
    ONNX Runtime's first-run costs, then full runs at the token budget (the predictor's `max_batch_tokens`,
    at most `max_pairs` pairs a run), as TEI warms up at its largest batch: a backend that keeps buffers for
    the largest shape it has run (OpenVINO) takes that memory before /ready, not over the first thousand
    requests. Those runs have texts of t - 2 words for t in 16, 32, ..., 512 below max_length and
    max_length itself, so each order of a towers feed is about t tokens with [CLS] and [SEP] (a whole-pair
    feed truncates the pair to max_length), both sides alike and one side short. With no token budget
    (`max_batch_tokens` None) they use the predictor's default, 1,024. Each run's questions differ (their
    first two words are a run index's digits), so the question's branch runs every row as the answers' does
    (pairs sharing a question feed it once)."""
    max_length = classifier.encoder.max_length
    long_text = " ".join(["word"] * max_length)
    qa, aq = classifier.encoder.tokenize([WARMUP_PAIR[0]], [WARMUP_PAIR[1]])
    classifier.predict_encoded(qa, aq)  # the requests' own path (it reads the tokenizer's id bound once)
    classifier.predict([WARMUP_PAIR] * 32, batch_size=32)
    classifier.predict([(long_text, long_text)])
    classifier.predict([("hi", long_text)])  # the longest a cut (towers) feed gets: one side near max_length
    budget = classifier.max_batch_tokens or DEFAULT_MAX_BATCH_TOKENS
    for tokens in sorted({t for t in (16, 32, 64, 128, 256, 512) if t < max_length} | {max_length}):
        text, short = " ".join(["word"] * (tokens - 2)), "word"
        pairs = max(1, min(max_pairs, budget // tokens))
        for question, answer in ((text, text), (short, text), (text, short)):
            batch = [(_numbered(question, i), answer) for i in range(pairs)]
            classifier.predict(batch, batch_size=pairs)


def _numbered(text: str, i: int) -> str:
    """`text` with its first two words the digits of i mod 100 (before it, if it has fewer than three words):
    at the start, where truncating a pair that is too long does not reach."""
    words = text.split()
    return " ".join([str(i // 10 % 10), str(i % 10)] + (words[2:] if len(words) > 2 else words))


def _error(status: int, message: str, field: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(RequestError(status, message, field).body(), status_code=status, headers=headers)


class _Stalled(RequestError):
    """The body did not arrive in time: answered 408 and the connection closed (its unread rest is junk)."""


async def _read_body(request: Request, settings: ServeSettings) -> bytes:
    """The whole body, or 408 when it stops coming for settings.body_timeout_s (or trickles in below
    MIN_BODY_BYTES_PER_S once 4 x that has passed); a body past max_body_bytes, 413; a compressed one, 415
    (before reading it)."""
    limit = settings.max_body_bytes
    check_body_headers(request.headers, limit)
    declared = request.headers.get("content-length")
    chunks: list[bytes] = []
    idle = settings.body_timeout_s
    loop = asyncio.get_running_loop()
    started, size = loop.time(), 0
    stream = request.stream().__aiter__()
    of = f" of {declared}" if declared is not None else ""
    try:
        while True:
            try:  # a client still sending is given time; one that stops for body_timeout_s is not
                chunk = await asyncio.wait_for(stream.__anext__(), idle)
            except StopAsyncIteration:
                break
            size = add_to_body(chunks, size, chunk, limit)
            if loop.time() - started > max(4 * idle, idle + size / MIN_BODY_BYTES_PER_S):  # a trickle too
                raise _Stalled(
                    408, f"the body is arriving slower than {MIN_BODY_BYTES_PER_S} bytes/s ({size}{of} came)"
                )
    except asyncio.TimeoutError:
        raise _Stalled(408, f"no body bytes arrived for {idle:g} s ({size}{of} bytes came)") from None
    except ClientDisconnect:  # nobody to answer; not a server error either
        raise RequestError(400, "the client disconnected before sending the whole body") from None
    return b"".join(chunks)


CLIENT_GONE = 499  # nginx's "client closed request": what /metrics counts a request whose client left as


async def _while_connected(request: Request, work):
    """Await `work` unless the client disconnects first: then it is cancelled (a queued request's pairs are
    withdrawn, never run) and a RequestError with status CLIENT_GONE raised (its answer goes nowhere). The
    body has been read, so the next ASGI message is the disconnect."""
    task = asyncio.ensure_future(work)

    async def disconnected():
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watch = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when this request is cancelled (the graceful shutdown ran out)
        watch.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})  # its cancellation runs: a queued job is withdrawn
    if task.cancelled():
        raise RequestError(CLIENT_GONE, "the client disconnected before its pairs ran")
    return task.result()


async def _probabilities(state: ServerState, request: Request, pairs: list[tuple[str, str]], field: str):
    """Queue the pairs with the batcher; raise RequestError for a full queue or a server not ready, and 413
    for more pairs than the queue can ever hold (`field` names the list in the request), and CLIENT_GONE if
    the client disconnects before they ran."""
    queue = state.settings.max_queue_pairs
    if len(pairs) > queue:  # only where max-queue-pairs < max-request-pairs; retrying would never help
        raise RequestError(
            413,
            f"{field} has {len(pairs)} items, more than the queue ever holds ({queue}, max-queue-pairs; "
            f"max-request-pairs is {state.settings.max_request_pairs})",
            field,
        )
    if state.status != "ready" or state.batcher is None:
        raise RequestError(503, f"not ready ({state.status})")
    questions = [q for q, _ in pairs]
    answers = [a for _, a in pairs]
    encoder = state.classifier.encoder
    try:
        state.batcher.check_room(len(pairs))  # a request the queue refuses is not tokenized first
        # Tokenized once, here: the token count sizes the batch, and the encodings go on to the predictor.
        if len(pairs) > 8:  # tokenizing many pairs takes milliseconds: not on the event loop
            qa, aq = await asyncio.to_thread(encoder.tokenize, questions, answers)
        else:
            qa, aq = encoder.tokenize(questions, answers)
        tokens = sum(map(encoder.fed_length, qa, aq))
        return await _while_connected(request, state.batcher.submit(qa, aq, tokens))
    except QueueFull as exc:
        raise RequestError(503, str(exc)) from None
    except NotRunning as exc:
        raise RequestError(503, str(exc)) from None


def _routes(state: ServerState) -> list[Route]:
    async def predict(request: Request) -> Response:
        payload = parse_json(await _read_body(request, state.settings))
        pairs = predict_pairs(payload, state.limits)
        names = state.classifier.label_names if state.classifier else ()
        if not pairs:
            return JSONResponse(prediction_body([], [], names))
        probabilities = await _probabilities(state, request, pairs, "pairs")
        return JSONResponse(prediction_body(probabilities.argmax(-1), probabilities, names))

    async def rerank(request: Request) -> Response:
        payload = parse_json(await _read_body(request, state.settings))
        req = rerank_request(payload, state.limits)
        if not req.texts:
            return JSONResponse([])
        probabilities = await _probabilities(state, request, [(req.query, t) for t in req.texts], "texts")
        return JSONResponse(rerank_body(probabilities[:, -1], req.top_n))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def ready(request: Request) -> Response:
        body = {"status": state.status}
        peers = state.peers
        if state.status == "ready" and peers is not None and (count := peers.ready()) < peers.workers:
            body.update(status="waiting for the other workers", workers_ready=count, workers=peers.workers)
            return JSONResponse(body, status_code=503)
        if state.status == "ready":
            clf = state.classifier
            body.update(
                variant=clf.variant,
                provider=clf.provider,
                threads=clf.threads,
                batching=state.settings.batching,
                pid=os.getpid(),
            )
            return JSONResponse(body)
        if state.error is not None:
            body["error"] = str(state.error)
        return JSONResponse(body, status_code=503)

    async def metrics(request: Request) -> Response:
        data, content_type = state.metrics.render()
        return Response(data, media_type=content_type)

    return [
        Route("/predict", predict, methods=["POST"]),
        Route("/rerank", rerank, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]


class _MetricsMiddleware:
    """Counts every answer by endpoint and status, and times it (pure ASGI: sees 4xx/5xx from any layer).

    It also answers a request that uvicorn cancels (still running graceful_shutdown_s after SIGTERM) with a
    503 JSON the client can retry elsewhere, instead of uvicorn's text/plain 500 and a logged traceback."""

    def __init__(self, app, state: ServerState):
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status, started = 500, False

        async def record(message):
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, record)
        except asyncio.CancelledError:
            if started:  # the answer had begun: nothing better to send
                raise
            log.warning("%s cancelled: still running when the graceful shutdown ran out", scope.get("path"))
            stopped = _error(503, "the server stopped before this request finished; retry", None, _RETRY)
            await stopped(scope, receive, record)
        finally:
            self.state.metrics.observe_request(scope.get("path", ""), status, time.perf_counter() - start)


def _default_loader(settings: ServeSettings, threads: int | None) -> Callable[[], object]:
    def load():
        from pairbert.runtime.predictor import PairClassifier

        return PairClassifier.load(
            settings.bundle, variant=settings.variant, device=settings.device, threads=threads
        )

    return load


async def _start(state: ServerState, loader: Callable[[], object], on_fatal: Callable[[BaseException], None]):
    s = state.settings

    def predict(qa, aq):
        return state.classifier.predict_encoded(qa, aq, batch_size=s.max_batch_pairs).probabilities

    batcher = DynamicBatcher(
        predict,
        batching=s.batching,
        max_wait_ms=s.max_wait_ms,
        max_batch_tokens=s.max_batch_tokens,
        max_batch_pairs=s.max_batch_pairs,
        max_queue_pairs=s.max_queue_pairs,
    )
    try:
        clf = state.classifier = await batcher.run_on_worker(loader)
        if s.warmup:
            await batcher.run_on_worker(lambda: warm_up(clf, s.max_batch_pairs))
    except Exception as exc:
        if not isinstance(exc, PairbertError):
            log.exception("loading %s failed", s.bundle)
        state.status, state.error = "failed", exc
        await batcher.close()
        on_fatal(exc)
        return
    batcher.stats.observers.append(state.metrics.observe_run)
    state.batcher = batcher
    batcher.start()
    state.status = "ready"
    state.metrics.ready.set(1)
    if state.peers is not None:
        state.peers.mark(True)
    log.info(
        "pairbert serve: ready (variant %s on %s, %d threads, batching %s)",
        clf.variant,
        clf.provider,
        clf.threads,
        "on" if s.batching else "off",
    )


def create_app(
    settings: ServeSettings,
    loader: Callable[[], object] | None = None,
    on_fatal: Callable[[BaseException], None] | None = None,
    threads: int | None = None,
    peers: Peers | None = None,
):
    """The app. `loader` returns the predictor (default: PairClassifier.load with the settings and
    `threads`); it runs in a thread after the server starts listening. `peers`: the other workers of the
    same server (/ready waits for all of them)."""
    state = ServerState(settings)
    state.peers = peers
    loader = loader or _default_loader(settings, threads if threads is not None else settings.threads)
    on_fatal = on_fatal or (lambda exc: None)

    @asynccontextmanager
    async def lifespan(app):
        starting = asyncio.create_task(_start(state, loader, on_fatal))
        try:
            yield
        finally:
            state.status = "stopping" if state.status != "failed" else state.status
            state.metrics.ready.set(0)
            if state.peers is not None:
                state.peers.mark(False)
            if not starting.done():
                await asyncio.wait([starting])  # a load in its thread cannot be interrupted; let it end
            if state.batcher is not None:
                await state.batcher.close()
            close = getattr(state.classifier, "close", None)
            if callable(close):
                close()

    async def request_error(request: Request, exc: RequestError) -> Response:
        headers = _RETRY if exc.status == 503 else None
        if isinstance(exc, _Stalled):
            headers = {"Connection": "close"}  # uvicorn then closes the connection after the answer
        return _error(exc.status, exc.message, exc.field, headers)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error(exc.status_code, exc.detail, headers=exc.headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        return _error(500, f"internal error: {type(exc).__name__}")

    app = Starlette(
        routes=_routes(state),
        lifespan=lifespan,
        exception_handlers={RequestError: request_error, HTTPException: http_error, Exception: server_error},
    )
    # `/predict/` is a 404 like any unknown path, not a 307 whose Location echoes the request's Host header
    app.router.redirect_slashes = False
    app.state.pairbert = state
    return _MetricsMiddleware(app, state)
