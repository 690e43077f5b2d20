"""The GPU's matrix rate, the yardstick for "% of peak" on CUDA: torch.matmul in fp16 and bf16 (cuBLAS on the
tensor cores) on the model's three GEMM shapes ([tokens, H] x [H, H], [H, 4H], [4H, H]) and on one large
square product (what the card can do at all). Timed with CUDA events after a warm-up.

    python -m pairbert.benchmarks.gpu_peak --hidden 384 --tokens 8192   (prints JSON; needs a CUDA torch)
"""

from __future__ import annotations

import argparse
import json


def _tflops(torch, m: int, k: int, n: int, dtype, iterations: int) -> float:
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    w = torch.randn(k, n, device="cuda", dtype=dtype)
    for _ in range(3):
        torch.matmul(x, w)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iterations):
        torch.matmul(x, w)
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1e3
    return 2 * m * k * n * iterations / seconds / 1e12


def gpu_peak(hidden: int, tokens: int, square: int = 8192, iterations: int = 50) -> dict:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("gpu_peak needs a CUDA build of torch and a GPU")
    shapes = [(hidden, hidden), (hidden, 4 * hidden), (4 * hidden, hidden)]
    result: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "by_precision": {}}
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        model_shapes = {
            f"{tokens}x{k}x{n}": _tflops(torch, tokens, k, n, dtype, iterations) for k, n in shapes
        }
        result["by_precision"][name] = {
            "model_shapes_tflops": model_shapes,
            "model_shapes_best_tflops": max(model_shapes.values()),
            f"square_{square}_tflops": _tflops(torch, square, square, square, dtype, max(5, iterations // 5)),
        }
    best = max(result["by_precision"].values(), key=lambda r: r[f"square_{square}_tflops"])
    result["peak_tflops"] = best[f"square_{square}_tflops"]  # the card's half-precision matrix rate
    result["model_shape_peak_tflops"] = max(
        r["model_shapes_best_tflops"] for r in result["by_precision"].values()
    )
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pairbert.benchmarks.gpu_peak", description=__doc__)
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--tokens", type=int, default=32 * 128 * 2, help="rows of the GEMM (batch × length × 2)")
    args = ap.parse_args(argv)
    print(json.dumps(gpu_peak(args.hidden, args.tokens), indent=1))


if __name__ == "__main__":
    main()
