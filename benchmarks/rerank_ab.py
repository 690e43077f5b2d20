"""What feeding a shared question once buys a rerank: one loaded session, `PairClassifier.rank` of each query
against its candidate texts with the query's row fed once (as loaded, where the bundle allows it) and fed
once per pair, in alternating rounds (so load drift hits both alike).

    python -m pairbert.benchmarks.rerank_ab BUNDLE [--variant auto] [--texts 32] [--queries 24] [--rounds 5]

Queries are the built-in validation split's questions; each is ranked against its true answer and
`texts - 1` other answers of the split (a fixed draw). Reports ms per rerank (the median query of the best
round, and every round's), the two paths' max |Δprob|, and how often the true answer comes first with each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

PATHS = ("question once", "question per pair")


def _jobs(texts: int, queries: int, seed: int = 0) -> list[tuple[str, list[str], int]]:
    """(query, candidate texts, index of its true answer) for the first `queries` validation questions."""
    from .workloads import validation_pairs

    true = {}
    for pair in validation_pairs():
        if pair.label == 1:
            true.setdefault(pair.question, pair.answer)
    pool = sorted({pair.answer for pair in validation_pairs()})
    if texts < 2 or texts > len(pool):
        raise SystemExit(f"--texts must be 2..{len(pool)} (the split's distinct answers), got {texts}")
    rng = np.random.default_rng(seed)
    jobs = []
    for question, answer in list(true.items())[:queries]:
        others = [a for a in pool if a != answer]
        candidates = [others[i] for i in rng.choice(len(others), texts - 1, replace=False)]
        at = int(rng.integers(texts))
        candidates.insert(at, answer)
        jobs.append((question, candidates, at))
    return jobs


def _round(clf, jobs, once: bool) -> tuple[list[float], list[list[tuple[int, float]]]]:
    clf.question_once = once
    times, ranked = [], []
    for query, texts, _ in jobs:
        start = time.perf_counter()
        ranked.append(clf.rank(query, texts))
        times.append(time.perf_counter() - start)
    return times, ranked


def compare(bundle: Path, variant: str, threads: int, texts: int, queries: int, rounds: int) -> dict:
    from pairbert.runtime import PairClassifier

    from .machine import cpu_description

    jobs = _jobs(texts, queries)
    clf = PairClassifier.load(bundle, variant=variant, threads=threads)
    if not clf.question_once:
        raise SystemExit(
            f"{bundle}: variant {clf.variant} feeds every pair's question (a cross-encoding bundle, one "
            "exported with one batch axis for both orders, or CUDA graph replay): nothing to compare"
        )
    modes = dict(zip(PATHS, (True, False), strict=True))
    answers = {name: _round(clf, jobs, once)[1] for name, once in modes.items()}  # (also warms both up)
    scores = {name: [dict(r) for r in ranked] for name, ranked in answers.items()}
    once, each = scores[PATHS[0]], scores[PATHS[1]]
    result = {
        "bundle": str(bundle),
        "variant": clf.variant,
        "provider": clf.provider,
        "threads": clf.threads,
        "cpu": cpu_description(),
        "texts": texts,
        "queries": len(jobs),
        "max_abs_prob_diff": max(abs(a[i] - b[i]) for a, b in zip(once, each, strict=True) for i in b),
        "true_answer_first": {
            name: sum(ranked[0][0] == at for ranked, (_, _, at) in zip(answers[name], jobs, strict=True))
            / len(jobs)
            for name in PATHS
        },
        "rounds_ms": {name: [] for name in PATHS},
    }
    for _ in range(rounds):
        for name, once_here in modes.items():
            times, _ = _round(clf, jobs, once_here)
            result["rounds_ms"][name].append(round(statistics.median(times) * 1e3, 2))
    clf.close()
    result["best_ms"] = {name: min(ms) for name, ms in result["rounds_ms"].items()}
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--variant", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--texts", type=int, default=32)
    ap.add_argument("--queries", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    result = compare(args.bundle, args.variant, args.threads, args.texts, args.queries, args.rounds)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    once, each = (result["best_ms"][name] for name in PATHS)
    first = result["true_answer_first"]
    print(
        f"{result['variant']} ({result['provider']}), {result['texts']} texts a query: {each} -> {once} ms a "
        f"rerank ({each / once:.2f}x as many reranks a second); "
        f"max |dprob| {result['max_abs_prob_diff']:.1e}; "
        f"true answer first {100 * first[PATHS[1]]:.1f} % -> {100 * first[PATHS[0]]:.1f} %"
    )


if __name__ == "__main__":
    main()
