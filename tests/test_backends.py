"""Backends: ONNX Runtime and OpenVINO sessions from one factory, every backend × variant in parity with
torch, `auto` chosen by measurement (cached per bundle and CPU), clear errors when a backend is missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import edit_manifest, needs_variant, varied_pairs

from pairbert.runtime import BackendError, BundleError, PairClassifier, PredictorError, calibration
from pairbert.runtime.bundle import manifest_digest, read_manifest
from pairbert.runtime.devices import LEDGER
from pairbert.runtime.external_weights import ExternalWeights
from pairbert.runtime.sessions import BackendUnavailable, SessionSettings, has_bf16_units, open_session
from pairbert.runtime.variants import BACKEND
from pairbert.training.batches import encode_batch
from pairbert.training.checkpoint import load_checkpoint

openvino = pytest.importorskip("openvino")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test measures into its own calibration cache."""
    monkeypatch.setenv(calibration.CACHE_ENV, str(tmp_path / "cache"))


def predictor_candidates(bundle) -> list[str]:
    from pairbert.runtime import predictor

    return predictor.candidates(read_manifest(bundle), "cpu", "auto")


def torch_logits(checkpoint, pairs) -> np.ndarray:
    from pairbert.runtime.pair_files import Pair

    ckpt = load_checkpoint(checkpoint)
    with torch.inference_mode():
        return ckpt.model(
            **encode_batch(ckpt.encoder, [Pair(q, a) for q, a in pairs], with_labels=False)
        ).logits.numpy()


def centred_log_probs(probabilities: np.ndarray) -> np.ndarray:
    lp = np.log(probabilities.astype(np.float64))
    return lp - lp.mean(-1, keepdims=True)


def test_bundle_lists_openvino_variants_with_their_gate(tiny_bundle):
    manifest = read_manifest(tiny_bundle)
    fp32 = manifest.variants["openvino-fp32"]
    assert fp32.file == "model.fp32.onnx" and fp32.sha256 == manifest.variants["fp32"].sha256
    assert fp32.passed_parity and fp32.validated_on == "cpu"
    assert fp32.parity["max_abs_logit_diff"] <= 1e-4
    bf16 = manifest.variants["openvino-bf16"]
    if has_bf16_units():
        assert bf16.validated_on == "cpu" and bf16.parity["label_agreement"] >= 0.995
    else:  # exported where bf16 cannot be checked: listed, marked, never chosen by auto
        assert (bf16.validated_on, bf16.passed_parity) == ("none", False)


@pytest.mark.parametrize("variant", ["fp32", "optimized", "int8", "openvino-fp32", "openvino-int8"])
def test_every_backend_and_variant_matches_torch(tiny_bundle, tiny_checkpoint, variant):
    needs_variant(tiny_bundle, variant)
    pairs = [(r["question"], r["answer"]) for r in varied_pairs(40, seed=21)]
    expected = torch_logits(tiny_checkpoint, pairs)
    with PairClassifier.load(tiny_bundle, variant=variant) as clf:
        assert clf.backend == BACKEND[variant] and clf.variant == variant
        got = clf.predict(pairs, batch_size=8)
    int8 = variant.endswith("int8")
    assert (got.labels == expected.argmax(-1)).mean() >= (0.99 if int8 else 1.0)
    if not int8:
        centred = expected - expected.mean(-1, keepdims=True)
        assert np.abs(centred_log_probs(got.probabilities) - centred).max() <= 1e-4


def test_openvino_short_variant_name_and_provider(tiny_bundle):
    with PairClassifier.load(tiny_bundle, backend="openvino", variant="fp32") as clf:
        assert clf.variant == "openvino-fp32" and clf.provider.startswith("OpenVINO CPU")
    with pytest.raises(PredictorError, match="runs on openvino, not on backend 'onnxruntime'"):
        PairClassifier.load(tiny_bundle, backend="onnxruntime", variant="openvino-fp32")
    # an ONNX Runtime variant asked of OpenVINO is named as asked, not as 'openvino-optimized'
    with pytest.raises(
        PredictorError, match="variant 'optimized' runs on onnxruntime, not on backend 'openvino'"
    ):
        PairClassifier.load(tiny_bundle, backend="openvino", variant="optimized")


