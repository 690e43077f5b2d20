"""What one `tokenize` call of many long pairs costs in memory: the process's peak RSS growth during the
call, and its RSS growth while the result is held (which includes memory the allocators keep after freeing).
Run as a command, in a fresh process: the peak is the process's high-water mark.

    python -m pairbert.benchmarks.tokenizing_memory BUNDLE [--pairs 4000] [--chars 1000]

Each pair is a built-in question and answer, each grown to about `--chars` characters by repeating it (with
1,000 a side, truncation cuts every pair to max_length). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
from pathlib import Path


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"/proc/self/status has no {field} (Linux only)")


def grown(text: str, chars: int) -> str:
    return ((text + " ") * (chars // (len(text) + 1) + 1))[:chars]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--pairs", type=int, default=4000)
    parser.add_argument("--chars", type=int, default=1000)
    args = parser.parse_args(argv)

    from pairbert.runtime.bundle import bundle_encoder, read_manifest

    from .workloads import mixed_job

    encoder = bundle_encoder(args.bundle, read_manifest(args.bundle))
    job = mixed_job(args.pairs)
    questions = [grown(q, args.chars) for q, _ in job]
    answers = [grown(a, args.chars) for _, a in job]
    encoder.tokenize(questions[:2], answers[:2])  # the tokenizer's own set-up is not the call's
    gc.collect()
    rss, peak = _status_mb("VmRSS"), _status_mb("VmHWM")
    qa, aq = encoder.tokenize(questions, answers)
    grew, held = _status_mb("VmHWM") - max(rss, peak), _status_mb("VmRSS") - rss
    out = {
        "pairs": args.pairs,
        "chars_a_side": args.chars,
        "tokens_fed_a_pair": round(sum(map(encoder.fed_length, qa, aq)) / args.pairs, 1),
        "peak_rss_growth_mb": round(grew, 1),
        "held_rss_growth_kb_a_pair": round(held * 1024 / args.pairs, 1),
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
