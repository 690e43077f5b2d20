"""Where a predictor runs: ONNX Runtime missing, CUDA missing, and CUDA installed but not running."""

from __future__ import annotations

import subprocess
import sys

import onnxruntime as ort
import pytest

from pairbert.runtime import DeviceError, PairClassifier
from pairbert.runtime.ort import CPU_INSTALL, GPU_INSTALL, cuda_install_hint, installed_builds
from pairbert.runtime.variants import DEVICES

needs_cpu_build = pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(),
    reason="this onnxruntime has CUDA; the gpu tests cover it",
)


@needs_cpu_build
def test_cuda_installed_but_not_running_falls_back_or_refuses(tiny_bundle, monkeypatch, caplog):
    # What onnxruntime-gpu on a machine without a usable GPU looks like: the provider is listed, but a real
    # session asked for [CUDA, CPU] gets the CPU provider.
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    with caplog.at_level("WARNING"):
        clf = PairClassifier.load(tiny_bundle)  # device="auto"
    assert clf.device == "cpu" and clf.provider == "CPUExecutionProvider"
    assert "cpu" in DEVICES[clf.variant] and clf.variant != "fp16"  # a CPU variant, not CUDA's fp16
    assert "CUDA does not run here" in caplog.text

    with pytest.raises(
        DeviceError, match="CUDA was asked for but the session got CPUExecutionProvider.*gpu-libs"
    ):
        PairClassifier.load(tiny_bundle, device="cuda")
    clf = PairClassifier.load(tiny_bundle, device="cuda", allow_fallback=True)
    assert clf.device == "cpu" and clf.provider == "CPUExecutionProvider"


@needs_cpu_build
def test_cuda_error_names_the_install_line(tiny_bundle):
    assert installed_builds() == ["onnxruntime"]
    with pytest.raises(
        DeviceError, match=r"no CUDAExecutionProvider \(install it with pip install 'pairbert\[gpu\]'"
    ):
        PairClassifier.load(tiny_bundle, device="cuda")


def test_both_builds_installed_is_named(monkeypatch):
    import pairbert.runtime.ort as ort_module

    monkeypatch.setattr(ort_module, "installed_builds", lambda: ["onnxruntime", "onnxruntime-gpu"])
    assert cuda_install_hint() == (
        "onnxruntime and onnxruntime-gpu are installed together and overwrite each other's "
        "`onnxruntime` module: "
        f"pip uninstall -y onnxruntime onnxruntime-gpu, then {GPU_INSTALL}"
    )


def test_missing_onnxruntime_names_the_extras(tiny_bundle):
    # A real import failure: a child process where `import onnxruntime` finds nothing (a None entry in
    # sys.modules makes the import raise ImportError, as on a base install without [cpu] or [gpu]).
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "from pairbert.runtime import PairClassifier\n"
        f"try:\n    PairClassifier.load({str(tiny_bundle)!r})\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert CPU_INSTALL in done.stdout and GPU_INSTALL in done.stdout


@pytest.mark.parametrize(
    "flags, overflows",
    [
        ("fpu sse2 avx avx2 fma", True),  # AVX2 without VNNI (this project's AMD EPYC)
        ("fpu avx2 avx512f avx512_vnni", False),
        ("fpu avx2 avx_vnni", False),
        ("fpu avx2 avx512f amx_bf16 amx_int8", False),
        (None, False),  # no x86 flags line (an ARM cpuinfo says "Features")
    ],
)
def test_int8_overflow_is_known_from_the_cpu_flags(tmp_path, flags, overflows):
    from pairbert.runtime.devices import int8_overflows_here

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\n" + (f"flags\t\t: {flags}\n" if flags else "Features\t: asimd\n"))
    assert int8_overflows_here(cpuinfo) is overflows
    assert int8_overflows_here(tmp_path / "missing") is False
