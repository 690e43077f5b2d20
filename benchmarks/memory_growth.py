"""Does the predictor's memory creep over many predictions of varied shapes?

    python -m pairbert.benchmarks.memory_growth BUNDLE VARIANT THREADS PREDICTIONS WARMUP   → one JSON line

RSS swings by ~20 % from one call to the next (each run's buffers are allocated and freed), so a single
reading says little: the run's first and second halves are compared by their peak and by their median.
"""

from __future__ import annotations

import json
import random
import statistics
import sys


def varied_job(rows: list, rng: random.Random) -> list[tuple[str, str]]:
    """1 to 32 pairs, answers repeated up to 4 times: many different (batch, length) shapes."""
    k = rng.choice([1, 1, 1, 2, 3, 5, 8, 13, 32])
    picks = [rng.choice(rows) for _ in range(k)]
    reps = rng.choice([1, 1, 2, 4])
    return [(p.question, " ".join([p.answer] * reps)) for p in picks]


def summary(samples: list[tuple[int, float]], predictions: int) -> dict:
    window = predictions / 2
    first = [r for n, r in samples if n <= window]
    last = [r for n, r in samples if n > window]

    def stats(xs: list[float]) -> dict:
        return {"peak": max(xs), "median": statistics.median(xs), "low": min(xs)}

    a, b = stats(first), stats(last)
    return {
        "predictions": samples[-1][0],
        "window_predictions": window,
        "first_window_mb": a,
        "last_window_mb": b,
        "growth_pct": 100 * (b["peak"] - a["peak"]) / a["peak"],
        "median_growth_pct": 100 * (b["median"] - a["median"]) / a["median"],
    }


def main(argv: list[str]) -> dict:
    bundle, variant, threads, predictions, warmup = argv[0], argv[1], int(argv[2]), int(argv[3]), int(argv[4])
    from pairbert.runtime import PairClassifier

    from .machine import current_rss_mb
    from .workloads import builtin_pairs

    clf = PairClassifier.load(bundle, variant=variant, threads=threads)
    rows, rng = builtin_pairs(), random.Random(0)
    done = 0
    while done < warmup:
        done += len(clf.predict(varied_job(rows, rng)))
    samples: list[tuple[int, float]] = []
    done = 0
    while done < predictions:
        done += len(clf.predict(varied_job(rows, rng)))
        samples.append((done, current_rss_mb()))
    return summary(samples, predictions)


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