def test_bf16_runs_when_asked_even_if_unvalidated(tiny_bundle):
    """An unvalidated variant is never chosen by auto, but a user may still ask for it by name."""
    with PairClassifier.load(tiny_bundle, variant="openvino-bf16") as clf:
        assert len(clf.predict([("who wrote hamlet?", "shakespeare wrote hamlet.")])) == 1


def test_auto_measures_once_then_uses_the_cache(tiny_bundle):
    with PairClassifier.load(tiny_bundle) as first:
        assert first.choice["how"] == "measured"
        timed = set(first.choice["timings_s"])
        manifest = read_manifest(tiny_bundle)
        by_name_only = {"fp16", "openvino-int8"}  # fp16: CUDA only; openvino-int8: never chosen by auto
        assert timed == {n for n, v in manifest.variants.items() if v.passed_parity and n not in by_name_only}
        assert first.variant in timed and manifest.variants[first.variant].passed_parity
    with PairClassifier.load(tiny_bundle) as second:
        assert second.choice["how"] == "measured (cached)" and second.variant == first.variant


def test_auto_never_picks_a_failed_variant(tiny_bundle, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    for name in manifest["variants"]:
        if name != "optimized":
            manifest["variants"][name]["passed_parity"] = False
    manifest["manifest_sha256"] = manifest_digest(manifest)  # the manifest is checksummed (format 2)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with PairClassifier.load(bundle) as clf:
        assert clf.variant == "optimized"
    with PairClassifier.load(bundle, backend="onnxruntime", calibrate=False) as clf:
        assert clf.variant == "optimized" and clf.choice["how"] == "fixed order"
    with pytest.raises(BundleError, match="no variant that passed"):
        PairClassifier.load(bundle, backend="openvino")


def test_auto_reopens_a_near_tie_winner_it_closed_earlier(tiny_bundle, monkeypatch):
    """Timed in preference order, a candidate that loses a near-tie now can win it once a faster one arrives
    (it is then within 5 % of the new best while the earlier winner is not): it is opened again."""
    from pairbert.runtime import predictor

    names = predictor.candidates(read_manifest(tiny_bundle), "cpu", "auto")
    # ["int8", "optimized", "openvino-fp32", …] here; a CPU with bf16 units puts openvino-bf16 first
    assert len(names) >= 3
    # the second ties the first, then the third ties the second but not the first; the rest are slow
    seconds = {name: ([1.04, 1.00, 0.98] + [2.0] * len(names))[i] for i, name in enumerate(names)}
    order = iter(names)

    def fake_timing(run, input_names, vocab, apart=False):
        run(calibration.synthetic_feed(input_names, 1, 8, vocab))  # the session handed over is open
        s = seconds[next(order)]
        return {"1x21": s, "16x45": s}

    monkeypatch.setattr(calibration, "time_candidate", fake_timing)
    monkeypatch.setenv(calibration.IN_PROCESS_ENV, "1")  # the fake timing lives in this process
    with PairClassifier.load(tiny_bundle, threads=1) as clf:
        assert clf.variant == names[1] and clf.choice["how"] == "measured"  # tied with 0.98, first in order
        assert len(clf.predict([("who wrote hamlet?", "shakespeare.")])) == 1


def test_calibration_cache_is_keyed_by_bundle_and_cpu(tiny_bundle, monkeypatch):
    manifest_bytes = (tiny_bundle / "manifest.json").read_bytes()
    names = ["optimized", "openvino-fp32"]
    key = calibration.cache_key(manifest_bytes, 2, "cpu", names)
    # a changed bundle is measured again
    assert calibration.cache_key(manifest_bytes + b" ", 2, "cpu", names) != key
    assert calibration.cache_key(manifest_bytes, 1, "cpu", names) != key
    # another tie-break order or set of candidates is a different question: measured again
    assert calibration.cache_key(manifest_bytes, 2, "cpu", names[::-1]) != key
    with monkeypatch.context() as m:
        m.setattr(calibration, "SHAPES", ((1, 8),))
        assert calibration.cache_key(manifest_bytes, 2, "cpu", names) != key  # so are other timed shapes
    for constant, value in (("REPEATS", 9), ("TOLERANCE", 0.1)):  # and another way of timing or of tying
        with monkeypatch.context() as m:
            m.setattr(calibration, constant, value)
            assert calibration.cache_key(manifest_bytes, 2, "cpu", names) != key
    assert calibration.cache_key(manifest_bytes, 2, "cpu", names) == key  # the same question: the same key
    monkeypatch.setattr(calibration, "cpu_signature", lambda: "Another CPU [avx2] x64")
    assert calibration.cache_key(manifest_bytes, 2, "cpu", names) != key  # so is another CPU


def test_fastest_weighs_both_shapes_and_breaks_near_ties_by_preference():
    timings = {"a": {"1x24": 0.004, "16x48": 0.100}, "b": {"1x24": 0.005, "16x48": 0.060}}
    assert calibration.fastest(timings) == "b"
    assert calibration.fastest({"a": timings["a"]}) == "a"
    near = {"optimized": {"1x24": 0.0102, "16x48": 0.101}, "fp32": {"1x24": 0.0100, "16x48": 0.100}}
    assert calibration.fastest(near) == "optimized"  # 2 % apart is noise: the preferred one wins
    assert calibration.fastest(near, tolerance=0.0) == "fp32"


def test_openvino_backend_missing_names_the_extra(tiny_bundle):
    code = (
        "import sys; sys.modules['openvino'] = None\n"  # as if the extra were not installed
        "from pairbert.runtime import PairClassifier, BackendError\n"
        f"b = {str(tiny_bundle)!r}\n"
        "try:\n    PairClassifier.load(b, backend='openvino')\nexcept BackendError as e:\n    "
        "print('ERR', e)\n"
        "c = PairClassifier.load(b, calibrate=False)\nprint('AUTO', c.backend, c.variant)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (
        "ERR backend 'openvino' asked for, but OpenVINO is not installed: pip install 'pairbert[openvino]'"
        in done.stdout
    )
    assert "AUTO onnxruntime int8" in done.stdout  # auto without OpenVINO still works, on ONNX Runtime


def test_openvino_is_imported_on_a_second_thread_while_the_weights_are_copied(tiny_bundle):
    code = (
        "import sys, threading, time\n"
        "from pairbert.runtime import PairClassifier, sessions, external_weights\n"
        "assert 'openvino' not in sys.modules\n"
        "copying, seen = threading.Event(), []\n"
        "real_copy = external_weights.PrivateCopy.copy\n"
        "def copy(self):\n    copying.set()\n    return real_copy(self)\n"
        "external_weights.PrivateCopy.copy = copy\n"
        "real = sessions._import_quietly\n"
        "def spy():\n"
        "    overlapped = copying.wait(5)\n"  # the copy starts while this import is pending
        "    real()\n"
        "    time.sleep(0.3)\n"  # still running when the build would start: it must be waited for
        "    seen.append((threading.current_thread().name, overlapped, 'openvino' in sys.modules))\n"
        "sessions._import_quietly = spy\n"
        "b = sys.argv[1]\n"
        "c = PairClassifier.load(b, variant='openvino-fp32', calibrate=False)\n"
        "alive = [t.name for t in threading.enumerate() if t.name.startswith('pairbert-import')]\n"
        "print('SEEN', seen, 'ALIVE', alive, c.backend)\n"
        "c2 = PairClassifier.load(b, variant='openvino-fp32', calibrate=False)\n"
        "print('AGAIN', len(seen))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tiny_bundle)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "SEEN [('pairbert-import-openvino', True, True)] ALIVE [] openvino" in done.stdout
    assert "AGAIN 1" in done.stdout  # once imported: no second thread


def test_a_broken_openvino_imported_meanwhile_still_names_the_extra(tiny_bundle, tmp_path):
    fake = tmp_path / "fake" / "openvino"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(  # a broken install spends time importing before it fails
        "import time\ntime.sleep(0.3)\nraise ImportError('libopenvino.so: cannot open shared object file')\n"
    )
    code = (
        "import sys\n"
        "from pairbert.runtime import PairClassifier\n"
        "from pairbert.runtime.errors import PairbertError\n"
        "for _ in range(2):\n"
        "    try:\n"
        "        PairClassifier.load(sys.argv[1], variant='openvino-fp32', calibrate=False)\n"
        "    except PairbertError as e:\n"
        "        print('ERR', type(e).__name__, e)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tiny_bundle)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    errors = [line for line in done.stdout.splitlines() if line.startswith("ERR")]
    assert len(errors) == 2, done.stdout
    assert all("needs the OpenVINO runtime: pip install 'pairbert[openvino]'" in e for e in errors), errors


def test_session_factory_is_the_one_place_for_options(tiny_bundle):
    path = tiny_bundle / "model.fp32.onnx"
    feed = calibration.synthetic_feed(read_manifest(tiny_bundle).contract.input_names, 3, 9, vocab=50)
    # the graph and its weight file as bytes (how the predictor opens a bundle), or the graph's path
    in_memory = ExternalWeights(
        path.read_bytes(), {"model.fp32.onnx.data": path.with_suffix(".onnx.data").read_bytes()}
    )
    ort_logits = open_session("onnxruntime", in_memory, SessionSettings(threads=1)).run(feed)
    parallel = open_session("onnxruntime", path, SessionSettings(threads=2, parallel_branches=True)).run(feed)
    ov_logits = open_session("openvino", in_memory, SessionSettings(threads=1)).run(feed)
    ov_path_logits = open_session("openvino", path, SessionSettings(threads=1)).run(feed)
    assert ort_logits.shape == (3, 2)
    assert np.abs(ort_logits - parallel).max() <= 1e-5 and np.abs(ort_logits - ov_logits).max() <= 1e-4
    assert np.array_equal(ov_logits, ov_path_logits)
    with pytest.raises(BackendError, match="cannot load the graph"):  # weights not given: looked up nowhere
        open_session("onnxruntime", ExternalWeights(path.read_bytes(), {}), SessionSettings())
    with pytest.raises(BackendError, match="backend must be one of"):
        open_session("tensorrt", path, SessionSettings())
    with pytest.raises(BackendError, match="cannot load"):
        open_session("openvino", b"not a model", SessionSettings())


def test_openvino_reads_a_private_copy_of_the_verified_bytes_and_removes_it(
    tiny_bundle, tmp_path, monkeypatch
):
    """OpenVINO reads external weights only beside a graph on disk: it gets a copy of the verified bytes in a
    private temporary folder, gone once the model is compiled (on POSIX OpenVINO maps the copy, which then
    lives on unnamed until the session closes, as ONNX Runtime's does)."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    path = tiny_bundle / "model.fp32.onnx"
    data = path.with_suffix(".onnx.data").read_bytes()
    zeros = bytes(len(data))  # what the bytes say, not the bundle's file, is what OpenVINO must compute with
    feed = calibration.synthetic_feed(read_manifest(tiny_bundle).contract.input_names, 2, 7, vocab=50)
    settings = SessionSettings(threads=1)
    given = open_session(
        "openvino", ExternalWeights(path.read_bytes(), {path.name + ".data": zeros}), settings
    )
    on_disk = open_session("openvino", path, settings)
    assert not np.array_equal(given.run(feed), on_disk.run(feed))
    assert list(tmp_path.iterdir()) == []  # the private copy is gone
    maps = Path("/proc/self/maps").read_text() if Path("/proc/self/maps").exists() else ""
    copies = [line for line in maps.splitlines() if str(tmp_path) in line]
    assert all(line.endswith("(deleted)") for line in copies)
    assert copies or not maps  # mapped, not read in (Linux; elsewhere there is no /proc to look at)


def test_openvino_copy_from_memory_is_a_locked_private_folder(tiny_bundle, tmp_path, monkeypatch):
    """The copy OpenVINO compiles from is one of the runtime's private folders: locked while it is used (a
    process killed meanwhile leaves one the next load's stale cleanup removes), and never made in a TMPDIR
    that others may write to without the sticky bit (they could swap the copy before OpenVINO reads it)."""
    import tempfile

    from pairbert.runtime import external_weights, sessions
    from pairbert.runtime.external_weights import COPY_PREFIX, _try_lock

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    path = tiny_bundle / "model.fp32.onnx"
    model = ExternalWeights(
        path.read_bytes(), {path.name + ".data": path.with_suffix(".onnx.data").read_bytes()}
    )
    seen = []
    compile_model = sessions._compile

    def looking(core, graph, config, cache_dir):
        (folder,) = tmp_path.iterdir()
        seen.append((folder.name, folder.stat().st_mode & 0o777, _try_lock(folder)))
        return compile_model(core, graph, config, cache_dir)

    monkeypatch.setattr(sessions, "_compile", looking)
    open_session("openvino", model, SessionSettings(threads=1))
    (name, mode, lock) = seen[0]
    assert name.startswith(COPY_PREFIX) and mode == 0o700 and lock is None  # held by the load
    assert list(tmp_path.iterdir()) == []
    tmp_path.chmod(0o777)  # others may write, no sticky bit
    with pytest.raises(BackendUnavailable, match="writable by others without the sticky bit"):
        open_session("openvino", model, SessionSettings(threads=1))
    assert list(tmp_path.iterdir()) == []
    # Windows makes mode bits up (every writable folder reads 0o777): they are not judged there
    monkeypatch.setattr(external_weights, "POSIX_MODES", False)
    open_session("openvino", model, SessionSettings(threads=1))
    # an interrupt while the copy is written: the folder goes and its lock is released (no fd left)
    fds = len(os.listdir("/proc/self/fd"))

    def interrupted(folder):
        (folder / "graph.onnx").write_bytes(b"partly")
        raise KeyboardInterrupt

    monkeypatch.setattr(ExternalWeights, "write_private_copy", lambda self, folder: interrupted(folder))
    with pytest.raises(KeyboardInterrupt):
        open_session("openvino", model, SessionSettings(threads=1))
    assert list(tmp_path.iterdir()) == [] and len(os.listdir("/proc/self/fd")) == fds


def test_auto_skips_openvino_when_it_has_no_temporary_space(tiny_bundle, tmp_path, monkeypatch, caplog):
    """OpenVINO's private copy needs temporary space: without it `auto` measures the other candidates (and
    caches nothing, so it measures again once there is room); asking for OpenVINO says what is missing."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-folder"))
    monkeypatch.setenv("PAIRBERT_CACHE_DIR", str(tmp_path / "cache"))
    with caplog.at_level("WARNING", logger="pairbert.runtime.predictor"):
        clf = PairClassifier.load(tiny_bundle, device="cpu", threads=1)
    assert clf.backend == "onnxruntime" and "openvino-fp32 skipped" in caplog.text
    assert clf.choice["isolated"] is True  # the child measured, in this process's temporary folder
    assert calibration.read_cache() == {}
    with pytest.raises(BackendUnavailable, match="TMPDIR"):
        PairClassifier.load(tiny_bundle, variant="openvino-fp32", threads=1)


