"""Lever sweep: train several recipes one after the other and score each (torch) beside the zero-shot baseline
on the built-in validation split and the casual_chat dev proxy. Re-runnable on a quiet machine or a GPU:

    python -m pairbert.training.levers --out runs/levers default distill0 lr5e-5 ...
    python -m pairbert.training.levers --list

Never reads the held-out file (it is not used for choices). Each recipe is TrainConfig overrides; results go
to OUT/results.jsonl, one line per recipe (accuracy per file, by pair kind, training seconds).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pairbert.builtin_data import DATA_DIR
from pairbert.runtime.pair_files import read_pairs

from .checkpoint import load_checkpoint
from .loop import TrainConfig, train
from .metrics import classification_metrics
from .quality_report import by_kind, kinds_of, torch_predictions

DEV = str(DATA_DIR / "dev" / "casual_chat.jsonl")
VALIDATION = str(DATA_DIR / "validation.jsonl")
RECIPES: dict[str, dict] = {
    "default": {},
    "seed1": {"seed": 1},
    "seed2": {"seed": 2},
    "distill0": {"distill": 0.0},
    "distill0.8": {"distill": 0.8},
    "tneg1": {"teacher_negatives": 1},
    "tneg2": {"teacher_negatives": 2},
    "lr5e-5": {"learning_rate": 5e-5},
    "lr1e-5": {"learning_rate": 1e-5},
    "epochs2": {"epochs": 2, "patience": 1},
    "epochs3-lr5e-5": {"epochs": 3, "patience": 1, "learning_rate": 5e-5},
    "frozen-emb": {"freeze_embeddings": True},
    "contrastive0": {"contrastive": 0.0},
    "contrastive0-seed1": {"contrastive": 0.0, "seed": 1},
    "contrastive0.5": {"contrastive": 0.5},
    "contrastive1": {"contrastive": 1.0},
    "contrastive1-lr5e-5": {"contrastive": 1.0, "learning_rate": 5e-5},
    "contrastive1-ep2": {"contrastive": 1.0, "epochs": 2, "patience": 1},
    "contrastive1-distill0": {"contrastive": 1.0, "distill": 0.0},
    "contrastive1-seed1": {"contrastive": 1.0, "seed": 1},
    "contrastive1-seed2": {"contrastive": 1.0, "seed": 2},
    "contrastive2": {"contrastive": 2.0},
    "contrastive1-bs32": {"contrastive": 1.0, "batch_size": 32},
    "inbatch-neg": {"contrastive_negatives": True, "contrastive_symmetric": False},
    "inbatch-sym": {"contrastive_negatives": False, "contrastive_symmetric": True},
    "inbatch-neg-sym": {"contrastive_negatives": True, "contrastive_symmetric": True},
    "inbatch-neg-sym-seed1": {"contrastive_negatives": True, "contrastive_symmetric": True, "seed": 1},
    "plain-inbatch": {"contrastive_negatives": False, "contrastive_symmetric": False},  # the default before
    "plain-inbatch-seed1": {"contrastive_negatives": False, "contrastive_symmetric": False, "seed": 1},
    "plain-inbatch-seed2": {"contrastive_negatives": False, "contrastive_symmetric": False, "seed": 2},
    "epochs3": {"epochs": 3},
    "inbatch-neg-sym-epochs3": {"contrastive_negatives": True, "contrastive_symmetric": True, "epochs": 3},
    "inbatch-neg-epochs3": {"contrastive_negatives": True, "contrastive_symmetric": False, "epochs": 3},
    "cosine-head": {"head_learning_rate": 0.0},  # the head stays the baseline's cosine fit: encoders only
    "cosine-head-seed1": {"head_learning_rate": 0.0, "seed": 1},
    "cosine-head-seed2": {"head_learning_rate": 0.0, "seed": 2},
    # more in-batch negatives per question (batch 16 holds ~8 positive pairs: 7 other answers to rank)
    "bs32": {"batch_size": 32},
    "bs64-lr4e-5": {"batch_size": 64, "learning_rate": 4e-5},
    "bs64-lr4e-5-ep3": {"batch_size": 64, "learning_rate": 4e-5, "epochs": 3},
    "bs64-lr4e-5-seed1": {"batch_size": 64, "learning_rate": 4e-5, "seed": 1},
    "bs64-lr4e-5-seed2": {"batch_size": 64, "learning_rate": 4e-5, "seed": 2},
    "bs32-seed1": {"batch_size": 32, "seed": 1},
    "bs32-seed2": {"batch_size": 32, "seed": 2},
    # the notebook's cross-encoding: what the second order and the pooling buy there (towers need both
    # orders, one per side, and mean pooling)
    "cross-cls": {"pairing": "cross", "pooling": "cls"},
    "cross-cls-single": {"pairing": "cross", "pooling": "cls", "single_order": True},
    "cross-mean": {"pairing": "cross", "pooling": "mean"},
    "cross-cls+mean": {"pairing": "cross", "pooling": "cls+mean"},
    "cross-cls-seed1": {"pairing": "cross", "pooling": "cls", "seed": 1},
    "cross-cls-single-seed1": {"pairing": "cross", "pooling": "cls", "single_order": True, "seed": 1},
}


def score(checkpoint: str, files: list[str]) -> dict:
    ckpt = load_checkpoint(checkpoint)
    out = {}
    for path in files:
        pairs = read_pairs(path, require_label=True)
        labels, predictions = [p.label for p in pairs], torch_predictions(ckpt, pairs)
        metrics = classification_metrics(labels, predictions)
        out[Path(path).name] = {
            "accuracy": round(metrics["accuracy"], 4),
            "f1": round(metrics["f1"], 4),
            "by_kind": {
                k: round(v["correct"], 3) for k, v in by_kind(labels, predictions, kinds_of(path)).items()
            },
        }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("recipes", nargs="*", help="names from --list")
    parser.add_argument("--out", default="runs/levers")
    parser.add_argument("--train", help="another training file (e.g. a builder variant)")
    parser.add_argument("--tag", default="", help="suffix of the run names (e.g. the data variant)")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(f"{name}: {overrides}" for name, overrides in RECIPES.items()))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.recipes:
        overrides = dict(RECIPES[name])
        if args.train:
            overrides["train_file"] = args.train
        run = out / (name + args.tag)
        cfg = TrainConfig(output_dir=str(run), progress=False, plot=False, device=args.device, **overrides)
        started = time.perf_counter()
        result = train(cfg)
        seconds = round(time.perf_counter() - started, 1)
        line = {"recipe": name + args.tag, "overrides": overrides, "train_s": seconds}
        line["epochs"] = [round(h.get("val_accuracy", 0), 4) for h in result["history"]]
        line.update(score(str(run / "best"), [VALIDATION, DEV]))
        with open(out / "results.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
