"""FLOPs of the dual-order BERT: per layer 24·S·H² + 4·S²·H per sequence (QKV/output/FFN GEMMs plus the
two attention batched GEMMs), two branches. Embeddings, LayerNorm, softmax and the head are left out:
they are not GEMMs and are small."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def sequence_flops(seq_len: int, hidden: int, layers: int) -> float:
    return layers * (24 * seq_len * hidden**2 + 4 * seq_len**2 * hidden)


def batch_flops(padded_len: int, batch: int, hidden: int, layers: int, branches: int = 2) -> float:
    """Work a padded batch really does (padding tokens are computed too)."""
    return branches * batch * sequence_flops(padded_len, hidden, layers)


def pair_flops(branch_tokens: Sequence[int], batch: int, hidden: int, layers: int) -> float:
    """Work a batch of `batch` copies of one pair does, each branch at its own padded length."""
    return sum(batch_flops(t, batch, hidden, layers, branches=1) for t in branch_tokens)


def useful_flops(lengths: Iterable[int], hidden: int, layers: int, branches: int = 2) -> float:
    """Work the unpadded pairs need: the yardstick for throughput comparisons."""
    return branches * sum(sequence_flops(n, hidden, layers) for n in lengths)
