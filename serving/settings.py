"""What `pairbert serve` is told: the bundle, where to listen, batching and limits. One frozen dataclass, so
a worker process rebuilds the same settings from JSON (uvicorn starts workers by import string)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from pairbert.runtime.errors import PairbertError


class SettingsError(PairbertError, ValueError):
    pass


@dataclass(frozen=True)
class ServeSettings:
    bundle: str
    host: str = "127.0.0.1"
    port: int = 8080
    variant: str = "auto"
    device: str = "auto"
    threads: int | None = None  # intra-op threads per worker (default: the cores, split between workers)
    workers: int = 1
    batching: bool = True  # False: each request runs alone (the baseline the load benchmark compares)
    max_wait_ms: float = 5.0  # longest a pair waits for others to fill its run
    max_batch_tokens: int = 4096  # tokens (summed over pairs) gathered from queued requests into one run
    max_batch_pairs: int = 256  # pairs gathered into one run
    max_queue_pairs: int = 4096  # pairs waiting; past this a request gets 503 + Retry-After
    max_request_pairs: int = 1024  # pairs (or rerank texts) in one request; past this 413
    max_text_chars: int = 20_000  # characters in one question, answer, query or text; past this 413
    max_body_bytes: int = 8 * 1024 * 1024  # request body; past this 413
    # Slow or stalled clients. A request whose head (request line and headers) is not complete within
    # header_timeout_s of its first byte gets 408 and is closed, and a new connection that sends nothing for
    # that long is closed: a client holding connections open with half a request line would otherwise keep
    # them (and the max_connections slots they take) forever. A request body that stops coming for
    # body_timeout_s, or that after 4 x body_timeout_s has come slower than 10 kB/s on average, gets 408
    # and its connection is closed.
    # On SIGTERM the server stops accepting, finishes what is in flight, and after graceful_shutdown_s
    # cancels whatever is still running (a client that does not read its answer, say), so it exits 0 inside
    # a Kubernetes grace period (30 s by default). max_connections caps open connections (and requests in
    # flight) per worker: past it uvicorn answers 503 text/plain "Service Unavailable" with Connection:
    # close (retry later, as with any 503); it stays under the usual 1024 open-file limit. Idle kept-alive
    # connections are closed after 5 s.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    graceful_shutdown_s: float = 20.0
    max_connections: int = 1000
    warmup: bool = True  # run a few shapes before /ready says yes

    def __post_init__(self) -> None:
        positive = (
            "workers",
            "max_batch_tokens",
            "max_batch_pairs",
            "max_queue_pairs",
            "max_request_pairs",
            "max_text_chars",
            "max_body_bytes",
            "max_connections",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise SettingsError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.threads is not None and self.threads < 1:
            raise SettingsError(f"threads must be a positive integer, got {self.threads!r}")
        if not 0 <= self.max_wait_ms <= 10_000:
            raise SettingsError(f"max-wait-ms must be between 0 and 10000, got {self.max_wait_ms!r}")
        for name in ("header_timeout_s", "body_timeout_s", "graceful_shutdown_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3600:
                raise SettingsError(
                    f"{name.replace('_', '-')} must be between 0 and 3600 seconds, got {value!r}"
                )
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"port must be between 0 and 65535, got {self.port!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
