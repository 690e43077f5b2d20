"""Timing callables in turns: each one's median over a few calls, the callables taking turns for several
rounds, so a machine's drift (other tenants, clocks) spreads over all of them instead of favouring one."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def median_ms(call: Callable[[], object], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return 1e3 * float(np.median(samples))


def in_turns(
    runs: dict[str, Callable[[object], object]],
    feeds: dict[str, tuple[object, int]],
    rounds: int = 4,
    warmup: int = 3,
) -> dict[str, dict[str, list[float]]]:
    """{run name: {feed name: [median ms of each round]}}; `feeds` maps a name to (feed, calls per median)."""
    out = {name: {feed: [] for feed in feeds} for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            for feed_name, (feed, repeats) in feeds.items():
                for _ in range(warmup):
                    run(feed)
                out[name][feed_name].append(median_ms(lambda run=run, feed=feed: run(feed), repeats))
    return out
