"""What the towers' encoder spends tokenizing: each text encoded once on its own (where the pair fits
untruncated, as the runtime does) against every pair encoded in both orders, in turns on one encoder.

    python -m pairbert.benchmarks.tokenizing BUNDLE [--rounds 4]

Prints the best round's ms for 1,000 built-in pairs (one `tokenize` call), for the same pairs with answers
of ~900 characters (which truncation cuts), and µs for one short pair, both ways, as one JSON line; the fed
ids are checked to be the same.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

WAYS = {"texts alone": True, "pairs in both orders": False}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)

    from pairbert.runtime.bundle import bundle_encoder, read_manifest

    from .turns import in_turns
    from .workloads import mixed_job

    encoder = bundle_encoder(args.bundle, read_manifest(args.bundle))
    if encoder.feed != "first-segment" or not encoder._singles_are_first_segments:
        raise SystemExit(f"{args.bundle}: this bundle's encoder always encodes pairs (nothing to compare)")
    job = mixed_job(1000)
    mix = ([q for q, _ in job], [a for _, a in job])
    # the same questions with answers of ~900 characters (a passage each): pairs that truncation cuts
    cut = (mix[0], [(a + " ") * (900 // (len(a) + 1) + 1) for a in mix[1]])
    short = (["How long should I boil an egg for a soft yolk?"], ["About six minutes."])
    for texts in (mix, cut):
        fed = {}
        for way, alone in WAYS.items():
            encoder._singles_are_first_segments = alone
            fed[way] = [e.ids[: encoder.kept_length(e)] for order in encoder.tokenize(*texts) for e in order]
        if fed["texts alone"] != fed["pairs in both orders"]:
            raise SystemExit(
                "the two ways fed different ids"
            )  # a bug: tests/test_first_segment_tokenizing.py

    def way(alone: bool):
        def tokenize(texts):
            encoder._singles_are_first_segments = alone
            return encoder.tokenize(*texts)

        return tokenize

    timed = in_turns(
        {name: way(alone) for name, alone in WAYS.items()},
        {"mix": (mix, 5), "cut": (cut, 3), "short": (short, 500)},
        rounds=args.rounds,
    )
    out = {
        name: {
            "1000_pairs_ms": round(min(timed[name]["mix"]), 2),
            "1000_cut_pairs_ms": round(min(timed[name]["cut"]), 2),
            "short_pair_us": round(1e3 * min(timed[name]["short"]), 1),
        }
        for name in WAYS
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
