"""`pairbert bench`: torch vs ONNX Runtime on the same weights, inputs and threads, against this
machine's GEMM peak. Each contestant runs in its own process. Writes results.json, results.md and plots.

    pairbert bench BUNDLE [--checkpoint CKPT] [--quick] [--out DIR] [--threads N]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from .contestants import DEFAULT_PATH, GPU_CONTESTANTS
from .flops import pair_flops, useful_flops
from .machine import cpu_description, library_versions
from .processes import BenchmarkError, output_folder, run_json, sigterm_unwinds

MAX_RSS_GROWTH_PCT = 5.0  # the runtime issue's bound on memory growth over 10,000 varied predictions


def contestants_for(manifest) -> tuple[list[str], list[str]]:
    """(contestants to run, contestants skipped here and why)."""
    from pairbert.runtime.sessions import has_bf16_units, openvino_available
    from pairbert.runtime.variants import OPENVINO_VARIANTS

    # torch-int8 (torch.ao dynamic quantization) is deprecated in torch 2.x; the worker reports if it is gone.
    names, skipped = ["torch-fp32"], []
    if has_bf16_units():
        names.append("torch-bf16")
    else:
        skipped.append(
            "torch-bf16 (this CPU has no bf16 matrix units: autocast would emulate bf16, slower than fp32)"
        )
    names.append("torch-int8")
    if openvino_available():
        names.append("openvino-default")
    else:
        skipped.append("openvino-default (OpenVINO not installed: pip install 'pairbert[openvino]')")
    names += [f"ort-{v}" for v in ("fp32", "optimized", "int8") if v in manifest.variants]
    for v in OPENVINO_VARIANTS:
        info = manifest.variants.get(v)
        if info is not None and info.passed_parity and openvino_available():
            names.append(v)
        elif info is not None:
            skipped.append(
                f"{v} ({'OpenVINO not installed' if info.passed_parity else 'did not pass its gate here'})"
            )
    names.append(DEFAULT_PATH)
    if gpu_present():  # on a GPU machine: pairbert's variants on CUDA and torch fp16 eager
        names += [
            n
            for n in GPU_CONTESTANTS
            if not n.startswith("ort-") or n[4:].partition("-cuda")[0] in manifest.variants
        ]
    return names, skipped


def gpu_present() -> bool:
    """CUDA usable by both torch and ONNX Runtime (checked in a subprocess: torch stays out of this one)."""
    code = (
        "import torch, onnxruntime as o; print(torch.cuda.is_available() and "
        "'CUDAExecutionProvider' in o.get_available_providers())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return done.stdout.strip() == "True"


def add_efficiency(results: list[dict], hidden: int, layers: int, peak: float) -> None:
    """GFLOP/s and % of the GEMM peak for every row (the peak is an fp32 yardstick)."""
    for r in results:
        for lat in r["latency"].values():
            flops = pair_flops(lat.get("branch_tokens", [lat["fed_tokens"]] * 2), 1, hidden, layers)
            lat["gflops"] = flops / (lat["p50_ms"] / 1e3) / 1e9
            lat["pct_of_peak"] = 100 * lat["gflops"] / peak
        if "batch32x128" in r:
            b = r["batch32x128"]
            work = pair_flops(b.get("branch_tokens", [b["fed_tokens"]] * 2), b["batch"], hidden, layers)
            b["gflops"] = work / (b["p50_ms"] / 1e3) / 1e9
            b["pct_of_peak"] = 100 * b["gflops"] / peak
        useful = useful_flops(r.pop("job_branch_lengths"), hidden, layers, branches=1)
        for by_batch in r["throughput"].values():
            for t in by_batch.values():
                t["useful_gflops"] = useful / t["seconds"] / 1e9
                t["pct_of_peak"] = 100 * t["useful_gflops"] / peak


def check_agreement(results: list[dict]) -> list[str]:
    """Every contestant produced numbers, and pairbert's own paths the same predictions as torch-fp32
    (quantized ones: nearly). A peer's agreement (torch-int8, OpenVINO out of the box) is recorded and shown,
    but it is the peer's accuracy, not a fault of the bundle: it is not a problem of this run."""
    problems = []
    base = next(r for r in results if r["contestant"] == "torch-fp32")["validation"]["labels"]
    for r in results:
        if not r["latency"] or not r["throughput"]:
            problems.append(f"{r['contestant']}: no numbers")
        labels = r["validation"]["labels"]
        agree = sum(a == b for a, b in zip(labels, base, strict=True)) / len(base)
        r["validation"]["agreement_with_torch_fp32"] = agree
        need = 1.0 if r["precision"] == "fp32" else 0.95
        if r["family"] in ("ort", "openvino") and agree < need:
            problems.append(f"{r['contestant']}: labels agree with torch-fp32 on {agree:.1%} (< {need:.0%})")
    return problems


