"""Execution providers and threads: one small place that decides where and how wide a session runs."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

from .errors import PairbertError
from .ort import cuda_install_hint, onnxruntime

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


class DeviceError(PairbertError, RuntimeError):
    pass


def physical_cores() -> int:
    """Physical cores this process may use (hyper-threads do not help GEMM-bound inference)."""
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
    return max(1, len(cores))


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


LEDGER = ThreadLedger()
