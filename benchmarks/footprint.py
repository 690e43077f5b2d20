"""Cold start, memory growth and installed size: what a service pays besides latency."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement

from .processes import run_json

COLD_START_RUNTIME = """
import time; t0 = time.perf_counter()
from pairbert.runtime import PairClassifier
clf = PairClassifier.load({bundle!r}, variant={variant!r}, threads={threads})
t1 = time.perf_counter()
clf.predict([("How long should I boil an egg?", "About six minutes.")])
t2 = time.perf_counter()
import json, sys; print(json.dumps({{"import_load_s": t1 - t0, "first_prediction_s": t2 - t1, "total_s": t2 - t0,
  "variant": clf.variant, "torch_loaded": "torch" in sys.modules}}))
"""

COLD_START_TORCH = """
import time; t0 = time.perf_counter()
import torch
from pairbert.training.checkpoint import load_checkpoint
from pairbert.training.batches import encode_batch
from pairbert.runtime.pair_files import Pair
torch.set_num_threads({threads})
ckpt = load_checkpoint({checkpoint!r})
t1 = time.perf_counter()
with torch.inference_mode():
    ckpt.model(**encode_batch(ckpt.encoder, [Pair("How long should I boil an egg?", "About six minutes.")], False))
t2 = time.perf_counter()
import json; print(json.dumps({{"import_load_s": t1 - t0, "first_prediction_s": t2 - t1, "total_s": t2 - t0}}))
"""

MEMORY_GROWTH = """
import json, random, statistics
from pairbert.runtime import PairClassifier
from pairbert.benchmarks.machine import current_rss_mb
from pairbert.benchmarks.workloads import builtin_pairs
clf = PairClassifier.load({bundle!r}, variant={variant!r}, threads={threads})
rows = builtin_pairs(); rng = random.Random(0)
def job():
    k = rng.choice([1, 1, 1, 2, 3, 5, 8, 13, 32])
    picks = [rng.choice(rows) for _ in range(k)]
    reps = rng.choice([1, 1, 2, 4])
    return [(p.question, " ".join([p.answer] * reps)) for p in picks]
done = 0
while done < {warmup}:
    done += len(clf.predict(job()))
samples = []; done = 0
while done < {predictions}:
    done += len(clf.predict(job()))
    samples.append((done, current_rss_mb()))
# RSS swings by ~20 % from one call to the next (each run's buffers are allocated and freed), so a single
# reading says little: compare the run's first and second half, by their peak and by their median.
window = {predictions} / 2
first = [r for n, r in samples if n <= window]
last = [r for n, r in samples if n > window]
print(json.dumps({{"predictions": done, "window_predictions": window,
                  "first_window_mb": {{"peak": max(first), "median": statistics.median(first), "low": min(first)}},
                  "last_window_mb": {{"peak": max(last), "median": statistics.median(last), "low": min(last)}},
                  "growth_pct": 100 * (max(last) - max(first)) / max(first),
                  "median_growth_pct": 100 * (statistics.median(last) - statistics.median(first))
                  / statistics.median(first)}}))
"""


def cold_start(bundle: Path, checkpoint: Path, threads: int, variant: str, repeats: int = 3) -> dict:
    runtime = [run_json(["-c", COLD_START_RUNTIME.format(bundle=str(bundle), variant=variant, threads=threads)])
               for _ in range(repeats)]
    torch_runs = [run_json(["-c", COLD_START_TORCH.format(checkpoint=str(checkpoint), threads=threads)])]
    best = min(runtime, key=lambda r: r["total_s"])
    return {"runtime": {**best, "runs": [r["total_s"] for r in runtime]}, "torch": torch_runs[0]}


def memory_growth(bundle: Path, variant: str, threads: int, predictions: int, warmup: int) -> dict:
    return run_json(["-c", MEMORY_GROWTH.format(bundle=str(bundle), variant=variant, threads=threads,
                                           predictions=predictions, warmup=warmup)])


def _closure(names: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        seen.add(name)
        for req in dist.requires or []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return seen


def _size_mb(names: set[str]) -> float:
    total = 0
    for name in names:
        dist = distribution(name)
        for f in dist.files or []:
            try:
                total += Path(dist.locate_file(f)).stat().st_size
            except OSError:
                pass
    return total / 2**20


def installed_sizes() -> dict:
    """Installed size of what the runtime needs vs what serving with torch needs (this venv's packages)."""
    runtime = _closure(["onnxruntime", "numpy", "tokenizers"])
    torch_env = _closure(["torch", "transformers", "tokenizers", "numpy", "safetensors"])
    return {"runtime_mb": round(_size_mb(runtime), 1), "runtime_packages": sorted(runtime),
            "torch_mb": round(_size_mb(torch_env), 1), "torch_packages": sorted(torch_env)}
