"""Cold start, memory growth and installed size: what a service pays besides latency. The first two run
in fresh processes (cold_start_runtime.py, cold_start_torch.py, memory_growth.py)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement  # the [bench] extra declares packaging

from .processes import run_json


def cold_start(bundle: Path, checkpoint: Path, threads: int, variant: str, repeats: int = 3) -> dict:
    runtime = [
        run_json(["-m", "pairbert.benchmarks.cold_start_runtime", str(bundle), variant, str(threads)])
        for _ in range(repeats)
    ]
    torch_run = run_json(["-m", "pairbert.benchmarks.cold_start_torch", str(checkpoint), str(threads)])
    best = min(runtime, key=lambda r: r["total_s"])
    return {"runtime": {**best, "runs": [r["total_s"] for r in runtime]}, "torch": torch_run}


def memory_growth(bundle: Path, variant: str, threads: int, predictions: int, warmup: int) -> dict:
    return run_json(
        [
            "-m",
            "pairbert.benchmarks.memory_growth",
            str(bundle),
            variant,
            str(threads),
            str(predictions),
            str(warmup),
        ]
    )


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
    from pairbert.runtime.ort import installed_builds

    runtime = _closure([*installed_builds(), "numpy", "tokenizers"])
    with_openvino = runtime | _closure(["openvino"])
    torch_env = _closure(["torch", "transformers", "tokenizers", "numpy", "safetensors"])
    return {
        "runtime_mb": round(_size_mb(runtime), 1),
        "runtime_packages": sorted(runtime),
        "runtime_openvino_mb": round(_size_mb(with_openvino), 1) if "openvino" in with_openvino else None,
        "torch_mb": round(_size_mb(torch_env), 1),
        "torch_packages": sorted(torch_env),
    }