def test_auto_falls_back_to_a_lower_agreement_tier_when_nothing_above_it_runs(
    tiny_bundle, tmp_path, monkeypatch, caplog
):
    """The 99.5 % floor orders, it does not remove: when every variant agreeing on as many labels cannot run
    here (OpenVINO without a TMPDIR it may use), `auto` loads int8 (99.0 %) rather than failing."""
    import tempfile

    unsafe = tmp_path / "tmp"
    unsafe.mkdir()
    unsafe.chmod(0o777)  # others may write, no sticky bit: no private copy for OpenVINO
    monkeypatch.setattr(tempfile, "tempdir", str(unsafe))
    monkeypatch.setenv("PAIRBERT_CACHE_DIR", str(tmp_path / "cache"))
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)

    def change(d):
        for name in ("fp32", "optimized", "fp16"):
            d["variants"][name]["passed_parity"] = False  # as an export of --variants int8,openvino-fp32
        d["variants"]["int8"]["parity"]["label_agreement"] = 0.99

    edit_manifest(bundle, change)
    for calibrate in (True, False):
        with caplog.at_level("INFO", logger="pairbert.runtime.predictor"):
            assert PairClassifier.load(bundle, calibrate=calibrate, threads=1).variant == "int8"
        openvino = ", ".join(n for n in predictor_candidates(bundle) if BACKEND[n] == "openvino")
        assert (  # (openvino-bf16 too where this CPU has bf16 units)
            f"auto: tries {openvino} before int8 (labels agreeing on 99.5% of the gate's pairs first)"
            in (caplog.text)
        )
        assert f"none of {openvino} runs here" in caplog.text


