"""pairbert on Ray Serve: the same predictor in N replicas, on one machine or a cluster, with Ray's request
batching (`@serve.batch`) and autoscaling. Needs `pairbert[ray]`.

    serve run serving/ray_config.yaml                    # a local Ray started on the fly
    ray start --head && serve deploy serving/ray_config.yaml   # a long-lived cluster (add nodes with
                                                         # `ray start --address HEAD:6379`)
    python -c "from ray import serve; from pairbert.serving.ray_app import build_app; \\
               serve.run(build_app({'bundle': 'bundles/default', 'num_replicas': 2}))"

Requests and answers are those of `pairbert serve` (/predict, /rerank, /health, /ready; the same checks
and error bodies, from serving.schema); metrics come from Ray's own Prometheus endpoint."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os

try:
    import ray
    from ray import serve
except ImportError as exc:  # pragma: no cover - exercised where the extra is missing
    raise ImportError(
        f"pairbert.serving.ray_app needs Ray Serve ({exc.name} is missing). "
        "Install the Ray extra: pip install 'pairbert[ray]'"
    ) from exc
from starlette.requests import Request
from starlette.responses import JSONResponse

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

log = logging.getLogger(__name__)

DEPLOYMENT = "PairbertDeployment"


@serve.deployment(name=DEPLOYMENT, max_ongoing_requests=64)
class PairbertDeployment:
    def __init__(
        self,
        bundle: str,
        variant: str = "auto",
        threads: int | None = None,
        max_batch_size: int = 32,
        batch_wait_timeout_s: float = 0.005,
        max_request_pairs: int = 1024,
        max_text_chars: int = 20_000,
        max_body_bytes: int = 8 * 1024 * 1024,
    ):
        from pairbert.runtime.predictor import PairClassifier

        from .app import warm_up

        if threads is None:  # the CPUs Ray gave this replica (ray_actor_options.num_cpus), at least one
            threads = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
        self.classifier = PairClassifier.load(bundle, variant=variant, device="cpu", threads=threads)
        warm_up(self.classifier)
        self.limits = Limits(max_request_pairs, max_text_chars)
        self.max_body_bytes = max_body_bytes
        self.predict_batch.set_max_batch_size(max_batch_size)
        self.predict_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self.pid = str(os.getpid())

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def predict_batch(self, requests: list[list[tuple[str, str]]]) -> list:
        """One predictor call for the pairs of every request Ray gathered; each gets its own rows back."""
        flat = [pair for pairs in requests for pair in pairs]
        probabilities = await asyncio.to_thread(
            lambda: self.classifier.predict(flat, batch_size=32).probabilities
        )
        out, start = [], 0
        for pairs in requests:
            out.append(probabilities[start : start + len(pairs)])
            start += len(pairs)
        return out

    async def __call__(self, request: Request) -> JSONResponse:
        headers = {"x-pairbert-replica": self.pid}
        try:
            return JSONResponse(await self._route(request), headers=headers)
        except RequestError as exc:
            return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    async def _route(self, request: Request):
        path = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        if request.method == "GET" and path in ("health", "ready"):
            clf = self.classifier
            return {"status": "ready", "variant": clf.variant, "threads": clf.threads, "pid": int(self.pid)}
        if request.method != "POST" or path not in ("predict", "rerank"):
            raise RequestError(404, f"no endpoint {request.method} {request.url.path}")
        payload = parse_json(await self._bounded_body(request))
        if path == "predict":
            pairs = predict_pairs(payload, self.limits)
            names = self.classifier.label_names
            if not pairs:
                return prediction_body([], [], names)
            probabilities = await self.predict_batch(pairs)
            return prediction_body(probabilities.argmax(-1), probabilities, names)
        req = rerank_request(payload, self.limits)
        if not req.texts:
            return []
        probabilities = await self.predict_batch([(req.query, t) for t in req.texts])
        return rerank_body(probabilities[:, -1], req.top_n)

    async def _bounded_body(self, request: Request) -> bytes:
        """The body, refused with 413 as soon as it is known to pass max_body_bytes (its Content-Length, else
        the bytes counted as they come): a replica never holds more than the limit of one request."""
        check_body_headers(request.headers, self.max_body_bytes)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size = add_to_body(chunks, size, chunk, self.max_body_bytes)
        return b"".join(chunks)


def build_app(args: dict):
    """The application for `serve run` / `serve deploy` config files (`args:` there) and for serve.run.
    Keys: bundle (required), variant, threads, max_batch_size, batch_wait_timeout_s, max_request_pairs,
    max_text_chars, max_body_bytes, num_replicas (ignored when the config file sets autoscaling), num_cpus."""
    args = dict(args)
    if "bundle" not in args:
        raise ValueError("build_app needs args['bundle'], the bundle folder every replica loads")
    options = {}
    if "num_replicas" in args:
        options["num_replicas"] = int(args.pop("num_replicas"))
    if "num_cpus" in args:
        options["ray_actor_options"] = {"num_cpus": float(args.pop("num_cpus"))}
    known = set(inspect.signature(PairbertDeployment.func_or_class.__init__).parameters) - {"self"}
    unknown = sorted(set(args) - known)
    if unknown:  # here, not as a TypeError inside every replica's constructor at deploy time
        raise ValueError(f"build_app: unknown key(s) {unknown}; known: {sorted(known)}")
    deployment = PairbertDeployment.options(**options) if options else PairbertDeployment
    return deployment.bind(**args)
