"""Cold start of the torch-free runtime in a fresh process: import + load + first prediction.

python -m pairbert.benchmarks.cold_start_runtime BUNDLE VARIANT THREADS   → one JSON line
"""

import time

STARTED = time.perf_counter()  # before pairbert.runtime is imported: the import is part of the cold start

import json  # noqa: E402
import sys  # noqa: E402


def main(argv: list[str]) -> dict:
    bundle, variant, threads = argv[0], argv[1], int(argv[2])
    from pairbert.runtime import PairClassifier

    imported = time.perf_counter()
    clf = PairClassifier.load(bundle, variant=variant, threads=threads)
    loaded = time.perf_counter()
    clf.predict([("How long should I boil an egg?", "About six minutes.")])
    done = time.perf_counter()
    return {
        "import_load_s": loaded - STARTED,
        "import_s": imported - STARTED,  # python -X importtime shows what this is made of
        "load_s": loaded - imported,  # read + sha256 of the files, session build
        "first_prediction_s": done - loaded,
        "total_s": done - STARTED,
        "variant": clf.variant,
        "torch_loaded": "torch" in sys.modules,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
