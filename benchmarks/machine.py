"""What machine and libraries produced a benchmark number."""

from __future__ import annotations

import os
import platform
import resource
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

    isa = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile") if f in flags]
    return {"cpu": model, "logical_cpus": os.cpu_count(), "physical_cores": physical_cores(), "isa": isa,
            "vnni": any("vnni" in f for f in isa), "python": sys.version.split()[0], "platform": platform.platform()}


def library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("pairbert", "onnxruntime", "onnxruntime-gpu", "numpy", "tokenizers", "torch", "transformers", "onnx"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def peak_rss_mb() -> float:
    """Peak resident set size of this process. VmHWM, not ru_maxrss: the latter survives exec, so a
    worker would report its parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
