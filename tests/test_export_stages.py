"""export_bundle's stages: the per-variant result, the fusion-shortfall warning, the extra-validator hook."""

from __future__ import annotations

import logging
import shutil

import pytest

from pairbert.export import bundle_writer
from pairbert.export.bundle_writer import ExportSettings, ParityInputs, build_bundle, variants_to_build
from pairbert.export.validation import ExportError
from pairbert.runtime.bundle import VariantInfo, read_manifest, sha256_file
from pairbert.runtime.predictor import PairClassifier


def test_build_order_adds_bases_and_refuses_unknown_names():
    assert variants_to_build(["int8"]) == ["fp32", "optimized", "int8"]
    assert variants_to_build(["fp16", "fp32"]) == ["fp32", "optimized", "fp16"]
    assert variants_to_build(["fp32"]) == ["fp32"]
    with pytest.raises(ExportError, match=r"unknown variant\(s\) \['int4'\]"):
        variants_to_build(["fp32", "int4"])


def test_unfused_graph_is_reported_as_a_fusion_shortfall_and_extra_validators_add_variants(
    tiny_checkpoint, tmp_path, monkeypatch, caplog
):
    # The optimizer "fuses nothing": the optimized graph is the plain export (what the dynamo exporter's
    # graph gets, README). The export must still succeed, and say so loudly.
    monkeypatch.setattr(bundle_writer.fusion, "optimize", lambda src, dst, *a, **k: shutil.copyfile(src, dst))
    seen: list[ParityInputs] = []

    def other_backend(inputs: ParityInputs) -> list[VariantInfo]:
        seen.append(inputs)
        infos = []
        for name, passed in (("copy-good", True), ("copy-bad", False)):
            path = inputs.work_dir / f"model.{name}.onnx"
            shutil.copyfile(inputs.fp32_path, path)
            infos.append(
                VariantInfo(
                    name=name,
                    file=path.name,
                    precision="fp32",
                    size_bytes=path.stat().st_size,
                    sha256=sha256_file(path),
                    intended_device="cpu",
                    passed_parity=passed,
                    validated_on="other",
                    notes="" if passed else "labels disagree",
                )
            )
        return infos

    lines: list[str] = []
    # single-file graphs: the fake validator above copies one file per variant
    settings = ExportSettings(variants=("optimized",), extra_validators=(other_backend,), external_data=False)
    with caplog.at_level(logging.WARNING, logger="pairbert.export.bundle_writer"):
        result = build_bundle(tiny_checkpoint, tmp_path / "b", settings, echo=lines.append)

    shortfall = [line for line in lines if "FUSION SHORTFALL" in line]
    assert shortfall == [
        "  ✗ fusion: FUSION SHORTFALL: EmbedLayerNormalization 0/2, Attention 0/4, "
        "SkipLayerNormalization 0/8, Gelu 0/4 — the runtime will be slower than it should"
    ]
    assert "fusion shortfall in optimized" in caplog.text

    assert {k: o.status for k, o in result.outcomes.items()} == {
        "optimized": "passed",
        "copy-good": "passed",
        "copy-bad": "failed",
    }
    assert [o.variant for o in result.failed] == ["copy-bad"]
    assert result.outcomes["copy-bad"].reasons == ("labels disagree",)
    assert result.outcomes["optimized"].info.fused_ops["Attention"] == 0

    (inputs,) = seen
    assert inputs.reference.shape == (60, 2) and sum(len(f["qa_input_ids"]) for f in inputs.feeds) == 60
    manifest = read_manifest(tmp_path / "b")
    assert set(manifest.variants) == {
        "optimized",
        "copy-good",
    }  # fp32 was only a base; the failed one dropped
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "manifest.json",
        "model.copy-good.onnx",
        "model.optimized.onnx",
        "tokenizer.json",
    ]
    assert len(PairClassifier.load(tmp_path / "b", variant="optimized").predict([("a?", "b.")])) == 1


def test_a_failing_fp32_writes_nothing_and_leaves_the_old_bundle(
    tiny_checkpoint, tiny_bundle, tmp_path, monkeypatch
):
    out = tmp_path / "keep"
    shutil.copytree(tiny_bundle, out)
    before = sorted(p.name for p in out.iterdir())
    real_gate = bundle_writer.gate

    def failing_gate(variant, reference, candidate, report):
        figures, fails = real_gate(variant, reference, candidate, report)
        return figures, fails + ["made to fail"]

    monkeypatch.setattr(bundle_writer, "gate", failing_gate)
    from pairbert.export.validation import ParityError

    with pytest.raises(ParityError, match="nothing written: made to fail"):
        build_bundle(tiny_checkpoint, out, ExportSettings(variants=("fp32",)), echo=None)
    assert sorted(p.name for p in out.iterdir()) == before
    assert not list(tmp_path.glob(".tmp-*"))
    assert read_manifest(out).variants.keys() == read_manifest(tiny_bundle).variants.keys()
