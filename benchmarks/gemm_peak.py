"""This machine's achievable matrix rates on the model's GEMM shapes, in every precision it has units for.

The yardstick for "% of peak": a model cannot run its GEMMs faster than the best library runs them alone.
Shapes: [tokens, H] x [H, H], [H, 4H] and [4H, H] for H = hidden. Measured: fp32 (ONNX Runtime MatMul), int8
(ONNX Runtime MatMulInteger, u8 × s8 as dynamic quantization runs it) and, where the CPU has bf16 matrix units
(AMX, AVX512-BF16), bf16 (torch.matmul, which runs oneDNN's AMX kernels). "% of peak" divides by the best of
them: on an AMX machine the bf16 rate is several times the fp32 one, and dividing by fp32 would flatter.
"""

from __future__ import annotations

import time

import numpy as np


def onnx_model(graph):
    """A model around `graph` that every onnxruntime of the supported range loads (opset 17, IR 8)."""
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def cpu_session(model, threads: int):
    """A CPU onnxruntime.InferenceSession on `threads` intra-op threads from the runtime's session factory
    (arena kept: the yardstick measures kernels, not allocation); `model` is a ModelProto or a path."""
    from pairbert.runtime.sessions import SessionSettings, open_session

    source = model.SerializeToString() if hasattr(model, "SerializeToString") else model
    return open_session("onnxruntime", source, SessionSettings(threads=threads, cpu_arena="keep")).session


def _matmul_session(k: int, n: int, threads: int):
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((k, n)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", n])],
        [w],
    )
    return cpu_session(onnx_model(graph), threads)


def _matmul_integer_session(k: int, n: int, threads: int):
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).integers(-127, 128, (k, n)).astype(np.int8), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["x", "w"], ["y"])],
        "mmi",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, ["m", k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["m", n])],
        [w],
    )
    return cpu_session(onnx_model(graph), threads)


def _rate(run, flops: float, seconds: float) -> float:
    for _ in range(3):
        run()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run()
        runs += 1
    return flops * runs / (time.perf_counter() - start) / 1e9


def _torch_bf16_rate(tokens: int, k: int, n: int, threads: int, seconds: float) -> float:
    import torch

    torch.set_num_threads(threads)
    x = torch.randn(tokens, k, dtype=torch.bfloat16)
    w = torch.randn(k, n, dtype=torch.bfloat16)
    return _rate(lambda: torch.matmul(x, w), 2 * tokens * k * n, seconds)


def gemm_peak_gflops(hidden: int = 384, tokens: int = 4096, threads: int = 2, seconds: float = 1.0) -> dict:
    """Best sustained GFLOP/s (GOP/s for int8) per precision over the model's three GEMM shapes; `peak_gflops`
    is the best of all precisions measured here, the number '% of peak' divides by."""
    from pairbert.runtime.sessions import has_bf16_units

    shapes = [(hidden, hidden), (hidden, 4 * hidden), (4 * hidden, hidden)]
    by_precision: dict[str, dict[str, float]] = {"fp32": {}, "int8": {}}
    rng = np.random.default_rng(1)
    for k, n in shapes:
        flops, key = 2 * tokens * k * n, f"{tokens}x{k}x{n}"
        fp32, x = _matmul_session(k, n, threads), rng.standard_normal((tokens, k)).astype(np.float32)
        by_precision["fp32"][key] = _rate(lambda s=fp32, x=x: s.run(None, {"x": x}), flops, seconds)
        int8, xq = _matmul_integer_session(k, n, threads), rng.integers(0, 256, (tokens, k)).astype(np.uint8)
        by_precision["int8"][key] = _rate(lambda s=int8, x=xq: s.run(None, {"x": x}), flops, seconds)
    bf16_units = has_bf16_units()
    if bf16_units:
        by_precision["bf16"] = {
            f"{tokens}x{k}x{n}": _torch_bf16_rate(tokens, k, n, threads, seconds) for k, n in shapes
        }
    best = {p: max(v.values()) for p, v in by_precision.items()}
    peak_precision = max(best, key=best.get)
    return {
        "peak_gflops": best[peak_precision],
        "peak_precision": peak_precision,
        "by_precision": best,
        "fp32_gflops": best["fp32"],
        "by_shape": by_precision,
        "bf16_units": bf16_units,
        "threads": threads,
    }


if (
    __name__ == "__main__"
):  # in its own process: python -m pairbert.benchmarks.gemm_peak HIDDEN THREADS SECONDS
    import json
    import sys

    hidden, threads, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    print(json.dumps(gemm_peak_gflops(hidden=hidden, threads=threads, seconds=seconds)))
