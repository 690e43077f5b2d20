"""The load-time answer check: a variant must answer a few fixed pairs here as it did where it was exported.

A parity gate proves a variant right on the machine that exported it. Another CPU can compute the same graph
differently: other kernels (AMX, AVX512-BF16, VNNI), a compiled blob read back from a cache, a backend bug
(seen: pairbert's OpenVINO bf16 sessions on an AMX machine answered 50 % of 40 validation pairs while the
export's gate, on the same CPU, agreed on all). So export records, in the manifest's `answer_check`, one
batch of pairbert's own check pairs (not the user's data) as the graph is fed, and each variant's
probabilities on it; every load runs that batch through the new session (it also warms it up) and refuses a
variant whose answers moved by more than its precision allows. `auto` then tries the next candidate; a
variant asked for by name raises AnswerMismatch.
"""

from __future__ import annotations

import numpy as np

from .sessions import BackendUnavailable

# How far a variant's probabilities may move between the exporting machine and this one. fp32 graphs differ
# by summation order (~1e-6 on CPUs) and by TF32 where CUDA runs them (1.4e-4 seen on the test model);
# reduced precisions by their rounding on other kernels (bf16 on AMX vs AVX512-BF16, fp16 on CUDA vs the
# CPU kernels that validated it: ~3e-3). A wrong answer moves a confident pair by tenths.
TOLERANCE = {"fp32": 0.01, "fp16": 0.05, "bf16": 0.05, "int8": 0.05}

# pairbert's own check pairs (no user data): one that fits, one that does not. Two short pairs keep the
# check to one small run (~12 ms for MiniLM on 2 cores; four pairs took ~25 ms of a ~0.5 s cold start).
CHECK_PAIRS = (
    ("How long should I boil an egg for a soft yolk?", "About six minutes in boiling water."),
    ("How do I reset my router?", "The Great Wall of China is visible from many places."),
)


def feed_problem(check: dict, id_bound: int) -> str | None:
    """What is wrong with the check batch for a tokenizer whose ids are below `id_bound` (None: nothing): ids
    outside it, masks or token types other than 0/1 would make a backend read out of its tables."""
    for name, rows in check.get("feed", {}).items():
        bound = id_bound if name.endswith("input_ids") else 2
        if any(not 0 <= x < bound for row in rows for x in row):
            return f"feed.{name} has values outside [0, {bound})"
    return None


class AnswerMismatch(BackendUnavailable):
    """A variant answers the check pairs differently here than where it was exported."""


def check_answers(session, check: dict, variant: str, precision: str) -> float | None:
    """Run the manifest's check batch through `session`; the largest |Δprob| against the export's answers, or
    None when the manifest has no answers for this variant (an older bundle, a variant not validated)."""
    expected = check.get("probabilities", {}).get(variant)
    if expected is None:
        return None
    from .predictor import softmax  # (the one copy; predictor imports this module)

    feed = {name: np.asarray(rows, dtype=np.int64) for name, rows in check["feed"].items()}
    got = softmax(np.asarray(session.run(feed)))
    finite = np.isfinite(got).all()
    moved = float(np.abs(got - np.asarray(expected, dtype=np.float64)).max()) if finite else 1.0
    allowed = TOLERANCE.get(precision, 0.05)
    if moved > allowed:
        raise AnswerMismatch(
            f"{variant} answers the export's check pairs differently here (max |Δprob| {moved:.3f}, allowed "
            f"{allowed:g} for {precision}): this machine or backend computes it unlike the one that "
            "exported it, so it is not used"
        )
    return moved
