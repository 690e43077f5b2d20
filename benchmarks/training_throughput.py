"""Training speed: pairbert's loop (length-grouped batches, dynamic padding) vs the seed notebook's
(random batches, every sequence padded to 128). Same model, same data, same optimizer, one process.

    python -m pairbert.benchmarks.training_throughput [--source minilm] [--steps 20] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import random
import time


def main(argv: list[str] | None = None) -> dict:  # long: one script read top to bottom (two timed loops)
    import torch

    from pairbert.builtin_data import BUILTIN_TRAIN
    from pairbert.runtime.pair_files import read_pairs
    from pairbert.runtime.tokenization import PairEncoder
    from pairbert.training.batches import encode_batch, pad_to_max_length, training_batches
    from pairbert.training.loop import weight_decay_groups
    from pairbert.training.weights import build_model, tokenizer_file_for

    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default="minilm")
    ap.add_argument("--tokenizer")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    pairs = read_pairs(BUILTIN_TRAIN, require_label=True)
    encoder = PairEncoder.from_file(args.tokenizer or tokenizer_file_for(args.source), 128)
    lengths = encoder.lengths([p.question for p in pairs], [p.answer for p in pairs])

    def loop(name: str) -> dict:
        torch.manual_seed(0)
        model = build_model(args.source, vocab_size=encoder.tokenizer.get_vocab_size())
        model.train()
        optimizer = torch.optim.AdamW(weight_decay_groups(model, 0.01), lr=5e-5)
        if name == "pairbert":
            batches = training_batches(lengths, args.batch_size, seed=0)
        else:  # the notebook: shuffled, fixed-size batches, padded to max_length
            order = list(range(len(pairs)))
            random.Random(0).shuffle(order)
            batches = [order[i : i + args.batch_size] for i in range(0, len(order), args.batch_size)]
        batches = [b for b in batches if len(b) == args.batch_size]
        batches = (batches * (args.steps // len(batches) + 2))[: args.steps + 2]
        tokens, seen, elapsed = 0, 0, 0.0
        for step, idx in enumerate(batches):
            t = time.perf_counter()
            batch = encode_batch(encoder, [pairs[i] for i in idx])
            if name == "notebook":
                batch = pad_to_max_length(batch, 128)
            loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if step >= 2:  # the first two steps warm up allocators and kernels
                elapsed += time.perf_counter() - t
                seen += len(idx)
                tokens += batch["qa_input_ids"].numel()
        return {
            "loop": name,
            "pairs_per_s": seen / elapsed,
            "steps": len(batches) - 2,
            "padded_tokens_per_pair": tokens / seen,
        }

    results = [loop("notebook"), loop("pairbert")]
    report = {
        "source": args.source,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "results": results,
        "speedup": results[1]["pairs_per_s"] / results[0]["pairs_per_s"],
    }
    for r in results:
        print(
            f"{r['loop']:>9}: {r['pairs_per_s']:.1f} pairs/s ({r['padded_tokens_per_pair']:.0f} tokens "
            f"per pair "
            f"per branch, {r['steps']} steps)"
        )
    print(f"speed-up: {report['speedup']:.2f}×")
    return report


if __name__ == "__main__":
    print(json.dumps(main()))
