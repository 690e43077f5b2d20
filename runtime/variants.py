"""The one list of variants: what each is, which backend runs it and where it may run.

ONNX Runtime variants have their own graph file; OpenVINO's fp32 and bf16 variants compile the bundle's fp32
graph with an inference precision (bf16 runs on the CPU's matrix units where it has them); `openvino-int8`
has its own graph, the fp32 graph with static int8 quantize/dequantize pairs written at export (NNCF,
calibrated on training pairs), which OpenVINO runs with int8 kernels (VNNI/AMX) and the rest at its
OPENVINO_PRECISION hint; `auto` never chooses it (BY_NAME_ONLY).
"""

from __future__ import annotations

from .sessions import ONNXRUNTIME, OPENVINO

ORT_VARIANTS = ("fp32", "optimized", "int8", "fp16")
OPENVINO_VARIANTS = ("openvino-fp32", "openvino-bf16", "openvino-int8")
VARIANTS = ORT_VARIANTS + OPENVINO_VARIANTS

BACKEND = {**{v: ONNXRUNTIME for v in ORT_VARIANTS}, **{v: OPENVINO for v in OPENVINO_VARIANTS}}
PRECISION = {
    "fp32": "fp32",
    "optimized": "fp32",
    "int8": "int8",
    "fp16": "fp16",
    "openvino-fp32": "fp32",
    "openvino-bf16": "bf16",
    "openvino-int8": "int8",
}
# The precision OpenVINO computes in where the graph does not say (int8: what is not quantized). bf16 for
# int8's rest: on a CPU without bf16 units OpenVINO computes that rest in fp32 instead, the more precise.
# On the make-demo model (benchmarks/openvino_int8.py, 2,288 held-aside training pairs) both agreed with
# fp32 on 99.21 % of the labels: int8's own error dominates; the bf16 rest ran batch 32 at 0.925 ms a pair
# against 0.988.
OPENVINO_PRECISION = {"openvino-fp32": "f32", "openvino-bf16": "bf16", "openvino-int8": "bf16"}
# Where a variant may run: fp16 only where CUDA runs it (ORT's CPU fp16 kernels are slow), int8 only on the
# CPU (dynamic quantization has no CUDA kernels), OpenVINO on the CPU.
DEVICES = {
    "fp32": ("cpu", "cuda"),
    "optimized": ("cpu", "cuda"),
    "int8": ("cpu",),
    "fp16": ("cuda",),
    "openvino-fp32": ("cpu",),
    "openvino-bf16": ("cpu",),
    "openvino-int8": ("cpu",),
}
# Used when `auto` may not measure (calibrate=False): the order that was fastest on the machines measured so
# far. With calibration (the default) the fastest passing candidate on this machine wins instead, and this
# order breaks its near-ties (within 5 %, timing noise). ONNX Runtime's `optimized` comes before OpenVINO
# fp32: the two run within a few % of each other on both CPUs measured (AMX Xeon, AVX2 EPYC), and
# `optimized` starts about twice as fast (no OpenVINO import, no compile) in ~90 MB less memory.
# `auto` tries the variants whose labels agreed with the torch model on at least this share of the gate's
# pairs first, and the others only if none of those can run here (int8 may pass its own 99 % gate at 99.0 %;
# the default path should not silently give up more than 0.5 % of the labels for speed). By name, any
# passing variant.
AUTO_MIN_AGREEMENT = 0.995
# Loaded when asked for by name, never chosen by `auto`. openvino-int8: 1.13-1.49x OpenVINO out of the box at
# batch 32 on a CPU with VNNI (Zen 5), but two costs a default must not hide: behind `pairbert serve` its RSS
# grew 10 % over 20,000 requests (the serving bound is 5 %; bf16 4.8 %), and on 2,288 pairs beyond the
# validation split its labels agreed with fp32 on 99.2 %, under the 99.5 % a default path is held to, where
# the 304-pair gate reads 99.67 % (README: Static int8 for OpenVINO).
BY_NAME_ONLY = ("openvino-int8",)
STATIC_PREFERENCE = {
    "cpu": ("openvino-bf16", "int8", "optimized", "openvino-fp32", "fp32"),
    "cuda": ("fp16", "optimized", "fp32"),
}


def variant_key(backend: str, variant: str) -> str:
    """Accept `variant="bf16", backend="openvino"` for the manifest key `openvino-bf16`."""
    if backend == OPENVINO and not variant.startswith("openvino-") and variant != "auto":
        return f"openvino-{variant}"
    return variant
