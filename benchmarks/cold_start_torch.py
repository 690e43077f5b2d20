"""Cold start of serving with torch in a fresh process: import + load the checkpoint + first prediction.

python -m pairbert.benchmarks.cold_start_torch CHECKPOINT THREADS   → one JSON line
"""

import time

STARTED = time.perf_counter()  # before torch is imported: the import is part of the cold start

import json  # noqa: E402
import sys  # noqa: E402


def main(argv: list[str]) -> dict:
    checkpoint, threads = argv[0], int(argv[1])
    import torch

    from pairbert.runtime.pair_files import Pair
    from pairbert.training.batches import encode_batch
    from pairbert.training.checkpoint import load_checkpoint

    torch.set_num_threads(threads)
    ckpt = load_checkpoint(checkpoint)
    loaded = time.perf_counter()
    with torch.inference_mode():
        ckpt.model(
            **encode_batch(
                ckpt.encoder, [Pair("How long should I boil an egg?", "About six minutes.")], False
            )
        )
    done = time.perf_counter()
    return {"import_load_s": loaded - STARTED, "first_prediction_s": done - loaded, "total_s": done - STARTED}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
