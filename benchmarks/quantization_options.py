"""Which dynamic-int8 options to ship? Accuracy and speed of each on this CPU.

    python -m pairbert.benchmarks.quantization_options BUNDLE_DIR [--out results.json]

Quantizes the bundle's optimized graph with every combination of weight type (QInt8/QUInt8), per-channel,
reduce_range and keeping the FFN output MatMuls in fp32; reports label agreement and |Δprob| against the
optimized fp32 graph on the validation split, and batch-1 / batch-32 latency on the same pairs, all in one
process.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> list[dict]:  # long: one sweep script, read top to bottom
    from pairbert.builtin_data import BUILTIN_VALIDATION
    from pairbert.export.precision import Int8Options, quantize_int8
    from pairbert.export.validation import make_session, parity_figures
    from pairbert.runtime.bundle import bundle_encoder, read_manifest
    from pairbert.runtime.pair_files import read_pairs

    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("--data", default=str(BUILTIN_VALIDATION))
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    bundle = Path(args.bundle)
    manifest = read_manifest(bundle)
    encoder = bundle_encoder(bundle, manifest)
    pairs = read_pairs(args.data)
    feeds = [
        encoder.encode([p.question for p in pairs[i : i + 32]], [p.answer for p in pairs[i : i + 32]])
        for i in range(0, len(pairs), 32)
    ]
    single = [encoder.encode([p.question], [p.answer]) for p in pairs[:40]]
    names = manifest.contract.output_names

    def measure(path: Path) -> tuple[np.ndarray, float, float]:
        s = make_session(path)
        logits = np.concatenate([s.run(names, f)[0] for f in feeds])
        for f in single[:5]:
            s.run(names, f)
        t = time.perf_counter()
        for f in single:
            s.run(names, f)
        b1 = (time.perf_counter() - t) / len(single) * 1e3
        t = time.perf_counter()
        for f in feeds:
            s.run(names, f)
        b32 = (time.perf_counter() - t) / len(pairs) * 1e3
        return logits, b1, b32

    base = bundle / manifest.variants["optimized"].file
    ref, b1, b32 = measure(base)
    rows = [{"options": "fp32 optimized", "batch1_ms": round(b1, 3), "ms_per_pair_b32": round(b32, 3)}]
    print(f"{'options':45} {'agree':>7} {'mean|Δp|':>9} {'max|Δp|':>8} {'b1 ms':>7} {'b32 ms/pair':>11}")
    print(f"{'fp32 optimized (reference)':45} {'':>7} {'':>9} {'':>8} {b1:7.2f} {b32:11.3f}")
    with tempfile.TemporaryDirectory() as tmp:
        for wt, pc, rr, ffn in itertools.product(
            ("QInt8", "QUInt8"), (False, True), (False, True), (False, True)
        ):
            opts = Int8Options(weight_type=wt, per_channel=pc, reduce_range=rr, ffn_output_fp32=ffn)
            path = Path(tmp) / f"{opts.label()}.onnx"
            quantize_int8(base, path, opts)
            logits, b1, b32 = measure(path)
            fig = parity_figures(ref, logits)
            row = {
                "options": opts.label(),
                **opts.__dict__,
                "label_agreement": fig["label_agreement"],
                "mean_abs_prob_diff": fig["mean_abs_prob_diff"],
                "max_abs_prob_diff": fig["max_abs_prob_diff"],
                "batch1_ms": round(b1, 3),
                "ms_per_pair_b32": round(b32, 3),
            }
            rows.append(row)
            print(
                f"{opts.label():45} {fig['label_agreement']:7.2%} {fig['mean_abs_prob_diff']:9.4f} "
                f"{fig['max_abs_prob_diff']:8.4f} {b1:7.2f} {b32:11.3f}",
                flush=True,
            )
            path.unlink()
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
