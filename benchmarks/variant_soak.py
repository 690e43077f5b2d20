"""Does a variant keep answering like the fp32 graph under varied shapes, for a while? (A load-time check
runs one shape once; on an AMX machine pairbert's OpenVINO bf16 sessions crashed or went wrong only after
seconds of varied lengths.) Run it in its own process: a native crash is then the process's exit status.

    python -m pairbert.benchmarks.variant_soak BUNDLE VARIANT [--reference fp32] [--rounds 3]
        [--batches 1,3,8,32] [--pairs 400] [--threads 2]

Every round predicts the same pairs (the validation split and the built-in mix, cycled to --pairs) at each
batch size with VARIANT and compares with the reference variant's answers (computed once): label
agreement and max |Δprob| per round and batch size. Prints one JSON object; exit 1 if any round fell under
its bar: the 99.5 % agreement `auto` asks for, or for a variant `auto` never chooses (openvino-int8) its
own gate's 99 %.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from pairbert.export.validation import PARITY_RULES
from pairbert.runtime.errors import PairbertError
from pairbert.runtime.variants import AUTO_MIN_AGREEMENT, BY_NAME_ONLY

from .workloads import mixed_job


def soak(
    bundle: Path, variant: str, reference: str, rounds: int, batches: list[int], pairs: int, threads: int
) -> dict:
    from pairbert.runtime.predictor import PairClassifier

    job = mixed_job(pairs)
    with PairClassifier.load(bundle, variant=reference, threads=threads) as ref:
        expected = ref.predict(job, batch_size=32).probabilities
    started = time.perf_counter()
    runs = []
    with PairClassifier.load(bundle, variant=variant, threads=threads) as clf:
        for round_ in range(rounds):
            for batch in batches:
                got = clf.predict(job, batch_size=batch).probabilities
                runs.append(
                    {
                        "round": round_,
                        "batch": batch,
                        "agreement": float((got.argmax(-1) == expected.argmax(-1)).mean()),
                        "max_abs_prob_diff": float(np.abs(got - expected).max()),
                    }
                )
        provider = clf.provider
    worst = min(r["agreement"] for r in runs)
    bar = PARITY_RULES[variant].min_label_agreement if variant in BY_NAME_ONLY else AUTO_MIN_AGREEMENT
    return {
        "variant": variant,
        "reference": reference,
        "provider": provider,
        "pairs": len(job),
        "predictions": len(job) * len(runs),
        "seconds": round(time.perf_counter() - started, 2),
        "worst_agreement": worst,
        "max_abs_prob_diff": max(r["max_abs_prob_diff"] for r in runs),
        "bar": bar,
        "passed": worst >= bar,
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pairbert.benchmarks.variant_soak", description=__doc__)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("variant")
    ap.add_argument("--reference", default="fp32")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", default="1,3,8,32", help="comma-separated batch sizes")
    ap.add_argument("--pairs", type=int, default=400)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        ap.error(f"--batches {args.batches!r}: comma-separated whole numbers")
    try:
        report = soak(
            args.bundle, args.variant, args.reference, args.rounds, batches, args.pairs, args.threads
        )
    except PairbertError as exc:  # a bundle, variant or backend that cannot load: one line, not a traceback
        print(f"variant_soak: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
