"""The backend decisions, measured: how OpenVINO should read a bundle, and whether running the two encoders
concurrently beats giving each its threads in turn.

    python -m pairbert.benchmarks.backend_options BUNDLE [--threads N] [--out results.json]

1. OpenVINO load: read the bundle's fp32 ONNX and compile, vs read an IR (written once, as an export step
   would) and compile, vs either with OpenVINO's compiled-model cache warm; IR size on disk. ONNX Runtime's
   load of the same graph and of the int8 graph for reference.
2. Both branches at once (batch 1, short pair, model only): ONNX Runtime sequential with all threads per op
   vs ORT_PARALLEL (one branch per inter-op thread), on fp32 and int8.
Each number is the median of several runs in this process; compare within one run only.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def _median_s(fn, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return float(np.median(samples))


def _as_the_runtime_opens(bundle: Path, variant: str):
    """(open, size on disk): `open(backend, settings)` opens the variant as the runtime does — the graph's
    bytes, with a fresh private copy of its weight files when they lie beside it (runtime/external_weights.py;
    the copy and its settling are part of every load timed here, as in the runtime; its sha256, which the
    runtime computes on the other core meanwhile, is not)."""
    from pairbert.runtime.bundle import read_manifest
    from pairbert.runtime.external_weights import PrivateCopy, WeightsFolder
    from pairbert.runtime.sessions import open_session

    info = read_manifest(bundle).variants[variant]
    graph = (bundle / info.file).read_bytes()
    sources = {name: bundle / name for name in info.external_data}

    def open_it(backend: str, settings):
        if not sources:
            return open_session(backend, graph, settings)
        copy = PrivateCopy(sources)
        try:
            copy.copy()
            session = open_session(backend, WeightsFolder(graph, copy.folder), settings)
            copy.settle()  # checked and faulted in, as the runtime does
            return session
        finally:
            copy.remove()

    return open_it, len(graph) + sum(path.stat().st_size for path in sources.values())


def openvino_load(bundle: Path, threads: int, repeats: int) -> dict:
    import openvino as ov

    from pairbert.runtime.bundle import read_manifest
    from pairbert.runtime.sessions import SessionSettings, open_session

    onnx_path = bundle / "model.fp32.onnx"
    variants = read_manifest(bundle).variants
    result = {}
    for v in ("fp32", "optimized", "int8"):
        if v in variants:
            open_it, _ = _as_the_runtime_opens(bundle, v)
            result[f"ort_{v}_load_s"] = _median_s(
                lambda open_it=open_it: open_it("onnxruntime", SessionSettings(threads)), repeats
            )
    fp32, result["onnx_mb"] = _as_the_runtime_opens(bundle, "fp32")
    result["onnx_mb"] /= 2**20
    result["openvino_onnx_load_s"] = _median_s(lambda: fp32("openvino", SessionSettings(threads)), repeats)
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(ov.Core().read_model(str(onnx_path)), str(xml))  # fp16-compressed weights (the default)
        result["ir_mb"] = (xml.stat().st_size + xml.with_suffix(".bin").stat().st_size) / 2**20
        result["openvino_ir_load_s"] = _median_s(
            lambda: open_session("openvino", xml, SessionSettings(threads)), repeats
        )
        cache = str(Path(tmp) / "cache")
        fp32("openvino", SessionSettings(threads, cache_dir=cache))  # fills the cache
        result["openvino_onnx_cached_load_s"] = _median_s(
            lambda: fp32("openvino", SessionSettings(threads, cache_dir=cache)), repeats
        )
    return result


def parallel_branches(bundle: Path, threads: int, repeats: int) -> dict:
    from pairbert.benchmarks.workloads import sized_pair
    from pairbert.runtime.bundle import bundle_encoder, read_manifest
    from pairbert.runtime.sessions import SessionSettings, open_session

    manifest = read_manifest(bundle)
    encoder = bundle_encoder(bundle, manifest)
    q, a, tokens = sized_pair(encoder, 16)
    feed = encoder.encode([q], [a])
    result = {"tokens": tokens}
    for variant in ("fp32", "optimized", "int8"):
        path = bundle / f"model.{variant}.onnx"
        if not path.is_file():
            continue
        for label, parallel in (("sequential", False), ("parallel", True)):
            session = open_session("onnxruntime", path, SessionSettings(threads, parallel_branches=parallel))
            for _ in range(10):
                session.run(feed)
            result[f"{variant}_{label}_ms"] = 1e3 * _median_s(lambda s=session: s.run(feed), repeats * 20)
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    from pairbert.benchmarks.machine import cpu_description
    from pairbert.runtime.devices import physical_cores

    threads = args.threads or physical_cores()
    report = {
        "machine": cpu_description(),
        "threads": threads,
        "openvino_load": openvino_load(args.bundle, threads, args.repeats),
        "parallel_branches": parallel_branches(args.bundle, threads, args.repeats),
    }
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
