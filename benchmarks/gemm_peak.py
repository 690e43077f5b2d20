"""This machine's achievable fp32 GEMM rate, measured with ONNX Runtime's own MatMul on the model's shapes.

The yardstick for "% of peak": a model cannot run its GEMMs faster than the library's MatMul runs them
alone. Shapes: [tokens, H] x [H, H], [H, 4H] and [4H, H] for H = hidden.
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
    """A CPU session on `threads` intra-op threads; `model` is a ModelProto or a path."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    source = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _matmul_session(k: int, n: int, threads: int):
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((k, n)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", n])], [w],
    )
    return cpu_session(onnx_model(graph), threads)


def gemm_peak_gflops(hidden: int = 384, tokens: int = 4096, threads: int = 2, seconds: float = 1.0) -> dict:
    """Best sustained GFLOP/s over the model's three GEMM shapes (the number '% of peak' divides by)."""
    shapes = [(hidden, hidden), (hidden, 4 * hidden), (4 * hidden, hidden)]
    results = {}
    for k, n in shapes:
        session = _matmul_session(k, n, threads)
        x = np.random.default_rng(1).standard_normal((tokens, k)).astype(np.float32)
        for _ in range(3):
            session.run(None, {"x": x})
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            session.run(None, {"x": x})
            runs += 1
        elapsed = time.perf_counter() - start
        results[f"{tokens}x{k}x{n}"] = 2 * tokens * k * n * runs / elapsed / 1e9
    return {"peak_gflops": max(results.values()), "by_shape": results, "threads": threads}


if __name__ == "__main__":  # in its own process: python -m pairbert.benchmarks.gemm_peak HIDDEN THREADS SECONDS
    import json
    import sys

    hidden, threads, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    print(json.dumps(gemm_peak_gflops(hidden=hidden, threads=threads, seconds=seconds)))
