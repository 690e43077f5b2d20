"""From how many pairs a shared question pays for being fed once: `predict` on calls where every question is
asked of k answers, with the grouping threshold at k (each question fed once, a run of its own) and out of
reach (every row fed, runs bucketed by length as usual), in turns on one loaded session.

    python -m pairbert.benchmarks.shared_question_threshold BUNDLE [--variant auto] [--texts 2 3 4 6 8]

Each call holds 32 pairs (48 where k is 3 or 6) of the built-in validation split's questions and answers
(a fixed draw); ten calls a timing, the best of four rounds. Prints ms per call both ways and their ratio
(above 1: grouping is faster), which sets `runtime/predictor.py`'s SHARED_QUESTION_PAIRS per backend.
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

        def run(threshold: int, calls=calls) -> None:
            clf.shared_question_pairs = threshold
            for pairs in calls:
                clf.predict(pairs, batch_size=32)

        timed = in_turns(
            {"grouped": lambda t, k=k: run(k), "every row": lambda t: run(10**9)},
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
