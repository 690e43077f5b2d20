"""From how many pairs a shared question pays for being fed once: `predict` on calls where every question is
asked of k answers, grouped (the threshold at k: each question fed once, in runs of its own) against every
row fed (`question_once = False`: runs bucketed by length as usual), in turns on one loaded session.

    python -m pairbert.benchmarks.shared_question_threshold BUNDLE [--variant auto] [--texts 2 3 4 6 8]

Each call holds the questions of the built-in validation split asked of k of its answers (a fixed draw):
32 pairs where k divides 32, else as many questions as fit in 48 pairs. Ten calls a timing, the best of four
rounds. Prints ms per call both ways and their ratio (above 1: grouping is faster), what sets
`runtime/predictor.py`'s SHARED_QUESTION_PAIRS (and SHARED_QUESTION_PAIRS_ORT_CPU for ONNX Runtime on the
CPU).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _calls(texts: int, calls: int = 10, seed: int = 0) -> list[list[tuple[str, str]]]:
    from .workloads import validation_pairs

    rows = validation_pairs()
    questions = list(dict.fromkeys(r.question for r in rows))
    answers = list(dict.fromkeys(r.answer for r in rows))
    per_call = (48 if 32 % texts else 32) // texts
    rng = np.random.default_rng(seed)
    return [
        [
            (questions[(c * per_call + q) % len(questions)], answers[a])
            for q in range(per_call)
            for a in rng.choice(len(answers), texts, replace=False)
        ]
        for c in range(calls)
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--variant", default="auto")
    parser.add_argument("--texts", type=int, nargs="+", default=[2, 3, 4, 6, 8])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)

    from pairbert.runtime import PairClassifier

    from .turns import in_turns

    clf = PairClassifier.load(args.bundle, variant=args.variant, threads=args.threads)
    if not clf.question_once:
        raise SystemExit(f"{args.bundle}: this bundle feeds every pair's question (no grouping to time)")
    out = {"variant": clf.variant, "provider": clf.provider, "threshold": clf.shared_question_pairs}
    for k in args.texts:
        if k < 2:
            raise SystemExit(f"--texts must be at least 2, got {k}")
        calls = _calls(k)

        def run(grouped: bool, k: int = k, calls=calls) -> None:
            clf.question_once = grouped
            clf.shared_question_pairs = k
            for pairs in calls:
                clf.predict(pairs, batch_size=32)

        timed = in_turns(
            {"grouped": lambda _: run(True), "every row": lambda _: run(False)},
            {"calls": (None, 1)},
            rounds=args.rounds,
            warmup=1,
        )
        grouped, every = (min(timed[name]["calls"]) / len(calls) for name in ("grouped", "every row"))
        out[f"{k} texts a question"] = {
            "pairs_a_call": len(calls[0]),
            "grouped_ms": round(grouped, 2),
            "every_row_ms": round(every, 2),
            "ratio": round(every / grouped, 2),
        }
        print(
            f"{len(calls[0]) // k} questions x {k} texts: grouped {grouped:.1f} ms a call, every row "
            f"{every:.1f} ms, {every / grouped:.2f}x",
            flush=True,
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