def test_openvino_pads_lengths_to_buckets_and_answers_as_unpadded(tiny_bundle):
    """OpenVINO keeps state per input shape; its session pads sequence lengths to a few buckets so a service
    sees a bounded set of shapes. The padded runs must give the unpadded answers."""
    from pairbert.runtime.shapes import CPU_SEQUENCE_BUCKETS, pad_length

    path = tiny_bundle / "model.fp32.onnx"
    names = read_manifest(tiny_bundle).contract.input_names
    bucketed = open_session("openvino", path, SessionSettings(threads=1))
    exact = open_session("openvino", path, SessionSettings(threads=1, length_buckets=False))
    for batch, length in ((1, 9), (3, 13), (2, 33), (4, 64)):
        feed = calibration.synthetic_feed(names, batch, length, vocab=50)
        np.testing.assert_allclose(bucketed.run(feed), exact.run(feed), atol=1e-5)
        request = bucketed._requests.get_nowait()  # the request that just ran: what OpenVINO was fed
        assert tuple(request.get_input_tensor(0).shape) == (
            batch,
            pad_length(feed, CPU_SEQUENCE_BUCKETS)[names[0]].shape[1],
        )
        bucketed._requests.put(request)
    assert pad_length(calibration.synthetic_feed(names, 2, 13, vocab=50), CPU_SEQUENCE_BUCKETS)[
        names[0]
    ].shape == (2, 16)
    on_bucket = calibration.synthetic_feed(names, 2, 24, vocab=50)
    assert pad_length(on_bucket, CPU_SEQUENCE_BUCKETS) is on_bucket  # already a bucket: no copy
    beyond = calibration.synthetic_feed(names, 1, 600, vocab=50)
    assert pad_length(beyond, CPU_SEQUENCE_BUCKETS) is beyond  # beyond the largest bucket: run as it is


