"""Shape buckets: pad a batch's [batch, sequence] inputs up to one of a few fixed shapes.

Backends that keep state per input shape grow with every new shape they see: CUDA graphs capture one graph
per shape (runtime/cuda_graphs.py), and OpenVINO's CPU plugin keeps compiled kernels and buffers per shape,
so a service fed every sequence length from 1 to 512 creeps in memory for thousands of requests (measured:
openvino-fp32 RSS 588 → 653 MB over 6,000 varied predictions and still rising; with lengths padded to
CPU_SEQUENCE_BUCKETS, 571 → 576 MB, flat). Padded positions have attention mask 0, so they change nothing.
"""

from __future__ import annotations

import numpy as np

# CPU: the padding costs compute (OpenVINO fp32, one pair: 18 tokens 8.5 ms, padded to 24 10.6 ms), so the
# steps are small: at most 3 tokens of padding up to 64 tokens, then steps of 8, 16 and 32 (at most ~12 %);
# 40 lengths in all.
CPU_SEQUENCE_BUCKETS = (
    tuple(range(4, 65, 4))
    + tuple(range(72, 129, 8))
    + tuple(range(144, 257, 16))
    + tuple(range(288, 513, 32))
)


def bucket(value: int, buckets: tuple[int, ...]) -> int | None:
    """The smallest bucket that holds `value`; None beyond the largest."""
    return next((b for b in buckets if b >= value), None)


def pad_feed(feed: dict[str, np.ndarray], batch: int, length: int) -> dict[str, np.ndarray]:
    """Each [b, s] int64 input as [batch, length]: extra positions are 0 (so masked out), extra rows copy
    row 0 (a real sequence, so no empty mask divides by zero; their outputs are dropped)."""
    padded = {}
    for name, value in feed.items():
        b, s = value.shape
        out = np.zeros((batch, length), dtype=np.int64)
        out[:b, :s] = value
        if batch > b:
            out[b:, :s] = value[0]
        padded[name] = out
    return padded


def pad_length(feed: dict[str, np.ndarray], buckets: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The feed with its sequence axis padded to the next bucket above its longest input (unchanged when
    already there, or beyond the largest bucket). A feed whose two orders come at their own lengths (the
    graph takes them apart: `qa_*` and `aq_*` inputs of different lengths, or of different batch sizes where
    one question is fed once for many answers) has each order padded to its own bucket: a one-pair feed of
    15 + 4 tokens runs as 16 + 4, not 16 + 16."""
    orders: dict[str, dict[str, np.ndarray]] = {}
    for name, value in feed.items():
        orders.setdefault(name.split("_", 1)[0], {})[name] = value
    if len({value.shape for value in feed.values()}) > 1 and all(len(o) > 1 for o in orders.values()):
        return {name: value for order in orders.values() for name, value in _padded(order, buckets).items()}
    return _padded(feed, buckets)


def _padded(feed: dict[str, np.ndarray], buckets: tuple[int, ...]) -> dict[str, np.ndarray]:
    batch = next(iter(feed.values())).shape[0]
    length = max(value.shape[1] for value in feed.values())
    target = bucket(length, buckets)
    if target is None or all(value.shape[1] == target for value in feed.values()):
        return feed
    return pad_feed(feed, batch, target)
