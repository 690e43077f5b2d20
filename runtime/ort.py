"""The one way the runtime imports ONNX Runtime: a clear install line when it is missing, and the CUDA
libraries from nvidia-* wheels loaded before a CUDA session is made.

ONNX Runtime comes from exactly one of two extras (pyproject.toml): `pairbert[cpu]` (onnxruntime) or
`pairbert[gpu]` (onnxruntime-gpu). Both wheels write the same `onnxruntime` module.
"""

from __future__ import annotations

import importlib.util
import logging

log = logging.getLogger(__name__)

CPU_INSTALL = "pip install 'pairbert[cpu]'"
GPU_INSTALL = "pip install 'pairbert[gpu]'"
GPU_LIBS_INSTALL = "pip install 'pairbert[gpu-libs]'"  # onnxruntime-gpu plus CUDA/cuDNN as nvidia-* wheels
_cuda_prepared = False


def onnxruntime():
    """`import onnxruntime`, or an ImportError that names the install line."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ImportError(
            f"pairbert's runtime needs ONNX Runtime, which is not installed ({exc}). Install it with "
            f"{CPU_INSTALL} (CPU) or {GPU_INSTALL} (CUDA)"
        ) from exc
    return ort


def installed_builds() -> list[str]:
    """Distributions that provide the `onnxruntime` module (onnxruntime, onnxruntime-gpu, …), sorted."""
    from importlib.metadata import distributions  # ~20 ms of import: only when an install is diagnosed

    names = {(d.metadata["Name"] or "").lower().replace("_", "-") for d in distributions()}
    return sorted(n for n in names if n == "onnxruntime" or n.startswith("onnxruntime-"))


def cuda_install_hint() -> str:
    """How to get a CUDA-capable ONNX Runtime from where this environment is."""
    builds = installed_builds()
    if "onnxruntime-gpu" in builds and len(builds) > 1:
        others = " ".join(b for b in builds if b != "onnxruntime-gpu")
        return (
            f"{' and '.join(builds)} are installed together and overwrite each other's `onnxruntime` module: "
            f"pip uninstall -y {others} onnxruntime-gpu, then {GPU_INSTALL}"
        )
    return f"install it with {GPU_INSTALL} (onnxruntime-gpu, in place of onnxruntime)"


def prepare_cuda(ort) -> None:
    """Load CUDA and cuDNN from the nvidia-* wheels, when they are installed, before the first CUDA
    session (onnxruntime-gpu >= 1.21: `preload_dlls`). With a system CUDA this does nothing."""
    global _cuda_prepared
    if _cuda_prepared:
        return
    _cuda_prepared = True
    if not hasattr(ort, "preload_dlls") or importlib.util.find_spec("nvidia") is None:
        return
    try:
        ort.preload_dlls()
    except Exception as exc:  # a missing library shows up again, precisely, when the session is made
        log.warning("onnxruntime.preload_dlls() failed (%s); relying on the system's CUDA libraries", exc)
