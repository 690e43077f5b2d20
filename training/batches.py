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
    lengths: Sequence[int],
    batch_size: int,
    seed: int,
    group_size: int = 50,
    keys: Sequence[str] | None = None,
) -> list[list[int]]:
    """Shuffled batches of indices whose members have similar lengths (less padding).

    Indices are shuffled, cut into groups of `group_size` batches, sorted by length inside each group,
    batched, and the batches shuffled again: randomness for SGD, little padding for speed. With `keys`
    (e.g. each pair's question), pairs that share a key stay in one batch (a key with more pairs than
    `batch_size` is split), so batches hold up to `batch_size` pairs.
    """
    rng = random.Random(seed)
    units: list[list[int]]
    if keys is None:
        units = [[i] for i in range(len(lengths))]
    else:
        by_key: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            by_key.setdefault(key, []).append(i)
        units = [u[s : s + batch_size] for u in by_key.values() for s in range(0, len(u), batch_size)]
    rng.shuffle(units)
    batches: list[list[int]] = []
    start = 0
    while start < len(units):
        group, size = [], 0
        while start < len(units) and size < batch_size * group_size:
            group.append(units[start])
            size += len(units[start])
            start += 1
        group.sort(key=lambda unit: max(lengths[i] for i in unit))
        batch: list[int] = []
        for unit in group:
            if len(batch) + len(unit) > batch_size:
                batches.append(batch)
                batch = []
            batch.extend(unit)
        if batch:
            batches.append(batch)
    rng.shuffle(batches)
    return batches


def sequential_batches(n: int, batch_size: int) -> Iterator[list[int]]:
    for start in range(0, n, batch_size):
        yield list(range(start, min(n, start + batch_size)))
