"""Model vs zero-shot baseline on several labelled files, broken down by pair kind, through torch and (when a
bundle is given) through the exported ONNX variants. Re-runnable on a quiet machine:

    python -m pairbert.training.quality_report runs/default/best --bundle bundles/default \
        --data training/data/validation.jsonl training/data/heldout/support_trivia.jsonl \
        --out runs/default/quality.json

The baseline's threshold is tuned on the checkpoint's training file (never on the files evaluated here).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from pairbert.runtime.pair_files import read_pairs

from .baseline import baseline_for
from .batches import encode_batch, sequential_batches
from .checkpoint import load_checkpoint
from .metrics import classification_metrics


def kinds_of(path: str) -> list[str | None]:
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r.get("kind") for r in rows] if str(path).endswith(".jsonl") else []


def by_kind(labels: list[int], predictions: list[int], kinds: list[str | None]) -> dict:
    """Share of correct predictions per pair kind (positive, easy/hard negative, ...)."""
    out = {}
    for kind in sorted({k for k in kinds if k}):
        picked = [(y, p) for y, p, k in zip(labels, predictions, kinds, strict=True) if k == kind]
        out[kind] = {"count": len(picked), "correct": sum(1 for y, p in picked if y == p) / len(picked)}
    return out


@torch.no_grad()
def torch_predictions(ckpt, pairs) -> list[int]:
    out = []
    for idx in sequential_batches(len(pairs), 64):
        batch = encode_batch(ckpt.encoder, [pairs[i] for i in idx], with_labels=False)
        out += ckpt.model(**batch).logits.argmax(-1).tolist()
    return out


def report(checkpoint: str, data: list[str], bundle: str | None, variants: list[str]) -> dict:
    ckpt = load_checkpoint(checkpoint)
    recipe = ckpt.settings.get("train_config", {})
    embedder, fit = baseline_for(
        recipe["source"], ckpt.recorded_file("train_file"), ckpt.settings.get("max_length", 128)
    )
    classifiers = {}
    if bundle:
        from pairbert.runtime.predictor import PairClassifier

        classifiers = {v: PairClassifier.load(bundle, variant=v) for v in variants}
    result = {
        "checkpoint": checkpoint,
        "baseline_threshold": fit.threshold,
        "baseline_tuned_on": fit.tuned_on,
        "files": {},
    }
    for path in data:
        pairs = read_pairs(path, require_label=True)
        labels, kinds = [p.label for p in pairs], kinds_of(path)
        rows = {
            "torch": torch_predictions(ckpt, pairs),
            "baseline": (embedder.cosines(pairs) >= fit.threshold).astype(int).tolist(),
        }
        for v, clf in classifiers.items():
            rows[f"onnx-{v}"] = [int(x) for x in clf.predict([(p.question, p.answer) for p in pairs]).labels]
        result["files"][path] = {
            name: {
                **{k: m for k, m in classification_metrics(labels, preds).items() if k != "confusion_matrix"},
                "by_kind": by_kind(labels, preds, kinds) if kinds else {},
            }
            for name, preds in rows.items()
        }
    return result


def markdown(result: dict) -> str:
    lines = ["| file | predictor | accuracy | F1 | by kind (share correct) |", "|---|---|---|---|---|"]
    for path, rows in result["files"].items():
        for name, m in rows.items():
            kinds = ", ".join(f"{k} {v['correct']:.3f} ({v['count']})" for k, v in m["by_kind"].items())
            lines.append(f"| {Path(path).name} | {name} | {m['accuracy']:.4f} | {m['f1']:.4f} | {kinds} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint")
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--bundle")
    parser.add_argument("--variants", default="fp32,int8")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    result = report(args.checkpoint, args.data, args.bundle, [v for v in args.variants.split(",") if v])
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    print(markdown(result))


if __name__ == "__main__":
    main()
