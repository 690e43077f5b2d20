"""Running the app: one process (uvicorn.Server) or several worker processes that split the cores.

The listening socket is bound here, before uvicorn starts, so `--port 0` works (the chosen port is printed)
and the workers share it. SIGTERM: uvicorn stops accepting, finishes the requests in flight (a stalled body
gets 408 after body_timeout_s; anything still running after graceful_shutdown_s is cancelled), the batcher
drains, and the process exits 0."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile

from pairbert.runtime.devices import physical_cores
from pairbert.runtime.errors import PairbertError

from .app import create_app
from .peers import Peers
from .settings import ServeSettings

log = logging.getLogger(__name__)

SETTINGS_ENV = "PAIRBERT_SERVE_SETTINGS"
THREADS_ENV = "PAIRBERT_SERVE_THREADS"
PEERS_ENV = "PAIRBERT_SERVE_READY_DIR"  # where the workers mark themselves ready (serving/peers.py)
WORKER_LOAD_FAILED = 3  # uvicorn's STARTUP_FAILURE exit code


class ServeError(PairbertError, RuntimeError):
    pass


def worker_threads(settings: ServeSettings, cores: int | None = None) -> int:
    """Intra-op threads for each worker: --threads, or the cores (cgroup quota and affinity honoured)
    split evenly between the worker processes, at least one each."""
    if settings.threads is not None:
        return settings.threads
    cores = physical_cores() if cores is None else cores
    if settings.workers > cores:
        log.warning(
            "%d workers on %d cores: each gets one thread and they will compete", settings.workers, cores
        )
    return max(1, cores // settings.workers)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class _OneSendTransport:
    """The connection's transport, except that what is written in one event-loop step leaves in one send():
    uvicorn writes a response's status line and headers, then its body, as two writes, which on loopback
    is two segments and two wake-ups of the client for every answer. Everything else is the transport's."""

    def __init__(self, transport, loop):
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def _flush(self) -> None:
        data, self._pending = b"".join(self._pending), []
        if data and not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def __getattr__(self, name):
        return getattr(self._transport, name)


MAX_HEAD_BYTES = 64 * 1024  # a request's line and headers (uvicorn's h11 protocol has the same bound)
# After refusing a request that is still arriving, the connection reads and drops what comes for this long
# before it closes: closed at once with unread bytes, the kernel resets it, and the client may get the reset
# instead of the answer.
LINGER_S = 2.0


class HeadTooBig(Exception):
    """Raised from the parser's callbacks when a request's line and headers pass MAX_HEAD_BYTES."""


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is in the serve extra; uvicorn then uses h11
    HttpToolsProtocol = None


