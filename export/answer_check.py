"""The manifest's `answer_check`: pairbert's check pairs as the graph is fed, and each variant's answers on
the exporting machine, from a session opened as the runtime opens it. Every load compares (see
runtime/answer_check.py)."""

from __future__ import annotations

from pathlib import Path

from pairbert.runtime.answer_check import CHECK_PAIRS
from pairbert.runtime.bundle import VariantInfo
from pairbert.runtime.devices import physical_cores
from pairbert.runtime.predictor import softmax
from pairbert.runtime.sessions import SessionSettings, open_session
from pairbert.runtime.tokenization import PairEncoder
from pairbert.runtime.variants import BACKEND, OPENVINO_PRECISION


def record_answers(folder: Path, encoder: PairEncoder, variants: dict[str, VariantInfo]) -> dict:
    """{"feed": …, "probabilities": {variant: …}} for every variant that was validated here ({} if none)."""
    feed = encoder.encode([q for q, _ in CHECK_PAIRS], [a for _, a in CHECK_PAIRS])
    threads = physical_cores()
    answers = {}
    for name, info in variants.items():
        if info.validated_on == "none" or name not in BACKEND:  # never checked here: nothing to compare with
            continue
        settings = SessionSettings(
            threads=threads,
            device="cuda" if info.validated_on == "cuda" else "cpu",
            precision=OPENVINO_PRECISION.get(name, "f32"),
            cuda_graphs=False,
        )
        session = open_session(BACKEND[name], folder / info.file, settings)
        try:
            answers[name] = softmax(session.run(feed)).astype(float).round(6).tolist()  # (6 decimals in JSON)
        finally:
            session.close()
    if not answers:
        return {}
    return {"feed": {k: v.tolist() for k, v in feed.items()}, "probabilities": answers}