def test_openvino_pads_each_order_to_its_own_bucket_when_they_come_apart(tiny_bundle):
    """A feed whose orders come at their own lengths (15 + 4 tokens) runs as 16 + 4, not 16 + 16, and
    answers as unpadded."""
    from pairbert.runtime.contract import orders_padded_apart
    from pairbert.runtime.shapes import CPU_SEQUENCE_BUCKETS, pad_length

    manifest = read_manifest(tiny_bundle)
    assert orders_padded_apart(manifest.contract)  # (the bundles export writes now)
    names, path = manifest.contract.input_names, tiny_bundle / "model.fp32.onnx"
    bucketed = open_session("openvino", path, SessionSettings(threads=1))
    exact = open_session("openvino", path, SessionSettings(threads=1, length_buckets=False))
    for batch, qa, aq in ((1, 15, 4), (3, 13, 30), (2, 33, 9)):
        feed = {**calibration.synthetic_feed(names, batch, qa, vocab=50, aq=aq)}
        padded = pad_length(feed, CPU_SEQUENCE_BUCKETS)
        for name in names:
            wanted = qa if name.startswith("qa_") else aq
            assert padded[name].shape == (batch, min(b for b in CPU_SEQUENCE_BUCKETS if b >= wanted))
        np.testing.assert_allclose(bucketed.run(feed), exact.run(feed), atol=1e-5)


