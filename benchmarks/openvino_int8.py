"""Which static-int8 recipe to ship for OpenVINO? Accuracy and speed of each on this CPU.

    python -m pairbert.benchmarks.openvino_int8 BUNDLE_DIR [--train FILE] [--out results.json]

Quantizes the bundle's fp32 graph with each recipe (export/static_int8.py: NNCF post-training quantization,
calibrated as export does on the first CALIBRATION_PAIRS training pairs), then compares every graph with
OpenVINO fp32 on the same graph: label agreement on the validation split (what the export gate reads) and on
held-aside pairs (the rest of the training file, which no recipe was calibrated on: ~2,000 pairs, so a
0.3-point difference is a few pairs, not one), and model-only time per call at batch 1 (40 validation pairs)
and per pair at batch 32, with what int8 leaves unquantized computed in bf16 and in fp32. One process,
2 threads, so the rows compare with one another.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

RECIPES = (  # (transformer, overflow_fix, keep_ffn_output_layers, symmetric); the first is what export ships
    (True, True, 2, True),
    (True, True, 2, False),
    (True, True, 0, True),
    (True, True, 6, True),
    (True, False, 2, True),
    (False, True, 2, True),
)


def main(argv: list[str] | None = None) -> list[dict]:  # long: one sweep script, read top to bottom
    import tempfile

    import openvino as ov

    from pairbert.builtin_data import BUILTIN_TRAIN, BUILTIN_VALIDATION
    from pairbert.export.static_int8 import (
        CALIBRATION_BATCH,
        CALIBRATION_PAIRS,
        StaticInt8Options,
        quantize_static,
    )
    from pairbert.export.validation import parity_figures
    from pairbert.runtime.bundle import bundle_encoder, read_manifest
    from pairbert.runtime.pair_files import read_pairs

    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("--train", default=str(BUILTIN_TRAIN))
    ap.add_argument("--validation", default=str(BUILTIN_VALIDATION))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    bundle = Path(args.bundle)
    manifest = read_manifest(bundle)
    encoder = bundle_encoder(bundle, manifest)

    def feeds(pairs, size):
        return [
            encoder.encode([p.question for p in pairs[i : i + size]], [p.answer for p in pairs[i : i + size]])
            for i in range(0, len(pairs), size)
        ]

    train = read_pairs(args.train)
    calibration = feeds(train[:CALIBRATION_PAIRS], CALIBRATION_BATCH)
    validation = feeds(read_pairs(args.validation), 32)
    aside = feeds(train[CALIBRATION_PAIRS:], 32)
    single = feeds(read_pairs(args.validation)[:40], 1)
    n_validation = sum(len(f["qa_input_ids"]) for f in validation)
    core = ov.Core()

    def compiled(path: Path, precision: str):
        config = {"INFERENCE_NUM_THREADS": args.threads, "INFERENCE_PRECISION_HINT": precision}
        return core.compile_model(core.read_model(str(path)), "CPU", config)

    def logits(model, batches) -> np.ndarray:
        request = model.create_infer_request()
        return np.concatenate([np.array(request.infer(f)[0]) for f in batches])

    def timed(model) -> tuple[float, float]:
        request = model.create_infer_request()
        for f in single[:5] + validation[:2]:
            request.infer(f)
        b1 = []
        for _ in range(3):
            for f in single:
                t = time.perf_counter()
                request.infer(f)
                b1.append(time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(3):
            for f in validation:
                request.infer(f)
        b32 = (time.perf_counter() - t) / (3 * n_validation)
        return float(np.median(b1) * 1e3), b32 * 1e3

    fp32_path = bundle / manifest.variants["fp32"].file
    reference = compiled(fp32_path, "f32")
    ref_val, ref_aside = logits(reference, validation), logits(reference, aside)
    rows = []
    print(
        f"{'graph':38} {'rest':>5} {'val agree':>9} {'aside agree':>11} {'max|Δp|':>8} {'b1 ms':>7} "
        f"{'b32 ms/pair':>11}"
    )

    def row(label: str, path: Path, precision: str, extra: dict) -> None:
        model = compiled(path, precision)
        val = parity_figures(ref_val, logits(model, validation))
        aside_fig = parity_figures(ref_aside, logits(model, aside))
        b1, b32 = timed(model)
        rows.append(
            {
                "graph": label,
                "rest_precision": precision,
                **extra,
                "validation_agreement": val["label_agreement"],
                "held_aside_agreement": aside_fig["label_agreement"],
                "held_aside_pairs": aside_fig["pairs"],
                "max_abs_prob_diff": max(val["max_abs_prob_diff"], aside_fig["max_abs_prob_diff"]),
                "batch1_ms": round(b1, 3),
                "ms_per_pair_b32": round(b32, 3),
            }
        )
        print(
            f"{label:38} {precision:>5} {val['label_agreement']:9.2%} {aside_fig['label_agreement']:11.2%} "
            f"{rows[-1]['max_abs_prob_diff']:8.4f} {b1:7.2f} {b32:11.3f}",
            flush=True,
        )

    for precision in ("f32", "bf16"):
        row("fp32 graph", fp32_path, precision, {})
    with tempfile.TemporaryDirectory() as tmp:
        for transformer, overflow_fix, keep, symmetric in RECIPES:
            options = StaticInt8Options(transformer, overflow_fix, keep, symmetric)
            path = Path(tmp) / f"{options.label()}.onnx"
            quantize_static(fp32_path, path, calibration, options)
            for precision in ("bf16", "f32"):
                row(options.label(), path, precision, dict(options.__dict__))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
