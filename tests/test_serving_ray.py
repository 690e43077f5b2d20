"""The Ray Serve deployment on a real local Ray cluster: 2 replicas behind Ray's HTTP proxy on 127.0.0.1,
answers equal to the in-process predictor's. Slow (Ray starts in ~20 s) and needs `pairbert[ray]`, which
`make install` does not bring (about 490 MB): CI installs it and runs this file with `-m slow`."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers import varied_pairs

from pairbert.runtime.predictor import PairClassifier

# Imported inside the tests, so `make test` (which deselects slow tests) never reports this file as skipped.
pytestmark = pytest.mark.slow

VARIANT = "optimized"  # fp32: answers independent of how requests were batched together
MAX_BODY = 64 * 1024  # small, so the 413 checks send little
CONFIG = Path(__file__).resolve().parents[1] / "serving" / "ray_config.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, path: str, body: object) -> tuple[int, dict, object]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


@pytest.fixture(scope="module")
def ray_app(tiny_bundle):
    ray = pytest.importorskip("ray", reason="needs pairbert[ray]")
    from ray import serve

    from pairbert.serving.ray_app import DEPLOYMENT, build_app

    port = _free_port()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(
            build_app(
                {
                    "bundle": str(tiny_bundle),
                    "variant": VARIANT,
                    "threads": 1,
                    "num_replicas": 2,
                    "num_cpus": 1,
                    "max_body_bytes": MAX_BODY,
                }
            ),
            name="pairbert",
            route_prefix="/",
        )
        yield port, DEPLOYMENT
    finally:
        serve.shutdown()
        ray.shutdown()


def test_two_replicas_answer_like_the_in_process_predictor(ray_app, tiny_bundle):
    from ray import serve

    port, deployment = ray_app
    status = serve.status().applications["pairbert"].deployments[deployment]
    assert status.replica_states.get("RUNNING") == 2
    clf = PairClassifier.load(tiny_bundle, variant=VARIANT, threads=1)
    requests = [
        [(r["question"], r["answer"]) for r in varied_pairs(1 + k % 3, seed=700 + k)] for k in range(32)
    ]
    answers: dict[int, tuple] = {}

    def send(k: int) -> None:
        answers[k] = _post(port, "/predict", {"pairs": [list(p) for p in requests[k]]})

    threads = [threading.Thread(target=send, args=(k,)) for k in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    replicas = set()
    for k, pairs in enumerate(requests):
        code, headers, body = answers[k]
        assert code == 200, body
        np.testing.assert_allclose(body["probabilities"], clf.predict(pairs).probabilities, atol=1e-5)
        assert body["labels"] == clf.predict(pairs).labels.tolist()
        replicas.add(headers["x-pairbert-replica"])
    deadline = time.monotonic() + 60
    while len(replicas) < 2 and time.monotonic() < deadline:  # the router spreads load; bounded retries
        replicas.add(_post(port, "/predict", {"pairs": [["a", "b"]]})[1]["x-pairbert-replica"])
    assert len(replicas) == 2

    query, texts = "what is the capital of france?", ["paris is the capital.", "a spider has eight legs."]
    code, _, ranked = _post(port, "/rerank", {"query": query, "texts": texts})
    assert code == 200 and [(r["index"], pytest.approx(r["score"], abs=1e-5)) for r in ranked] == clf.rank(
        query, texts
    )
    code, _, error = _post(port, "/predict", {"pairs": [["a", 7]]})
    assert code == 422 and error["field"] == "pairs[0][1]"


def _post_raw(port: int, body, headers: dict) -> tuple[int, dict]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/predict", data=body, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_bodies_over_the_limit_are_refused_without_holding_them(ray_app):
    port, _ = ray_app
    big = json.dumps({"pairs": [["q" * 100, "a" * 100]] * 400}).encode()  # ~82 kB > MAX_BODY
    assert len(big) > MAX_BODY
    code, error = _post_raw(port, big, {"Content-Type": "application/json"})
    assert code == 413 and f"the limit is {MAX_BODY}" in error["error"]
    # chunked (no Content-Length): counted as it comes
    chunks = (big[i : i + 8192] for i in range(0, len(big), 8192))
    code, error = _post_raw(
        port, chunks, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    )
    assert code == 413 and f"over the limit of {MAX_BODY} bytes" in error["error"]
    code, body = _post_raw(port, json.dumps({"pairs": [["a", "b"]]}).encode(), {})
    assert code == 200 and len(body["labels"]) == 1  # and it keeps serving


def test_build_app_names_an_unknown_key():
    pytest.importorskip("ray", reason="needs pairbert[ray]")
    from pairbert.serving.ray_app import build_app

    with pytest.raises(ValueError, match=r"unknown key\(s\) \['varaint'\]"):
        build_app({"bundle": "b", "varaint": "fp32"})


def test_the_config_file_is_a_valid_serve_config():
    pytest.importorskip("ray", reason="needs pairbert[ray]")
    import yaml
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load(CONFIG.read_text()))
    app = config.applications[0]
    assert app.import_path == "pairbert.serving.ray_app:build_app" and "bundle" in app.args
    assert app.deployments[0].autoscaling_config["max_replicas"] >= 2