if HttpToolsProtocol is not None:

    class OneSendHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol writing each answer in one send(), with bounds on each request's
        head (module level: worker processes receive the config pickled). uvicorn bounds only an idle
        kept-alive connection: once a byte of a request arrives it waits for the rest of its line and
        headers forever, however many bytes they take (h11's size option does not apply to httptools).

        A head is the bytes from a request's first byte (`on_message_begin`) to the end of its headers
        (`on_headers_complete`); a body, and the wait between requests, are not. Each head must end within
        `header_timeout_s` of its first byte (408), and within MAX_HEAD_BYTES (431): the URL and each header
        (name, value and 4 bytes) are counted as the parser hands them over, whatever the reads they came
        in, and a head still arriving by the reads that end inside it, which bounds what the parser holds
        of a header not yet complete. A new connection that sends nothing for `header_timeout_s` is closed
        without an answer, as uvicorn closes an idle kept-alive one."""

        def __init__(self, *args, header_timeout_s: float = 10.0, **kwargs):
            super().__init__(*args, **kwargs)
            self.header_timeout_s = header_timeout_s
            self._head_deadline = None
            self._in_head = False
            self._head_bytes = 0
            self._parsed_head_bytes = 0
            self._head_too_big = False
            self._refused = None  # the lingering close's timer once a request is refused

        def connection_made(self, transport) -> None:
            super().connection_made(_OneSendTransport(transport, self.loop))
            self._arm_head_deadline()  # a connection that never sends a byte is bounded too

        def data_received(self, data: bytes) -> None:
            if self._refused is not None:  # answered and closing: the rest is dropped unread
                return
            in_head = self._in_head
            super().data_received(data)
            if in_head and self._in_head and not self.transport.is_closing():  # all of `data` was head
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self._refuse_head_too_big()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head, self._head_bytes, self._parsed_head_bytes = True, 0, 0
            self._arm_head_deadline()

        def on_url(self, url: bytes) -> None:
            self._parsed(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._parsed(len(name) + len(value) + 4)  # ": " and CRLF
            super().on_header(name, value)

        def _parsed(self, n: int) -> None:
            self._parsed_head_bytes += n
            if self._parsed_head_bytes > MAX_HEAD_BYTES:  # before the request reaches the app
                self._head_too_big = True
                raise HeadTooBig  # httptools makes it a parser error: uvicorn calls send_400_response

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._disarm_head_deadline()  # the body has its own timeout (app.py)
            super().on_headers_complete()

        def connection_lost(self, exc) -> None:
            self._disarm_head_deadline()
            if self._refused is not None:
                self._refused.cancel()
            super().connection_lost(exc)

        def _arm_head_deadline(self) -> None:
            self._disarm_head_deadline()
            self._head_deadline = self.loop.call_later(self.header_timeout_s, self._head_too_slow)

        def _disarm_head_deadline(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

        def _head_too_slow(self) -> None:
            self._head_deadline = None
            if self.transport.is_closing():
                return
            if self._in_head:
                self._refuse(
                    b"408 Request Timeout",
                    f"the request line and headers did not arrive within {self.header_timeout_s:g} s",
                )
            elif self.cycle is None:  # a new connection that never sent a byte: nothing to answer
                self.transport.close()

        def _refuse(self, status: bytes, message: str) -> None:
            """Answer a request that never reached the app in JSON like every other error, and close: the
            answer and end-of-file are sent at once, the rest of what the client sends is dropped, and the
            connection closes LINGER_S later (or when the client closes it)."""
            self._disarm_head_deadline()
            self._in_head = False
            body = json.dumps({"error": message}).encode()
            self.transport.write(
                b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
            )
            if self.transport.can_write_eof():
                self.transport.write_eof()
                self._refused = self.loop.call_later(LINGER_S, self.transport.close)
            else:  # pragma: no cover - TCP transports can
                self._refused = self.loop.call_soon(self.transport.close)

        def send_400_response(self, msg: str) -> None:
            """Bytes that are not HTTP: the 400 in JSON like every other error (uvicorn's is text/plain);
            a head over the bound (HeadTooBig, raised from a parser callback): 431."""
            if self._head_too_big:
                self._refuse_head_too_big()
            else:
                self._refuse(b"400 Bad Request", f"malformed HTTP request ({msg.rstrip('.')})")

        def _refuse_head_too_big(self) -> None:
            self._refuse(
                b"431 Request Header Fields Too Large",
                f"the request line and headers are over {MAX_HEAD_BYTES} bytes",
            )


def _http_protocol(settings: ServeSettings):
    if HttpToolsProtocol is None:
        log.warning("httptools is not installed: --header-timeout and the 64 KiB head bound do not apply")
        return "auto"
    return functools.partial(OneSendHttpToolsProtocol, header_timeout_s=settings.header_timeout_s)


def _uvicorn_config(app, settings: ServeSettings, **extra):
    import uvicorn

    return uvicorn.Config(
        app,
        http=_http_protocol(settings),
        host=settings.host,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_keep_alive=5,
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
        # uvicorn answers 503 once its count (which includes the asking connection) reaches the limit
        limit_concurrency=settings.max_connections + 1,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        **extra,
    )


def serve(settings: ServeSettings) -> None:
    """Serve until SIGTERM/SIGINT. Raises the loader's PairbertError when the bundle cannot be used."""
    from pairbert.runtime.bundle import read_manifest, require_variant

    manifest = read_manifest(settings.bundle)  # a missing folder or a bad manifest stops us before we listen
    if settings.variant != "auto":  # and so does a variant the bundle does not have
        require_variant(settings.bundle, manifest, settings.variant)
    threads = worker_threads(settings)
    if settings.workers > 1:  # check the bundle once here, so a bad one stops us before any worker starts
        _check_bundle(settings)
    sock = bind(settings.host, settings.port)
    port = sock.getsockname()[1]
    print(
        f"pairbert serve: listening on http://{settings.host}:{port} ({settings.workers} worker(s), "
        f"{threads} thread(s) each, batching {'on' if settings.batching else 'off'}); "
        "GET /ready says when the bundle is loaded",
        flush=True,
    )
    # uvicorn re-raises a caught SIGTERM/SIGINT after its graceful shutdown; with this handler in place
    # that re-raise is a no-op and the process exits 0 once the requests in flight are answered.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if settings.workers == 1:
            _serve_one(settings, sock, threads)
        else:
            _serve_many(settings, sock, threads)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()


def _serve_one(settings: ServeSettings, sock: socket.socket, threads: int) -> None:
    import uvicorn

    fatal: list[BaseException] = []

    def on_fatal(exc: BaseException) -> None:
        fatal.append(exc)
        server.should_exit = True

    server = uvicorn.Server(
        _uvicorn_config(create_app(settings, on_fatal=on_fatal, threads=threads), settings)
    )
    server.run(sockets=[sock])
    if fatal:
        exc = fatal[0]
        raise exc if isinstance(exc, PairbertError) else ServeError(f"loading the bundle failed: {exc}")


def _serve_many(settings: ServeSettings, sock: socket.socket, threads: int) -> None:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    os.environ[SETTINGS_ENV] = settings.to_json()
    os.environ[THREADS_ENV] = str(threads)
    peers_dir = tempfile.mkdtemp(prefix="pairbert-serve-ready-")
    os.environ[PEERS_ENV] = peers_dir
    config = _uvicorn_config(
        "pairbert.serving.server:worker_app", settings, factory=True, workers=settings.workers
    )
    if "target" in inspect.signature(Multiprocess).parameters:  # older uvicorn takes the worker target itself
        supervisor = Multiprocess(config, target=uvicorn.Server(config).run, sockets=[sock])
    else:
        supervisor = Multiprocess(config, sockets=[sock])
    try:
        supervisor.run()
    finally:
        shutil.rmtree(peers_dir, ignore_errors=True)
    failed = [p.pid for p in supervisor.processes if p.exitcode == WORKER_LOAD_FAILED]
    if failed:
        raise ServeError(f"worker(s) {', '.join(map(str, failed))} could not load the bundle (error above)")


def worker_app():
    """The app in each worker process (uvicorn imports this by name in the spawned process)."""
    settings = ServeSettings.from_json(os.environ[SETTINGS_ENV])

    def on_fatal(exc: BaseException) -> None:
        # Nothing is in flight (not ready: every request was answered 503). The exit code tells uvicorn's
        # supervisor this worker failed at start-up, so it stops instead of restarting it forever.
        print(f"pairbert serve: worker {os.getpid()}: error: {exc}", file=sys.stderr, flush=True)
        os._exit(WORKER_LOAD_FAILED)

    peers = Peers(os.environ[PEERS_ENV], settings.workers)
    return create_app(settings, on_fatal=on_fatal, threads=int(os.environ[THREADS_ENV]), peers=peers)


def _check_bundle(settings: ServeSettings) -> None:
    from pairbert.runtime.predictor import PairClassifier

    clf = PairClassifier.load(settings.bundle, variant=settings.variant, device=settings.device, threads=1)
    close = getattr(clf, "close", None)
    if callable(close):
        close()
    del clf