def test_close_hands_threads_back_and_context_manager(tiny_bundle):
    import gc

    gc.collect()  # predictors earlier tests dropped hand their threads back when collected: not mid-test
    before = LEDGER.claimed
    with PairClassifier.load(tiny_bundle, variant="fp32", threads=1) as clf:
        assert LEDGER.claimed == before + 1
    assert LEDGER.claimed == before
    clf.close()  # idempotent
    assert LEDGER.claimed == before


def test_a_two_column_array_of_pairs_is_accepted(tiny_bundle):
    pairs = [("who wrote hamlet?", "shakespeare wrote hamlet."), ("what is the capital of france?", "paris.")]
    with PairClassifier.load(tiny_bundle, variant="fp32") as clf:
        from_array = clf.predict(np.array(pairs))
        from_list = clf.predict(pairs)
        np.testing.assert_array_equal(from_array.probabilities, from_list.probabilities)
        with pytest.raises(PredictorError, match="pair 0: expected a \\(question, answer\\) pair"):
            clf.predict(np.array([["a", "b", "c"]]))


@pytest.mark.parametrize("variant", ["openvino-fp32", "openvino-bf16"])
@pytest.mark.skipif(os.name == "nt", reason="bf16 reads the cache only where the weights are mapped")
def test_openvino_compiles_once_into_the_cache_and_a_second_load_reuses_it(tiny_bundle, tmp_path, variant):
    pairs = [(r["question"], r["answer"]) for r in varied_pairs(7, seed=3)]
    precision = "f32" if variant == "openvino-fp32" else "bf16"
    folder = tmp_path / "cache" / "openvino" / precision  # under PAIRBERT_CACHE_DIR (private_cache fixture)
    with PairClassifier.load(tiny_bundle, variant=variant, threads=1) as first:
        expected = first.predict(pairs).probabilities
        assert first.session.loaded_from_cache is False
    blobs = {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.suffix == ".blob"}
    assert blobs, f"no compiled model in {folder}: {list(folder.iterdir())}"
    with PairClassifier.load(tiny_bundle, variant=variant, threads=1) as second:
        again = second.predict(pairs).probabilities
        assert second.session.loaded_from_cache is True  # imported, not compiled again
    assert {
        p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.suffix == ".blob"
    } == blobs  # read, not rewritten
    np.testing.assert_array_equal(again, expected)  # the imported blob answers as the compiled model did
    with PairClassifier.load(tiny_bundle, variant="fp32", threads=1) as ort:
        tolerance = 1e-5 if variant == "openvino-fp32" else 0.05  # bf16: the answer check's tolerance
        np.testing.assert_allclose(again, ort.predict(pairs).probabilities, atol=tolerance)


