"""The batch-1 kernel floor: how long ONNX Runtime needs for the model's GEMMs alone, nothing else.

A graph holding only the dual-order BERT's MatMuls (per branch and layer: QKV [H, 3H], attention output
[H, H], FFN in [H, I], FFN out [I, H]) at the batch-1 shape, outputs bound once through IO binding so a
run is kernel time only. No attention, LayerNorm, GELU, embeddings, head or tokenization: any real graph
needs at least this long, so `torch p50 / floor` is the best speed-up over torch any ORT graph of this
model can reach on this machine. Measured in fp32 and with the same dynamic int8 quantization the bundle
uses (QInt8, per-channel; every MatMul quantized, which is faster than the shipped variant).

    python -m pairbert.benchmarks.kernel_floor HIDDEN INTERMEDIATE LAYERS TOKENS THREADS RUNS

TOKENS is each branch's length, comma-separated (QA,AQ: a towers graph feeds each order its own length), or
one number for both. Each branch's GEMMs are timed at its own length and the times added.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .gemm_peak import cpu_session, onnx_model


def gemm_shapes(hidden: int, intermediate: int) -> list[tuple[int, int]]:
    """(K, N) of one layer's weight GEMMs, in the order BERT runs them."""
    return [(hidden, 3 * hidden), (hidden, hidden), (hidden, intermediate), (intermediate, hidden)]


def gemm_flops(tokens: int, hidden: int, intermediate: int, layers: int, branches: int = 2) -> float:
    return branches * layers * sum(2 * tokens * k * n for k, n in gemm_shapes(hidden, intermediate))


def matmul_only_model(hidden: int, intermediate: int, layers: int, branches: int = 2):
    """Every weight GEMM of the model as an independent MatMul reading [1, S, K] inputs."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, weights, outputs = [], [], []
    for i in range(branches * layers):
        for j, (k, n) in enumerate(gemm_shapes(hidden, intermediate)):
            w = f"w{i}_{j}"
            weights.append(
                numpy_helper.from_array((rng.standard_normal((k, n)) * 0.05).astype(np.float32), w)
            )
            nodes.append(helper.make_node("MatMul", [f"x{k}", w], [f"y{i}_{j}"]))
            outputs.append(helper.make_tensor_value_info(f"y{i}_{j}", TensorProto.FLOAT, [1, "s", n]))
    inputs = [
        helper.make_tensor_value_info(f"x{k}", TensorProto.FLOAT, [1, "s", k])
        for k in sorted({hidden, intermediate})
    ]
    return onnx_model(helper.make_graph(nodes, "gemm_floor", inputs, outputs, weights))


def _p50_ms(path: Path, tokens: int, threads: int, runs: int) -> float:
    import onnxruntime as ort

    session = cpu_session(path, threads)
    binding = session.io_binding()
    rng = np.random.default_rng(1)
    for i in session.get_inputs():
        binding.bind_cpu_input(i.name, rng.standard_normal((1, tokens, i.shape[2])).astype(np.float32))
    for o in session.get_outputs():
        out = ort.OrtValue.ortvalue_from_shape_and_type((1, tokens, o.shape[2]), np.float32)
        binding.bind_ortvalue_output(o.name, out)
    for _ in range(max(10, runs // 10)):
        session.run_with_iobinding(binding)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run_with_iobinding(binding)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def kernel_floor(
    hidden: int, intermediate: int, layers: int, tokens: list[int], threads: int, runs: int = 300
) -> dict:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = matmul_only_model(hidden, intermediate, layers, branches=1)
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "floor.fp32.onnx", Path(tmp) / "floor.int8.onnx"
        onnx.save(model, str(fp32))
        quantize_dynamic(
            str(fp32),
            str(int8),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
        )
        result = {
            "fp32_ms": sum(_p50_ms(fp32, t, threads, runs) for t in tokens),
            "int8_ms": sum(_p50_ms(int8, t, threads, runs) for t in tokens),
        }
    gflop = sum(gemm_flops(t, hidden, intermediate, layers, branches=1) for t in tokens) / 1e9
    return {
        "tokens": tokens,
        "threads": threads,
        "matmuls": len(model.graph.node) * len(tokens),
        "gflop": gflop,
        **result,
        "fp32_gflops": gflop / (result["fp32_ms"] / 1e3),
        "int8_gops": gflop / (result["int8_ms"] / 1e3),
    }


if __name__ == "__main__":
    h, i, layers = (int(a) for a in sys.argv[1:4])
    try:
        tokens = [int(t) for t in sys.argv[4].split(",")]
    except ValueError:
        tokens = []
    if len(tokens) not in (1, 2) or min(tokens, default=0) < 1:
        raise SystemExit(f"TOKENS must be one or two positive integers (QA,AQ), got {sys.argv[4]!r}")
    threads, runs = int(sys.argv[5]), int(sys.argv[6])
    print(json.dumps(kernel_floor(h, i, layers, tokens * (2 // len(tokens)), threads, runs)))
