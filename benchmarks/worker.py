"""One contestant, one process: so thread pools never fight and peak RSS is the contestant's own.

    python -m pairbert.benchmarks.worker CONTESTANT --bundle B --checkpoint C --threads N [--quick]

Prints one JSON object: load time, batch-1 latency percentiles per workload, throughput per batch size
and mode, validation accuracy and labels, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from .machine import current_rss_mb, peak_rss_mb
from .workloads import LATENCY_TARGETS, mixed_job, sized_batch, sized_pair, validation_pairs


def percentiles(samples_s: list[float]) -> dict:
    ms = np.array(samples_s) * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "runs": len(ms),
    }


def timed_runs(fn, warmup: int, min_runs: int, min_seconds: float, max_runs: int = 100000) -> list[float]:
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < max_runs and (len(samples) < min_runs or time.perf_counter() - start < min_seconds):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return samples


def _latency(contestant, encoder, quick: bool) -> dict:
    latency: dict = {}
    for workload, target in LATENCY_TARGETS.items():
        if quick and workload != "short":
            continue
        q, a, tokens = sized_pair(encoder, target)
        fed = encoder.fed_lengths([q], [a])[0]
        branches = list(encoder.branch_lengths(*(order[0] for order in encoder.tokenize([q], [a]))))
        pair = [(q, a)]
        mode = contestant.modes[0]
        samples = timed_runs(
            lambda pair=pair, mode=mode: contestant.predict(pair, 1, mode),
            warmup=3 if quick else 10,
            min_runs=5 if quick else 50,
            min_seconds=0.2 if quick else 2.0,
        )
        latency[workload] = {
            "tokens": tokens,
            "fed_tokens": fed,
            "branch_tokens": branches,
            **percentiles(samples),
        }
        if workload == "short" and contestant.family in ("ort", "openvino"):
            # how much of batch-1 latency is tokenization (both orders, padding included)
            tok = timed_runs(
                lambda q=q, a=a: encoder.collate(*encoder.tokenize([q], [a])), 10, 50, 0.2 if quick else 1.0
            )
            latency[workload]["tokenize_p50_ms"] = float(np.percentile(np.array(tok) * 1e3, 50))

    return latency


def _batch32x128(contestant, encoder) -> dict:
    batch, tokens = sized_batch(encoder, LATENCY_TARGETS["long"], 32)  # 32 questions: no shared row
    q, a = batch[0]
    samples = timed_runs(lambda: contestant.predict(batch, 32, contestant.modes[0]), 2, 5, 3.0)
    fed = encoder.fed_lengths([q], [a])[0]
    branches = list(encoder.branch_lengths(*(order[0] for order in encoder.tokenize([q], [a]))))
    return {
        "tokens": tokens,
        "fed_tokens": fed,
        "branch_tokens": branches,
        "batch": 32,
        **percentiles(samples),
    }


def _throughput(contestant, encoder, quick: bool) -> dict:
    result: dict = {"throughput": {}}
    job = mixed_job(128 if quick else 1000)
    result["job_pairs"] = len(job)
    qa, aq = encoder.tokenize([p[0] for p in job], [p[1] for p in job])
    # each branch's own tokens under the bundle's feed (both branches, one list): the work the pairs need
    result["job_branch_lengths"] = [encoder.kept_length(e) for e in qa + aq]
    for mode in contestant.modes:
        for batch in (32,) if quick else (8, 32, 128):
            contestant.predict(job[: batch * 2], batch, mode)  # warm-up at this batch size
            t = time.perf_counter()
            contestant.predict(job, batch, mode)
            elapsed = time.perf_counter() - t
            result["throughput"].setdefault(mode, {})[str(batch)] = {
                "pairs_per_s": len(job) / elapsed,
                "seconds": elapsed,
            }

    return result


def _validation(contestant, quick: bool) -> dict:
    rows = validation_pairs()[: 40 if quick else None]
    probs = contestant.predict([(r.question, r.answer) for r in rows], 32, contestant.modes[0])
    labels = probs.argmax(-1)
    return {
        "pairs": len(rows),
        "accuracy": float((labels == np.array([r.label for r in rows])).mean()),
        "labels": labels.tolist(),
        "match_probability": probs[:, 1].round(6).tolist(),
    }


def run(name: str, bundle: Path, checkpoint: Path, threads: int, quick: bool) -> dict:
    from pairbert.runtime.bundle import bundle_encoder, read_manifest

    from .contestants import build

    t0 = time.perf_counter()
    contestant = build(name, bundle, checkpoint, threads)
    load_s = time.perf_counter() - t0
    manifest = read_manifest(bundle)
    encoder = bundle_encoder(bundle, manifest)
    result: dict = {
        "contestant": name,
        "family": contestant.family,
        "precision": contestant.precision,
        "threads": threads,
        "load_s": load_s,
        "latency": {},
        "throughput": {},
    }
    if hasattr(contestant, "chosen"):
        result["chosen"] = contestant.chosen

    result["latency"] = _latency(contestant, encoder, quick)
    if not quick:  # the GEMM-bound case: a full batch of maximum-length pairs
        result["batch32x128"] = _batch32x128(contestant, encoder)
    result.update(_throughput(contestant, encoder, quick))
    result["validation"] = _validation(contestant, quick)
    graphs = getattr(getattr(contestant, "session", None), "graphs", None)
    if graphs is not None:  # CUDA graphs: how many shapes were captured, and whether they stayed on
        result["cuda_graphs"] = {"enabled": graphs.enabled, "captured": graphs.graphs}
    result["rss_mb"] = current_rss_mb()
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("contestant")
    ap.add_argument("--bundle", required=True, type=Path)
    ap.add_argument("--checkpoint", required=True, type=Path)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    print(json.dumps(run(args.contestant, args.bundle, args.checkpoint, args.threads, args.quick)))


if __name__ == "__main__":
    main()