def test_bf16_reads_the_model_cache_only_where_the_weights_are_mapped(tmp_path, monkeypatch):
    """Cached bf16 blobs crashed or answered wrongly on an AMX machine when OpenVINO read the weights in
    (README: OpenVINO on AMX): where it reads them (Windows), bf16 compiles at every load; int8 always does.
    Each precision has its own folder: OpenVINO's cache key leaves the precision out."""
    from pairbert.runtime import predictor, sessions

    monkeypatch.setenv(calibration.CACHE_ENV, str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "openvino"
    monkeypatch.setattr(sessions, "MAPPED_FILES_REMOVABLE", True)
    assert predictor._openvino_cache("openvino-fp32") == str(folder / "f32")
    assert predictor._openvino_cache("openvino-bf16") == str(folder / "bf16")
    assert (
        predictor._openvino_cache("openvino-int8") is None and predictor._openvino_cache("optimized") is None
    )
    monkeypatch.setattr(sessions, "MAPPED_FILES_REMOVABLE", False)
    assert predictor._openvino_cache("openvino-fp32") == str(folder / "f32")
    assert predictor._openvino_cache("openvino-bf16") is None


@pytest.mark.skipif(os.name != "posix", reason="the cache lock is POSIX's flock")
def test_one_process_at_a_time_compiles_into_the_openvino_cache(tiny_bundle, tmp_path):
    """While another holds the cache folder's lock (compiling, or importing what it just wrote), a load
    waits instead of rewriting a blob in place under a process that maps it."""
    import fcntl
    import threading

    folder = tmp_path / "cache" / "openvino" / "f32"  # under PAIRBERT_CACHE_DIR (the private_cache fixture)
    folder.mkdir(parents=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    loaded = {}
    thread = threading.Thread(
        target=lambda: loaded.update(clf=PairClassifier.load(tiny_bundle, variant="openvino-fp32", threads=1))
    )
    try:
        thread.start()
        thread.join(2.0)
        assert thread.is_alive() and not list(folder.glob("*.blob"))  # waiting, nothing written
    finally:
        os.close(fd)
    thread.join(60)
    assert not thread.is_alive() and list(folder.glob("*.blob"))
    with loaded["clf"] as clf:
        assert len(clf.predict([("who wrote hamlet?", "shakespeare wrote hamlet.")])) == 1


@pytest.mark.skipif(os.name != "posix", reason="the cache lock is POSIX's flock")
def test_a_cache_locked_too_long_or_without_locks_still_loads(tiny_bundle, tmp_path, monkeypatch, caplog):
    """A lock held past CACHE_LOCK_WAIT_S: the load compiles without the cache (warned, nothing written);
    a file system without flock: the cache is used without the lock."""
    import errno
    import fcntl

    from pairbert.runtime import sessions

    folder = tmp_path / "cache" / "openvino" / "f32"  # under PAIRBERT_CACHE_DIR (the private_cache fixture)
    folder.mkdir(parents=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    monkeypatch.setattr(sessions, "CACHE_LOCK_WAIT_S", 0.3)
    try:
        with (
            caplog.at_level("WARNING"),
            PairClassifier.load(tiny_bundle, variant="openvino-fp32", threads=1) as clf,
        ):
            assert len(clf.predict([("a question?", "an answer.")])) == 1
    finally:
        os.close(fd)
    assert "held it for over 0 s; compiling without it" in caplog.text and not list(folder.glob("*.blob"))

    def no_locks(*_):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(sessions.fcntl, "flock", no_locks)
    with PairClassifier.load(tiny_bundle, variant="openvino-fp32", threads=1) as clf:
        assert len(clf.predict([("a question?", "an answer.")])) == 1
    assert list(folder.glob("*.blob"))  # the cache, used without a lock


def test_an_unwritable_openvino_cache_warns_and_loads_without_it(tiny_bundle, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(calibration.CACHE_ENV, str(blocker / "cache"))  # mkdir fails (root ignores modes)
    with (
        caplog.at_level("WARNING"),
        PairClassifier.load(tiny_bundle, variant="openvino-fp32", threads=1) as clf,
    ):
        assert clf.predict([("a question?", "an answer.")]).probabilities.shape == (1, len(clf.label_names))
    assert any("cannot write the OpenVINO model cache" in r.getMessage() for r in caplog.records)
    assert calibration.openvino_cache_dir("f32") is None
