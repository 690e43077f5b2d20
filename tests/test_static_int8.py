"""openvino-int8: the fp32 graph with static int8 quantize/dequantize pairs (NNCF, calibrated on training
pairs at export), run by OpenVINO. Its own graph in the bundle, gated like every variant, calibrated never on
the pairs it is gated on, a pair's answer does not depend on the pairs batched with it, and `auto` leaves it
to those who ask for it by name."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from helpers import needs_variant, varied_pairs, write_jsonl

from pairbert.runtime import PairClassifier, calibration
from pairbert.runtime.bundle import read_manifest, sha256_file

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from pairbert.export import static_int8  # noqa: E402
from pairbert.export.bundle_writer import ExportError, ExportSettings, build_bundle, export_bundle  # noqa: E402
from pairbert.export.validation import ParityError  # noqa: E402


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(calibration.CACHE_ENV, str(tmp_path / "cache"))


@pytest.fixture
def int8_bundle(tiny_bundle):
    """The tiny bundle, where openvino-int8 passed its gate on this CPU (else the test skips, naming why)."""
    needs_variant(tiny_bundle, "openvino-int8")
    return tiny_bundle


def _nodes(path):
    return onnx.load(str(path), load_external_data=False).graph.node


def test_its_own_graph_with_int8_pairs_listed_and_gated(int8_bundle):
    info = read_manifest(int8_bundle).variants["openvino-int8"]
    assert info.file == "model.openvino-int8.onnx" and info.precision == "int8"
    assert info.sha256 == sha256_file(int8_bundle / info.file)
    assert info.external_data == ("model.openvino-int8.onnx.data",)
    assert info.passed_parity and info.validated_on == "cpu" and info.parity["label_agreement"] >= 0.99
    assert "validated as OpenVINO CPU (i8" in info.notes and "calibrated on 5 pairs of" in info.notes
    ops = [n.op_type for n in _nodes(int8_bundle / info.file)]
    assert ops.count("QuantizeLinear") >= 4 and ops.count("DequantizeLinear") >= 4
    assert "QuantizeLinear" not in [n.op_type for n in _nodes(int8_bundle / "model.fp32.onnx")]


def test_the_first_layers_ffn_outputs_stay_out_of_int8(int8_bundle):
    """The FFN output MatMuls of layers 0 and 1 (the tiny model has two layers: all of them) are fed by the
    fp32 activations; the other MatMuls of the same layers read dequantized int8."""
    fp32 = onnx.load(str(int8_bundle / "model.fp32.onnx"), load_external_data=False)
    kept = static_int8.ffn_output_matmuls(fp32, static_int8.KEEP_FFN_OUTPUT_LAYERS)
    assert len(kept) == 4 and all("/output/dense/" in name for name in kept)  # 2 layers × 2 branches
    nodes = _nodes(int8_bundle / "model.openvino-int8.onnx")
    producer = {out: n.op_type for n in nodes for out in n.output}
    by_name = {n.name: n for n in nodes}
    assert all(producer.get(by_name[name].input[0]) != "DequantizeLinear" for name in kept)
    quantized = [n for n in nodes if n.op_type == "MatMul" and producer.get(n.input[0]) == "DequantizeLinear"]
    assert quantized and not {n.name for n in quantized} & set(kept)
    assert static_int8.ffn_output_matmuls(fp32, 1) == [n for n in kept if "layer.0/" in n]


def test_it_answers_like_torch_and_alone_as_in_a_batch(int8_bundle):
    pairs = [(r["question"], r["answer"]) for r in varied_pairs(40, seed=31)]
    with PairClassifier.load(int8_bundle, variant="fp32") as fp32:
        expected = fp32.predict(pairs, batch_size=8)
    with PairClassifier.load(int8_bundle, variant="openvino-int8") as clf:
        assert (clf.backend, clf.variant) == ("openvino", "openvino-int8")
        assert clf.provider.startswith("OpenVINO CPU (i8")  # int8 kernels run the most matrix products
        batched = clf.predict(pairs, batch_size=40)
        alone = np.concatenate([clf.predict([p]).probabilities for p in pairs])
    assert (batched.labels == expected.labels).mean() >= 0.99
    # static scales: a pair's answer is its own (dynamic int8 rescales each run by its batch-mates)
    assert np.abs(batched.probabilities - alone).max() <= 0.02


def test_auto_never_chooses_it_but_a_name_loads_it(int8_bundle):
    from pairbert.runtime import predictor

    manifest = read_manifest(int8_bundle)
    assert manifest.variants["openvino-int8"].passed_parity
    for backend in ("auto", "openvino"):
        assert "openvino-int8" not in predictor.candidates(manifest, "cpu", backend)
    with PairClassifier.load(int8_bundle, backend="openvino") as clf:
        assert clf.variant != "openvino-int8" and "openvino-int8" not in clf.choice.get("timings_s", {})
    with PairClassifier.load(int8_bundle, backend="openvino", variant="int8") as clf:
        assert clf.variant == "openvino-int8"


def test_backend_openvino_with_only_int8_passing_says_to_name_it(int8_bundle, tmp_path):
    import shutil

    from helpers import edit_manifest

    from pairbert.runtime.bundle import BundleError

    bundle = tmp_path / "b"
    shutil.copytree(int8_bundle, bundle)

    def only_int8(data):
        for name in ("openvino-fp32", "openvino-bf16"):
            data["variants"][name]["passed_parity"] = False

    edit_manifest(bundle, only_int8)
    with pytest.raises(
        BundleError, match=r"with openvino .*; openvino-int8 loads only by name: variant='openvino-int8'"
    ):
        PairClassifier.load(bundle, backend="openvino")
    with PairClassifier.load(bundle, backend="openvino", variant="openvino-int8") as clf:
        assert clf.variant == "openvino-int8"


def test_calibration_never_reads_the_pairs_it_is_gated_on(tiny_checkpoint, tmp_path):
    """By content, not by path: a copy of the parity file is refused, and parity pairs inside a training
    file are left out of the calibration (and counted)."""
    validation = write_jsonl(tmp_path / "v.jsonl", varied_pairs(40, seed=5))
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(validation.read_bytes())
    for calib in (validation, copy):
        settings = ExportSettings(
            variants=("fp32", "openvino-int8"),
            validation_file=str(validation),
            calibration_file=str(calib),
            external_data=False,
        )
        with pytest.raises(ExportError, match=f"every pair of {calib} is also a parity pair"):
            build_bundle(tiny_checkpoint, tmp_path / "b", settings, echo=None)
        assert not (tmp_path / "b").exists()
    mixed = write_jsonl(tmp_path / "mixed.jsonl", varied_pairs(40, seed=5)[:7] + varied_pairs(13, seed=9))
    lines: list[str] = []
    settings = ExportSettings(
        variants=("fp32", "openvino-int8"),
        validation_file=str(validation),
        calibration_file=str(mixed),
        external_data=False,
    )
    result = build_bundle(tiny_checkpoint, tmp_path / "b", settings, echo=lines.append)
    built = result.outcomes["openvino-int8"]  # quantized and gated (passing or not: 40 pairs, a tiny model)
    assert built.info is not None and built.status in ("passed", "failed"), built
    assert any(f"calibrated on 13 pairs of {mixed}; 7 parity pairs in it left out" in line for line in lines)
    nope = str(tmp_path / "nope.jsonl")
    missing = ExportSettings(variants=("fp32", "openvino-int8"), calibration_file=nope)
    with pytest.raises(ExportError, match="--calibration .*nope.jsonl: no such file"):
        build_bundle(tiny_checkpoint, tmp_path / "b2", missing, echo=None)


def test_a_run_trained_on_its_validation_pairs_exports_without_int8(tiny_tokenizer, tmp_path):
    """The checkpoint's own training file is its validation file: nothing to calibrate on that is not a
    parity pair, so openvino-int8 is skipped with the reason, and the rest is written."""
    from helpers import FAST, tiny_config

    from pairbert.training.loop import train

    train(tiny_config(tmp_path / "run", tiny_tokenizer, epochs=1, **FAST))
    lines: list[str] = []
    result = build_bundle(tmp_path / "run" / "last", tmp_path / "b", ExportSettings(), echo=lines.append)
    assert "openvino-int8" not in result.manifest.variants and "openvino-fp32" in result.manifest.variants
    assert any("is also a parity pair: calibrate on training pairs: skipped" in line for line in lines), lines


def test_without_nncf_the_export_names_the_extra_and_writes_the_rest(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nncf", None)  # as if the [quantize] extra were not installed
    lines: list[str] = []
    settings = ExportSettings(variants=("fp32", "openvino-int8"), external_data=False)
    result = build_bundle(tiny_checkpoint, tmp_path / "b", settings, echo=lines.append)
    assert set(result.manifest.variants) == {"fp32"}
    assert any("pip install 'pairbert[quantize]'" in line for line in lines), lines
    unbuilt = result.outcomes["openvino-int8"]
    assert unbuilt.status == "failed" and "pairbert[quantize]" in unbuilt.reasons[0]
    # named, it is an error, as a missed gate is (pairbert export exits 1); --skip-failed leaves it out
    with pytest.raises(ParityError, match=r"openvino-int8: NNCF is not installed.*pairbert\[quantize\]"):
        export_bundle(tiny_checkpoint, tmp_path / "b", settings, echo=None)
    settings.skip_failed = True
    assert set(export_bundle(tiny_checkpoint, tmp_path / "b", settings, echo=None).variants) == {"fp32"}
    with pytest.raises(static_int8.QuantizationUnavailable, match=r"pairbert\[quantize\]"):
        static_int8.quantize_static(tmp_path / "b" / "model.fp32.onnx", tmp_path / "q.onnx", [{}])


def test_cli_calibration_needs_the_variant(tiny_checkpoint, tmp_path, capsys):
    from pairbert import cli

    argv = ["export", str(tiny_checkpoint), "--out", str(tmp_path / "b"), "--variants", "fp32"]
    try:
        code = cli.main([*argv, "--calibration", str(tmp_path / "c.jsonl")])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and "--calibration calibrates openvino-int8, but --variants has no openvino-int8" in err
    assert "Traceback" not in err and not (tmp_path / "b").exists()
