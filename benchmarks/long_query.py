"""Tokenization time of one long query paired with many short texts (what `rank` and `/rerank` do).

    python -m pairbert.benchmarks.long_query BUNDLE [--pairs 256]

For each kind of 20,000-character query (words, CJK, one unbroken run, a repeated sentence): the seconds to
tokenize it with `--pairs` short texts in one call, and a check that every pair's encoding equals the pair's
encoding on its own.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

QUERIES = {
    "words": "word " * 4000,
    "cjk": "中" * 20_000,
    "unbroken": "a" * 20_000,
    "sentence": "what is paris " * 1500,
}


def main(argv: list[str] | None = None) -> dict:
    from pairbert.runtime.bundle import bundle_encoder, read_manifest

    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("--pairs", type=int, default=256)
    args = ap.parse_args(argv)
    bundle = Path(args.bundle)
    encoder = bundle_encoder(bundle, read_manifest(bundle))
    texts = [f"answer number {i}" for i in range(args.pairs)]
    out = {}
    for kind, query in QUERIES.items():
        started = time.perf_counter()
        qa, aq = encoder.tokenize([query] * len(texts), texts)
        seconds = time.perf_counter() - started
        alone_qa, alone_aq = encoder.tokenize([query], texts[-1:])
        assert (qa[-1].ids, aq[-1].ids) == (alone_qa[0].ids, alone_aq[0].ids), kind
        out[kind] = round(seconds, 3)
        print(f"{kind:>9}: {len(query)} characters × {len(texts)} pairs: {seconds:.3f} s", flush=True)
    return out


if __name__ == "__main__":
    main()