def kernel_floor(
    results: list[dict], hidden: int, intermediate: int, layers: int, threads: int, quick: bool
) -> dict:
    """ORT's time for the batch-1 short pair's GEMMs alone, and so the best speed-up over torch-fp32 that
    any ORT graph of this model could reach here (see kernel_floor.py)."""
    torch_short = next(r for r in results if r["contestant"] == "torch-fp32")["latency"]["short"]
    floor = run_json(
        [
            "-m",
            "pairbert.benchmarks.kernel_floor",
            str(hidden),
            str(intermediate),
            str(layers),
            ",".join(map(str, torch_short.get("branch_tokens", [torch_short["fed_tokens"]] * 2))),
            str(threads),
            "100" if quick else "500",
        ],
        600,
    )
    floor["best_possible_speedup"] = {p: torch_short["p50_ms"] / floor[f"{p}_ms"] for p in ("fp32", "int8")}
    return floor


def _cold_starts(bundle: Path, checkpoint: Path, threads: int, quick: bool) -> dict:
    """Cold start of the default path (`variant="auto"`): the first-ever load on this machine (empty
    calibration cache: every candidate is timed) and a later one (cache warm), each in a new process."""
    import os
    import tempfile

    from pairbert.runtime.calibration import CACHE_ENV

    from . import footprint

    before = os.environ.get(CACHE_ENV)
    with tempfile.TemporaryDirectory() as cache:
        os.environ[CACHE_ENV] = cache
        try:
            first = footprint.cold_start(bundle, checkpoint, threads, "auto", repeats=1)
            warm = footprint.cold_start(bundle, checkpoint, threads, "auto", repeats=1 if quick else 3)
        finally:
            if before is None:
                os.environ.pop(CACHE_ENV)
            else:
                os.environ[CACHE_ENV] = before
    return {"cold_start": warm, "cold_start_first_ever": first["runtime"]}


def _matching_checkpoint(bundle: Path, manifest, checkpoint: Path | None) -> Path:
    """The torch checkpoint the bundle was exported from (refused when its weights differ)."""
    from pairbert.runtime.bundle import weights_sha256

    checkpoint = Path(checkpoint or manifest.source_checkpoint)
    if not (checkpoint / "config.json").is_file():
        raise BenchmarkError(f"{checkpoint}: no checkpoint for the torch contestants; pass --checkpoint")
    if manifest.source_weights_sha256 and weights_sha256(checkpoint) != manifest.source_weights_sha256:
        raise BenchmarkError(
            f"{checkpoint}: not the weights {bundle} was exported from "
            f"({manifest.source_checkpoint}); torch and ORT would compare different models. "
            "Pass the matching --checkpoint or re-export the bundle from this one"
        )
    return checkpoint


def _run_worker(name: str, bundle: Path, checkpoint: Path, threads: int, quick: bool) -> dict:
    print(f"  {name} …", flush=True)
    args = [
        "-m",
        "pairbert.benchmarks.worker",
        name,
        "--bundle",
        str(bundle),
        "--checkpoint",
        str(checkpoint),
    ]
    return run_json([*args, "--threads", str(threads), *(["--quick"] if quick else [])], 1800)


def run_suite(bundle: Path, checkpoint: Path | None, out: Path, quick: bool, threads: int | None) -> dict:
    with sigterm_unwinds():  # a SIGTERM stops the worker processes too
        return _run_suite(bundle, checkpoint, out, quick, threads)


