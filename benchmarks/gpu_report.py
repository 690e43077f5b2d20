"""Issue 14's figures from one GPU run: the CUDA contestants' worker results, the GPU matrix yardstick and the
fp16 gate, read from one folder and checked against the targets.

    python -m pairbert.benchmarks.gpu_report RESULTS_DIR [--hidden 384 --layers 6]   (writes gpu_summary.json)

RESULTS_DIR holds bench-<contestant>.json (benchmarks.worker output), gpu_peak.json (benchmarks.gpu_peak) and
parity.json (the re-exported bundle's per-variant gate). Torch-free: it only reads JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .flops import pair_flops

B1_TARGET_MS = 1.0  # ORT CUDA fp16 batch-1 short p50, end to end
SPEEDUP_TARGET = 3.0  # over torch fp16 eager
AGREEMENT_TARGET = 0.995


def _row(result: dict, hidden: int, layers: int, peak: dict | None) -> dict:
    row = {
        "contestant": result["contestant"],
        "precision": result["precision"],
        "load_s": round(result["load_s"], 3),
        "b1_p50_ms": {k: round(v["p50_ms"], 3) for k, v in result["latency"].items()},
        "b1_p99_ms": {k: round(v["p99_ms"], 3) for k, v in result["latency"].items()},
        "validation_accuracy": result["validation"]["accuracy"],
        "cuda_graphs": result.get("cuda_graphs"),
    }
    throughput = next(iter(result["throughput"].values()), {})  # the contestant's first (best-known) mode
    row["mix_pairs_per_s"] = {b: round(t["pairs_per_s"], 1) for b, t in throughput.items()}
    if "batch32x128" in result:
        b = result["batch32x128"]
        seconds = b["p50_ms"] / 1e3
        fed = b.get("fed_tokens", b["tokens"])
        tflops = pair_flops(b.get("branch_tokens", [fed, fed]), b["batch"], hidden, layers) / seconds / 1e12
        row["batch32x128"] = {
            "p50_ms": round(b["p50_ms"], 3),
            "pairs_per_s": round(b["batch"] / seconds, 1),
            "tflops": round(tflops, 2),
        }
        if peak:
            row["batch32x128"]["pct_of_card_peak"] = round(100 * tflops / peak["peak_tflops"], 2)
            row["batch32x128"]["pct_of_model_shape_peak"] = round(
                100 * tflops / peak["model_shape_peak_tflops"], 2
            )
    return row


def _agreement(a: dict, b: dict) -> float:
    la, lb = a["validation"]["labels"], b["validation"]["labels"]
    return sum(x == y for x, y in zip(la, lb, strict=True)) / len(la)


def summarise(folder: Path, hidden: int, layers: int) -> dict:
    results = {
        p.stem[len("bench-") :]: json.loads(p.read_text())
        for p in sorted(folder.glob("bench-*.json"))
        if p.stat().st_size
    }
    peak = json.loads((folder / "gpu_peak.json").read_text()) if (folder / "gpu_peak.json").exists() else None
    parity = json.loads((folder / "parity.json").read_text()) if (folder / "parity.json").exists() else None
    summary: dict = {
        "rows": [_row(r, hidden, layers, peak) for r in results.values()],
        "gpu_peak": peak,
        "fp16_gate": (parity or {}).get("fp16"),
    }
    reference = results.get("ort-fp32-cuda")
    if reference:
        summary["label_agreement_with_ort_fp32_cuda"] = {
            n: _agreement(r, reference) for n, r in results.items()
        }
    targets: dict = {}
    ort, torch = results.get("ort-fp16-cuda"), results.get("torch-fp16-cuda")
    if ort:
        p50 = ort["latency"]["short"]["p50_ms"]
        targets["ort_fp16_b1_short_p50_ms"] = {
            "value": round(p50, 3),
            "target": f"<= {B1_TARGET_MS}",
            "met": p50 <= B1_TARGET_MS,
        }
    if ort and torch:
        ratio = torch["latency"]["short"]["p50_ms"] / ort["latency"]["short"]["p50_ms"]
        targets["speedup_over_torch_fp16_eager_b1"] = {
            "value": round(ratio, 2),
            "target": f">= {SPEEDUP_TARGET}",
            "met": ratio >= SPEEDUP_TARGET,
        }
    gate = summary["fp16_gate"]
    if gate and "label_agreement" in gate:
        targets["fp16_label_agreement"] = {
            "value": gate["label_agreement"],
            "target": f">= {AGREEMENT_TARGET}",
            "met": gate["label_agreement"] >= AGREEMENT_TARGET,
            "validated_on": gate.get("validated_on"),
        }
    summary["targets"] = targets
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pairbert.benchmarks.gpu_report", description=__doc__)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--layers", type=int, default=6)
    args = ap.parse_args(argv)
    summary = summarise(args.folder, args.hidden, args.layers)
    (args.folder / "gpu_summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
