"""How much does an int8 pair's answer depend on the pairs batched with it? Dynamic int8 computes each
activation's scale over the whole padded run, so a pair's probability moves with its company.

    python -m pairbert.benchmarks.int8_batching BUNDLE_DIR [--data FILE] [--batch-sizes 1,16,32]

Quantizes the bundle's optimized graph with the export's default int8 options, runs the pairs in file
order at each batch size, and reports per batch size the label agreement with the fp32 graph (batch 32),
and the largest change of P(match) and the labels that differ between batch sizes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> dict:
    from pairbert.builtin_data import BUILTIN_VALIDATION
    from pairbert.export.precision import Int8Options, quantize_int8
    from pairbert.export.validation import make_session, parity_figures, run_batches
    from pairbert.runtime.bundle import bundle_encoder, read_manifest
    from pairbert.runtime.pair_files import read_pairs
    from pairbert.runtime.predictor import softmax

    ap = argparse.ArgumentParser(prog="python -m pairbert.benchmarks.int8_batching")
    ap.add_argument("bundle")
    ap.add_argument("--data", default=str(BUILTIN_VALIDATION))
    ap.add_argument("--batch-sizes", default="1,16,32")
    args = ap.parse_args(argv)
    bundle = Path(args.bundle)
    manifest = read_manifest(bundle)
    encoder = bundle_encoder(bundle, manifest)
    pairs = read_pairs(args.data)

    def logits(path: Path, size: int) -> np.ndarray:
        session = make_session(path)
        chunks = [pairs[i : i + size] for i in range(0, len(pairs), size)]
        feeds = [encoder.encode([p.question for p in c], [p.answer for p in c]) for c in chunks]
        return run_batches(session, manifest.contract, feeds)

    base = bundle / manifest.variants["optimized"].file
    reference = logits(base, 32)
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        int8 = quantize_int8(base, Path(tmp) / "int8.onnx", Int8Options())
        runs = {size: logits(int8, size) for size in sizes}
    report: dict = {"pairs": len(pairs), "options": Int8Options().label(), "by_batch_size": {}}
    for size, out in runs.items():
        fig = parity_figures(reference, out)
        report["by_batch_size"][size] = {
            "label_agreement": round(fig["label_agreement"], 4),
            "max_abs_prob_diff": round(fig["max_abs_prob_diff"], 4),
        }
    match = {size: softmax(out)[:, -1] for size, out in runs.items()}
    first, last = sizes[0], sizes[-1]
    report["between_batch_sizes"] = {
        "max_abs_prob_change": round(float(max(np.abs(match[a] - match[last]).max() for a in sizes)), 4),
        f"labels_differing_{first}_vs_{last}": int((runs[first].argmax(-1) != runs[last].argmax(-1)).sum()),
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
