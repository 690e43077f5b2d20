"""Execution providers and threads: one small place that decides where and how wide a session runs."""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import PairbertError
from .ort import cuda_install_hint, onnxruntime

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


class DeviceError(PairbertError, RuntimeError):
    pass


CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def physical_cores(cgroup_root: str | Path = CGROUP_ROOT, proc_cgroup: str | Path = PROC_CGROUP) -> int:
    """Physical cores this process may use: the affinity mask's physical cores (hyper-threads do not help
    GEMM-bound inference), capped by the cgroup CPU quota, so a 2-CPU pod on a 64-core node gets 2."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores = set()
    for cpu in allowed:
        try:
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/core_id") as f:
                core = f.read().strip()
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/physical_package_id") as f:
                package = f.read().strip()
            cores.add((package, core))
        except OSError:
            cores.add(("?", cpu))
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    count = len(cores) if quota is None else min(len(cores), math.floor(quota))
    return max(1, count)


def cgroup_cpu_quota(
    cgroup_root: str | Path = CGROUP_ROOT, proc_cgroup: str | Path = PROC_CGROUP
) -> float | None:
    """CPUs' worth of time the cgroup quota allows (e.g. 2.0 for `cpu.max` = "200000 100000"), the tightest
    over this process's cgroup and its parents; None where there is no quota. Reads cgroup v2 (`cpu.max`)
    and v1 (`cpu.cfs_quota_us` / `cpu.cfs_period_us`)."""
    root = Path(cgroup_root)
    v2, v1 = _own_cgroups(Path(proc_cgroup))
    limits = [q for d in _candidates(root, v2) if (q := _read_v2(d / "cpu.max")) is not None]
    for sub in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        limits += [q for d in _candidates(root / sub, v1) if (q := _read_v1(d)) is not None]
    return min(limits) if limits else None


def _own_cgroups(proc_cgroup: Path) -> tuple[str, str]:
    """This process's cgroup path for v2 (the `0::` line) and for v1's cpu controller ("/" when unknown)."""
    v2 = v1 = "/"
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return v2, v1
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2] or "/"
        elif "cpu" in parts[1].split(","):
            v1 = parts[2] or "/"
    return v2, v1


def _candidates(base: Path, own: str) -> list[Path]:
    """`base` + this process's cgroup path and each parent up to `base` (a limit on a parent binds too).
    Inside a cgroup namespace the path may not exist under `base`: then only `base` itself is read."""
    found = [base]
    path = base
    for part in [p for p in own.split("/") if p]:
        path = path / part
        found.append(path)
    return [d for d in found if d.is_dir()]


def _read_v2(path: Path) -> float | None:
    try:
        quota, _, period = path.read_text().strip().partition(" ")
        if quota == "max":
            return None
        return int(quota) / int(period or 100000)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _read_v1(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text().strip())
        period = int((directory / "cpu.cfs_period_us").read_text().strip())
    except (OSError, ValueError):
        return None
    if quota <= 0 or period <= 0:  # -1: no limit
        return None
    return quota / period


INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # int8 dot products accumulated in int32


@functools.lru_cache(maxsize=8)
def cpu_info(cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[str | None, tuple[str, ...] | None]:
    """(model name, instruction-set flags in the order listed) of the first CPU in `cpuinfo`, read once per
    process; None for what it does not say (not Linux; an ARM cpuinfo lists "Features", not "flags")."""
    model = None
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, colon, value = line.partition(":")
                if colon and key.strip() == "model name" and model is None:
                    model = value.strip()
                elif colon and key.strip() == "flags":
                    return model, tuple(value.split())
    except OSError:
        pass
    return model, None


def int8_overflows_here(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Known to be an x86 CPU without VNNI: its int8 GEMMs add pairs of u8 x s8 products into a saturating
    int16, which 8-bit weights overflow (export/precision.py). False where the CPU's flags cannot be read."""
    flags = set(cpu_info(cpuinfo)[1] or ())
    return "avx2" in flags and not flags & set(INT8_DOT_FLAGS)


def cuda_provider_available() -> bool:
    return CUDA in onnxruntime().get_available_providers()


@dataclass(frozen=True)
class DevicePlan:
    device: str  # "cpu" or "cuda"
    providers: tuple[str, ...]


def plan_device(device: str) -> DevicePlan:
    if device not in ("auto", "cpu", "cuda"):
        raise DeviceError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cpu":
        return DevicePlan("cpu", (CPU,))
    if cuda_provider_available():
        return DevicePlan("cuda", (CUDA, CPU))
    if device == "cuda":
        raise DeviceError(
            f"device 'cuda' asked for, but this onnxruntime has no CUDAExecutionProvider "
            f"({cuda_install_hint()}); "
            "pass allow_fallback=True to run on the CPU instead"
        )
    return DevicePlan("cpu", (CPU,))


class ThreadLedger:
    """Intra-op threads claimed by live predictors in this process, so a second predictor does not
    silently oversubscribe the cores: by default it takes what is left (at least one), and an explicit
    request past the cores is logged as a warning."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claimed = 0

    def claim(self, requested: int | None) -> int:
        cores = physical_cores()
        with self._lock:
            free = max(1, cores - self._claimed)
            threads = free if requested is None else requested
            if requested is not None and self._claimed + threads > cores:  # a default load takes what is free
                log.warning(
                    "predictors in this process now use %d intra-op threads on %d physical cores: "
                    "they will compete; pass threads= to split the cores",
                    self._claimed + threads,
                    cores,
                )
            elif (
                self._claimed
            ):  # a default load takes what is left (at least one thread): no surprise to warn of
                log.info(
                    "other predictors hold %d thread(s) of %d cores; this one takes %d",
                    self._claimed,
                    cores,
                    threads,
                )
            self._claimed += threads
            return threads

    def release(self, threads: int) -> None:
        with self._lock:
            self._claimed = max(0, self._claimed - threads)

    @property
    def claimed(self) -> int:
        return self._claimed

    def assume(self, claimed: int) -> None:
        """Hold `claimed` threads as another process's ledger does (the child that measures for it), so
        sessions there get the same settings (spinning) as in that process."""
        with self._lock:
            self._claimed = claimed


LEDGER = ThreadLedger()