def _run_suite(bundle: Path, checkpoint: Path | None, out: Path, quick: bool, threads: int | None) -> dict:
    # long: the report dict is assembled in one place so its keys can be read together
    from pairbert.runtime.bundle import read_manifest
    from pairbert.runtime.devices import physical_cores

    from . import footprint

    manifest = read_manifest(bundle)
    checkpoint = _matching_checkpoint(bundle, manifest, checkpoint)
    threads = threads or physical_cores()
    config = json.loads((checkpoint / "config.json").read_text())["encoder"]
    hidden, layers, intermediate = (
        config["hidden_size"],
        config["num_hidden_layers"],
        config["intermediate_size"],
    )
    started = time.perf_counter()
    out = output_folder(out)  # after the bundle and checkpoint checks: a refused run leaves nothing

    peak = run_json(
        ["-m", "pairbert.benchmarks.gemm_peak", str(hidden), str(threads), "0.3" if quick else "1.5"], 300
    )
    names, skipped = contestants_for(manifest)
    failed: list[str] = []  # a contestant or stage that failed: the rest is still measured and written

    def attempt(what: str, measure):
        try:
            return measure()
        except BenchmarkError as exc:
            failed.append(f"{what}: {_one_line(exc)}")
            print(f"  {what} FAILED: {_one_line(exc)}", flush=True)
            return None

    results = [
        r
        for name in names
        if (r := attempt(name, lambda name=name: _run_worker(name, bundle, checkpoint, threads, quick)))
    ]
    if not any(r["contestant"] == "torch-fp32" for r in results):
        raise BenchmarkError(f"the baseline torch-fp32 failed, nothing to compare with ({failed[0]})")
    add_efficiency(results, hidden, layers, peak["peak_gflops"])
    problems = check_agreement(results)
    floor = attempt(
        "kernel floor", lambda: kernel_floor(results, hidden, intermediate, layers, threads, quick)
    )

    # the default path, as a service runs it (auto: the calibration cache is warm from its worker)
    growth = attempt(
        "memory growth",
        lambda: footprint.memory_growth(
            bundle, "auto", threads, 500 if quick else 10000, 100 if quick else 1000
        ),
    )
    if growth and not quick and growth["growth_pct"] > MAX_RSS_GROWTH_PCT:
        problems.append(
            f"RSS grew {growth['growth_pct']:.1f}% over {growth['predictions']} predictions "
            f"(> {MAX_RSS_GROWTH_PCT}%)"
        )
    cold = attempt("cold start", lambda: _cold_starts(bundle, checkpoint, threads, quick)) or {}
    report = {
        "machine": cpu_description(),
        "versions": library_versions(),
        "threads": threads,
        "quick": quick,
        "model": {"hidden": hidden, "layers": layers, "branches": 2},
        "gemm_peak": peak,
        "skipped": skipped,
        "contestants": results,
        **({"kernel_floor": floor} if floor else {}),
        **cold,
        **({"memory_growth": growth} if growth else {}),
        "disk_mb": {
            **{
                k if k.startswith("openvino") else f"ort-{k}": round(v.size_bytes / 2**20, 1)
                for k, v in manifest.variants.items()
            },
            "torch checkpoint": round(
                sum(f.stat().st_size for f in checkpoint.glob("*.safetensors")) / 2**20, 1
            ),
        },
        "installed": footprint.installed_sizes(),
        "problems": failed + problems,
        "seconds": round(time.perf_counter() - started, 1),
        "command": "pairbert bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else "",
    }
    (out / "results.json").write_text(json.dumps(report, indent=2))
    from .report import markdown, plots

    (out / "results.md").write_text(markdown(report))
    plots(report, out)
    if failed:
        raise BenchmarkError(f"{len(failed)} part(s) failed; what ran is in {out}: " + "; ".join(failed))
    return report


def _one_line(exc: BaseException) -> str:
    """A failed process's error on one line: what failed, and the last line it wrote (a native crash's
    "double free or corruption", a Python error's message)."""
    head, _, rest = str(exc).partition("\n")
    last = next((line.strip() for line in reversed(rest.splitlines()) if line.strip()), "")
    head = head.rstrip(":")
    return f"{head} ({last})" if last else head
