"""What the first-segment feed buys a towers bundle: one loaded session, fed whole pairs and cut pairs in
alternating rounds (so load drift hits both alike), end to end through `PairClassifier.predict`. Where the
graph takes each order at its own length, the cut pairs are also fed with both orders padded to one length
(how graphs exported before were fed), to show what the separate lengths add.

    python -m pairbert.benchmarks.feed_ab BUNDLE [--variant optimized] [--rounds 5] [--out feed_ab.json]

Reports label agreement and max |Δprob| between the two feeds on the validation split, batch-1 p50 over 60
validation pairs and batch-32 throughput on 256 mixed built-in pairs; per feed the best round (the least
disturbed by other load) and every round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

ONE_LENGTH = "first-segment, one length"  # both orders padded to one length


def _timed(clf, encoder, pairs, batch_size: int):
    clf.encoder = encoder
    start = time.perf_counter()
    out = clf.predict(pairs, batch_size=batch_size)
    return time.perf_counter() - start, out


def compare(bundle: Path, variant: str, threads: int, rounds: int) -> dict:
    from pairbert.runtime import PairClassifier

    from .machine import cpu_description
    from .workloads import mixed_job, validation_pairs

    clf = PairClassifier.load(bundle, variant=variant, threads=threads)
    if clf.encoder.feed == "pair":
        raise SystemExit(f"{bundle}: fed whole pairs (manifest feed 'pair'): nothing to compare")
    feeds = {"pair": clf.encoder.with_feed("pair").with_apart(False)}
    if clf.encoder.apart:
        feeds[ONE_LENGTH] = clf.encoder.with_apart(False)
    feeds[clf.encoder.feed] = clf.encoder
    validation = [(p.question, p.answer) for p in validation_pairs()]
    job = mixed_job(256)
    answers = {name: _timed(clf, encoder, validation, 32)[1] for name, encoder in feeds.items()}
    whole = answers["pair"]
    agreement = {  # every other feed against whole pairs
        name: {
            "labels_agree": float((whole.labels == out.labels).mean()),
            "max_abs_prob_diff": float(np.abs(whole.probabilities - out.probabilities).max()),
        }
        for name, out in answers.items()
        if name != "pair"
    }
    result = {
        "bundle": str(bundle),
        "variant": clf.variant,
        "cpu": cpu_description(),
        "labels_agree": min(a["labels_agree"] for a in agreement.values()),
        "max_abs_prob_diff": max(a["max_abs_prob_diff"] for a in agreement.values()),
        "against_whole_pairs": agreement,
        "rounds": {name: {"b1_p50_ms": [], "b32_pairs_per_s": []} for name in feeds},
    }
    for _ in range(rounds):
        for name, encoder in feeds.items():
            singles = [_timed(clf, encoder, [pair], 1)[0] for pair in validation[:60]]
            rec = result["rounds"][name]
            rec["b1_p50_ms"].append(round(statistics.median(singles) * 1e3, 3))
            rec["b32_pairs_per_s"].append(round(len(job) / _timed(clf, encoder, job, 32)[0], 1))
    result["best"] = {
        name: {"b1_p50_ms": min(r["b1_p50_ms"]), "b32_pairs_per_s": max(r["b32_pairs_per_s"])}
        for name, r in result["rounds"].items()
    }
    clf.close()
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--variant", default="optimized")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    result = compare(args.bundle, args.variant, args.threads, args.rounds)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    best = result["best"]
    line = f"{result['variant']}: labels agree {100 * result['labels_agree']:.1f} %, max |dprob| "
    line += f"{result['max_abs_prob_diff']:.1e}; " + _step(best["pair"], best["first-segment"])
    if ONE_LENGTH in best:
        line += "; each order at its own length: " + _step(best[ONE_LENGTH], best["first-segment"])
    print(line)


def _step(before: dict, after: dict) -> str:
    return (
        f"batch 1 p50 {before['b1_p50_ms']} -> {after['b1_p50_ms']} ms "
        f"({after['b1_p50_ms'] / before['b1_p50_ms']:.2f}x); batch 32 {before['b32_pairs_per_s']} -> "
        f"{after['b32_pairs_per_s']} pairs/s ({after['b32_pairs_per_s'] / before['b32_pairs_per_s']:.2f}x)"
    )


if __name__ == "__main__":
    main()
