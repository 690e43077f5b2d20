"""The zero-shot bi-encoder baseline: what the weights score before any pair training.

Question and answer are embedded separately by the weight source's own BERT encoder (mean-pooled over the
attention mask, L2-normalised; the way all-MiniLM-L6-v2 was trained) and a pair matches when their cosine
is at least one threshold. The threshold is tuned on the TRAINING pairs only (the midpoint that maximises
training accuracy) and then applied unchanged to whatever is evaluated, so the baseline never sees the
evaluated labels. `pairbert evaluate` prints it beside the model, so a user sees whether training helped.

The same encoder is the teacher for distillation (`TrainConfig.distill`): `Teacher.probabilities` maps a
cosine to a probability with a logistic fit on the training pairs (Platt scaling).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import BertModel
from transformers.utils import logging as hf_logging

from pairbert.runtime.pair_files import Pair

from .metrics import classification_metrics
from .weights import WeightSourceError, resolve_source, tokenizer_file_for

log = logging.getLogger(__name__)


class SentenceEmbedder:
    """Mean-pooled, L2-normalised sentence embeddings from one BERT encoder and its tokenizer."""

    def __init__(self, encoder: BertModel, tokenizer: Tokenizer, max_length: int = 128):
        self.encoder = encoder.eval()
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_length)

    @classmethod
    def from_source(cls, source: str, max_length: int = 128) -> SentenceEmbedder:
        location, random_config = resolve_source(source)
        if random_config is not None:
            raise WeightSourceError(f"source {source!r} is a random init: it has no zero-shot baseline")
        tokenizer_file = tokenizer_file_for(source)
        if tokenizer_file is None:
            raise WeightSourceError(f"source {source!r} has no tokenizer.json for the baseline")
        hf_logging.disable_progress_bar()
        try:
            encoder = BertModel.from_pretrained(str(location))  # its pooler stays unused
        except OSError as exc:
            raise WeightSourceError(f"cannot load BERT weights from {location!r}: {exc}") from None
        return cls(encoder, Tokenizer.from_file(str(tokenizer_file)), max_length)

    @torch.no_grad()
    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        unique = list(dict.fromkeys(texts))
        order = sorted(range(len(unique)), key=lambda i: len(unique[i]))  # little padding per batch
        vectors: dict[str, np.ndarray] = {}
        for start in range(0, len(order), batch_size):
            chunk = [unique[i] for i in order[start : start + batch_size]]
            encodings = self.tokenizer.encode_batch(chunk)
            longest = max(len(e.ids) for e in encodings)
            ids = torch.zeros((len(chunk), longest), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, e in enumerate(encodings):
                ids[row, : len(e.ids)] = torch.tensor(e.ids)
                mask[row, : len(e.ids)] = 1
            hidden = self.encoder(
                input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)
            ).last_hidden_state
            pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            vectors.update(zip(chunk, pooled.numpy(), strict=True))
        return np.stack([vectors[t] for t in texts]) if texts else np.zeros((0, 0), dtype=np.float32)

    def cosines(self, pairs: Sequence[Pair]) -> np.ndarray:
        q = self.embed([p.question for p in pairs])
        a = self.embed([p.answer for p in pairs])
        return (q * a).sum(-1) if len(pairs) else np.zeros(0, dtype=np.float32)


def tune_threshold(scores: Sequence[float], labels: Sequence[int]) -> float:
    """The cut (midpoint between two neighbouring scores) with the highest accuracy on these labels."""
    ranked = sorted(zip(scores, labels, strict=True))
    if not ranked:
        raise ValueError("no labelled pairs to tune the baseline threshold on")
    correct = sum(1 for _, y in ranked if y == 0)  # cut below everything: all predicted 1 → the 1s are right
    correct = len(ranked) - correct
    best, best_cut = correct, ranked[0][0] - 1e-6
    for i, (score, label) in enumerate(ranked):
        correct += 1 if label == 0 else -1  # this pair now falls below the cut
        nxt = ranked[i + 1][0] if i + 1 < len(ranked) else score + 1e-6
        if correct > best and nxt > score:
            best, best_cut = correct, (score + nxt) / 2
    return float(best_cut)


def fit_platt(scores: np.ndarray, labels: np.ndarray, steps: int = 500) -> tuple[float, float]:
    """(a, b) of p = sigmoid(a·score + b), fitted by gradient descent on the log loss (deterministic)."""
    x = torch.tensor(scores, dtype=torch.float64)
    y = torch.tensor(labels, dtype=torch.float64)
    params = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([params], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(params[0] * x + params[1], y)
        loss.backward()
        return loss

    optimizer.step(closure)
    a, b = params.detach().tolist()
    return float(a), float(b)


@dataclass
class BaselineFit:
    source: str
    threshold: float
    tuned_on: str  # the file whose labels chose the threshold
    tuned_on_accuracy: float
    platt: tuple[float, float]


def fit_baseline(
    embedder: SentenceEmbedder, source: str, train_pairs: Sequence[Pair], tuned_on: str
) -> BaselineFit:
    labelled = [p for p in train_pairs if p.label in (0, 1)]
    scores = embedder.cosines(labelled)
    labels = np.array([p.label for p in labelled])
    threshold = tune_threshold(scores.tolist(), labels.tolist())
    accuracy = float(((scores >= threshold).astype(int) == labels).mean())
    return BaselineFit(source, threshold, tuned_on, accuracy, fit_platt(scores, labels))


def evaluate_baseline(embedder: SentenceEmbedder, fit: BaselineFit, pairs: Sequence[Pair]) -> dict:
    """Metrics of the fitted baseline on `pairs`: their labels are read only to score, never to tune."""
    scores = embedder.cosines(pairs)
    predictions = (scores >= fit.threshold).astype(int).tolist()
    metrics = classification_metrics([p.label for p in pairs], predictions)
    return {**metrics, **asdict(fit)}


class Teacher:
    """The baseline as a distillation teacher: a match probability for any (question, answer)."""

    def __init__(self, embedder: SentenceEmbedder, fit: BaselineFit):
        self.embedder, self.fit = embedder, fit

    def probabilities(self, pairs: Sequence[Pair]) -> list[float]:
        a, b = self.fit.platt
        return [1.0 / (1.0 + math.exp(-(a * s + b))) for s in self.embedder.cosines(pairs).tolist()]


def baseline_for(
    source: str, train_file: str | Path, max_length: int = 128
) -> tuple[SentenceEmbedder, BaselineFit]:
    from pairbert.runtime.pair_files import read_pairs

    embedder = SentenceEmbedder.from_source(source, max_length)
    fit = fit_baseline(embedder, source, read_pairs(train_file, require_label=True), str(train_file))
    log.info("baseline threshold %.4f (train accuracy %.4f)", fit.threshold, fit.tuned_on_accuracy)
    return embedder, fit
