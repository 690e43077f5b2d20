"""Turning pairs into tensors: dynamic padding, and length-grouped shuffled batches for training."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch

from pairbert.runtime.pair_files import Pair
from pairbert.runtime.tokenization import PairEncoder


def encode_batch(
    encoder: PairEncoder, pairs: Sequence[Pair], with_labels: bool = True
) -> dict[str, torch.Tensor]:
    arrays = encoder.encode([p.question for p in pairs], [p.answer for p in pairs])
    batch = {name: torch.from_numpy(a) for name, a in arrays.items()}
    if with_labels:
        batch["labels"] = torch.tensor([-1 if p.label is None else p.label for p in pairs], dtype=torch.long)
    return batch


def pad_to_max_length(batch: dict[str, torch.Tensor], max_length: int) -> dict[str, torch.Tensor]:
    """The seed notebook's way: every sequence padded to max_length (kept for the throughput benchmark)."""
    out = {}
    for name, t in batch.items():
        if t.dim() == 2 and t.shape[1] < max_length:
            t = torch.nn.functional.pad(t, (0, max_length - t.shape[1]), value=0)
        out[name] = t
    return out


def training_batches(
    lengths: Sequence[int], batch_size: int, seed: int, group_size: int = 50
) -> list[list[int]]:
    """Shuffled batches of indices whose members have similar lengths (less padding).

    Indices are shuffled, cut into groups of `group_size` batches, sorted by length inside each group,
    batched, and the batches shuffled again: randomness for SGD, little padding for speed.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    span = batch_size * group_size
    for start in range(0, len(order), span):
        group = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches.extend(group[i : i + batch_size] for i in range(0, len(group), batch_size))
    rng.shuffle(batches)
    return batches


def sequential_batches(n: int, batch_size: int) -> Iterator[list[int]]:
    for start in range(0, n, batch_size):
        yield list(range(start, min(n, start + batch_size)))
