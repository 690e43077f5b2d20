"""The real default model, end to end through export (slow: ~1 minute; run with `make test-slow`)."""

from __future__ import annotations

import pytest

from pairbert.builtin_data import BUILTIN_VALIDATION
from pairbert.export.bundle_writer import ExportSettings, export_bundle
from pairbert.export.fusion import expected_fused
from pairbert.runtime import PairClassifier
from pairbert.training.checkpoint import save_checkpoint
from pairbert.training.weights import build_model, tokenizer_file_for


@pytest.mark.slow
def test_packaged_minilm_exports_fully_fused_and_in_parity(tmp_path):
    model = build_model("minilm")  # head untrained: parity and fusion do not need a trained head
    ckpt = save_checkpoint(
        tmp_path / "ckpt",
        model,
        tokenizer_file_for("minilm"),
        {"max_length": 128, "train_config": {"validation_file": str(BUILTIN_VALIDATION)}},
    )
    manifest = export_bundle(
        ckpt, tmp_path / "bundle", ExportSettings(variants=("fp32", "optimized")), echo=None
    )
    assert manifest.variants["optimized"].fused_ops == expected_fused(6)
    for name in ("fp32", "optimized"):
        assert manifest.variants[name].parity["max_abs_logit_diff"] <= 1e-4
    clf = PairClassifier.load(tmp_path / "bundle")
    # auto times the passing candidates on this CPU (runtime/calibration.py): either may win here
    assert clf.variant in ("fp32", "optimized") and manifest.variants[clf.variant].passed_parity
    result = clf.predict([("How long is a marathon?", "A marathon is 42.195 kilometres long.")])
    assert result.probabilities.shape == (1, 2)
