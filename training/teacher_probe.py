"""Probe: distil from a stronger sentence-embedding teacher than the weight source's own zero-shot cosine.

The default recipe's teacher is the MiniLM it trains (its baseline). This swaps in another model's
embeddings (any sentence-transformers folder that transformers' AutoModel reads, mean-pooled and normalised,
e.g. all-mpnet-base-v2) for the distillation targets, and scores the result as `levers` does:

    python -m pairbert.training.teacher_probe MODE RECIPE... --teacher DIR
    (MODE: pointwise or listwise, RECIPE from `levers --list`; or zero-shot, with no recipe)

- pointwise: the teacher's cosine, Platt-fitted on the training pairs, replaces the soft target of every
  training pair (the head still starts from the MiniLM baseline's fit, as in the default recipe; a recipe
  without distillation, e.g. distill0, has no soft targets to replace);
- zero-shot: the teacher alone (its cosine, one threshold tuned on the training pairs), no training;
- listwise: the default recipe plus a KL term between the teacher's and the model's in-batch distributions
  of each question over the batch's answers (`--weight`; teacher logit scale `--scale`), the teacher's
  knowledge of many question × answer combinations rather than of the training pairs alone.

A probe, not a training option: it patches the loop's target and loss functions for this process. Never
reads the held-out file. Needs `pairbert[train]` and the teacher's folder on disk.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from pairbert.runtime.pair_files import Pair, read_pairs

from . import levers, loop
from .baseline import fit_platt, tune_threshold


class FolderTeacher:
    """Mean-pooled, normalised embeddings of a sentence-transformers folder, cached by text."""

    def __init__(self, folder: str, cache: Path | None = None):
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()
        self.cache, self.folder = cache, str(Path(folder).resolve())
        stored = torch.load(cache) if cache and cache.exists() else {"teacher": self.folder, "vectors": {}}
        if stored.get("teacher") != self.folder:
            raise SystemExit(f"{cache} holds another teacher's embeddings ({stored.get('teacher')})")
        self.vectors: dict[str, torch.Tensor] = stored["vectors"]

    @torch.no_grad()
    def embed(self, texts: list[str]) -> torch.Tensor:
        missing = sorted({t for t in texts if t not in self.vectors}, key=len)
        for start in range(0, len(missing), 64):
            chunk = missing[start : start + 64]
            batch = self.tokenizer(chunk, padding=True, truncation=True, max_length=128, return_tensors="pt")
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            self.vectors.update(zip(chunk, torch.nn.functional.normalize(pooled, dim=-1), strict=True))
        if missing and self.cache:
            torch.save({"teacher": self.folder, "vectors": self.vectors}, self.cache)
        return torch.stack([self.vectors[t] for t in texts])

    def cosines(self, pairs: list[Pair]) -> np.ndarray:
        q, a = self.embed([p.question for p in pairs]), self.embed([p.answer for p in pairs])
        return (q * a).sum(-1).numpy()


def zero_shot(teacher: FolderTeacher) -> dict:
    """The teacher's cosine with one threshold tuned on the training pairs: accuracy on validation and dev."""
    train = read_pairs(levers.DATA_DIR / "train.jsonl", require_label=True)
    threshold = tune_threshold(teacher.cosines(train).tolist(), [p.label for p in train])
    out = {"threshold": round(threshold, 4)}
    for path in (levers.VALIDATION, levers.DEV):
        pairs = read_pairs(path, require_label=True)
        right = (teacher.cosines(pairs) >= threshold).astype(int) == np.array([p.label for p in pairs])
        out[Path(path).name] = round(float(right.mean()), 4)
    return out


def patch_loop(teacher: FolderTeacher, mode: str, weight: float, scale: float) -> None:
    default_targets, default_loss = loop.training_targets, loop.pair_loss
    train = read_pairs(levers.DATA_DIR / "train.jsonl", require_label=True)
    a, b = fit_platt(teacher.cosines(train), np.array([p.label for p in train]))
    seen: dict[str, list[Pair]] = {}

    def targets(cfg, pairs, own_teacher=None):
        pairs, soft = default_targets(cfg, pairs, own_teacher)
        seen["pairs"] = pairs
        if mode == "pointwise" and soft is not None:
            soft = [1 / (1 + math.exp(-(a * c + b))) for c in teacher.cosines(pairs).tolist()]
        return pairs, soft

    def pair_loss(model, batch, soft, idx, distill, contrastive=0.0, in_batch=(False, False)):
        if mode == "listwise" and not contrastive:
            raise SystemExit("listwise compares the towers' embeddings: it needs a towers recipe")
        loss = default_loss(model, batch, soft, idx, distill, contrastive, in_batch)
        if mode != "listwise":
            return loss
        pairs = [seen["pairs"][i] for i in idx]
        first_q = list({p.question: i for i, p in reversed(list(enumerate(pairs)))}.values())
        first_a = list({p.answer: i for i, p in reversed(list(enumerate(pairs)))}.values())
        inputs = (batch[f"{order}_{name}"] for order in ("qa", "aq") for name in loop.INPUTS)
        u, v = model.tower_embeddings(*inputs)  # (the default loss computed these too: a probe's cost)
        student = torch.log_softmax(loop.CONTRASTIVE_SCALE * u[first_q] @ v[first_a].T, -1)
        tq = teacher.embed([pairs[i].question for i in first_q])
        ta = teacher.embed([pairs[i].answer for i in first_a])
        target = torch.log_softmax(scale * tq @ ta.T, -1).to(student.device, student.dtype)
        kl = torch.nn.functional.kl_div(student, target, log_target=True, reduction="batchmean")
        return loss + weight * kl

    loop.training_targets, loop.pair_loss = targets, pair_loss


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=("pointwise", "listwise", "zero-shot"))
    parser.add_argument(
        "recipes", nargs="*", help="levers recipes to run with this teacher (default, seed1…)"
    )
    parser.add_argument(
        "--teacher", required=True, help="a sentence-transformers folder (e.g. all-mpnet-base-v2)"
    )
    parser.add_argument("--out", default="runs/teacher")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--weight", type=float, default=1.0, help="listwise: weight of the KL term")
    parser.add_argument("--scale", type=float, default=20.0, help="listwise: teacher cosine → logit scale")
    parser.add_argument(
        "--cache", type=Path, help="a file for the teacher's embeddings (reused by later runs)"
    )
    args = parser.parse_args(argv)
    if args.mode == "zero-shot":  # the teacher alone, as `pairbert evaluate` prints the baseline
        print(zero_shot(FolderTeacher(args.teacher, args.cache)))
        return
    if not args.recipes:
        parser.error("name at least one recipe (python -m pairbert.training.levers --list)")
    patch_loop(FolderTeacher(args.teacher, args.cache), args.mode, args.weight, args.scale)
    levers.main(["--out", args.out, f"--tag=-{args.mode}", f"--device={args.device}", *args.recipes])


if __name__ == "__main__":
    main()
