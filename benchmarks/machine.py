"""What machine and libraries produced a benchmark number."""

from __future__ import annotations

import os
import platform
import sys


def cpu_description() -> dict:
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("unknown", "", "x86_64"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    from pairbert.runtime.devices import physical_cores

    isa = [
        f
        for f in (
            "sse4_2",
            "avx",
            "avx2",
            "fma",
            "avx512f",
            "avx512_vnni",
            "avx512_bf16",
            "avx_vnni",
            "amx_tile",
            "amx_bf16",
            "amx_int8",
        )
        if f in flags
    ]
    return {
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "physical_cores": physical_cores(),
        "isa": isa,
        "vnni": any("vnni" in f for f in isa),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in (
        "pairbert",
        "onnxruntime",
        "onnxruntime-gpu",
        "numpy",
        "tokenizers",
        "torch",
        "transformers",
        "onnx",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def peak_rss_mb() -> float:
    """Peak resident set size of this process. On Linux VmHWM, not ru_maxrss: the latter survives exec, so
    a worker would report its parent's peak. Elsewhere psutil's peak (Windows) or ru_maxrss (macOS: bytes)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import psutil

    info = psutil.Process().memory_info()
    if hasattr(info, "peak_wset"):  # Windows
        return info.peak_wset / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)


def current_rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20
