"""FLOPs of the dual-order BERT: per layer 24·S·H² + 4·S²·H per sequence (QKV/output/FFN GEMMs plus the
two attention batched GEMMs), two branches. Embeddings, LayerNorm, softmax and the head are left out:
they are not GEMMs and are small."""

from __future__ import annotations

from collections.abc import Iterable


def sequence_flops(seq_len: int, hidden: int, layers: int) -> float:
    return layers * (24 * seq_len * hidden**2 + 4 * seq_len**2 * hidden)


def batch_flops(padded_len: int, batch: int, hidden: int, layers: int, branches: int = 2) -> float:
    """Work a padded batch really does (padding tokens are computed too)."""
    return branches * batch * sequence_flops(padded_len, hidden, layers)


def useful_flops(lengths: Iterable[int], hidden: int, layers: int, branches: int = 2) -> float:
    """Work the unpadded pairs need: the yardstick for throughput comparisons."""
    return branches * sum(sequence_flops(n, hidden, layers) for n in lengths)
