"""Prometheus metrics of one server process, in a registry of its own (two apps in one process, as in the
tests, do not collide). With several worker processes each answers /metrics for itself."""

from __future__ import annotations

from collections.abc import Callable

ENDPOINTS = ("/predict", "/rerank", "/health", "/ready", "/metrics")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PAIR_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self, queue_depth: Callable[[], float]):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "pairbert_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "pairbert_request_duration_seconds",
            "Time from request to response",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_pairs = Histogram(
            "pairbert_batch_pairs",
            "Pairs per predictor run (across requests)",
            buckets=PAIR_BUCKETS,
            registry=self.registry,
        )
        self.batch_tokens = Histogram(
            "pairbert_batch_tokens",
            "Tokens per predictor run",
            buckets=tuple(16 * 2**i for i in range(12)),
            registry=self.registry,
        )
        self.queue = Gauge("pairbert_queue_pairs", "Pairs waiting for a run", registry=self.registry)
        self.queue.set_function(queue_depth)
        self.ready = Gauge(
            "pairbert_ready", "1 once the bundle is loaded and warmed up", registry=self.registry
        )

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        endpoint = path if path in ENDPOINTS else "other"  # bounded label values whatever clients ask for
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_run(self, pairs: int, tokens: int) -> None:
        self.batch_pairs.observe(pairs)
        self.batch_tokens.observe(tokens)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
