"""`auto` measures in a child process and soaks every candidate: a candidate that crashes the process, hangs
or answers differently from one call to the next is left out (and the caller lives on). The faults are
real: a sitecustomize module on the child's PYTHONPATH makes OpenVINO's real session abort, hang or drift
after a few calls, as pairbert's bf16 sessions did on an AMX machine."""

from __future__ import annotations

import os
import sys
import textwrap

import numpy as np
import pytest

from pairbert.runtime import PairClassifier, calibration, predictor
from pairbert.runtime.bundle import read_manifest
from pairbert.runtime.variants import BACKEND

pytest.importorskip("openvino")

PAIRS = [("who wrote hamlet?", "shakespeare wrote hamlet."), ("how tall is everest?", "about 8,849 metres.")]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(calibration.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(calibration.IN_PROCESS_ENV, raising=False)


def fault_in_child(tmp_path, monkeypatch, body: str) -> None:
    """Children started from now on run `body` at start-up (sitecustomize), with OpenVinoSession.run as
    `real` and `calls(session)` counting each session's calls; this process is not touched."""
    folder = tmp_path / "fault"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(
        "from pairbert.runtime import sessions\n"
        "real = sessions.OpenVinoSession.run\n"
        "def calls(session):\n"
        "    session.faulty_calls = getattr(session, 'faulty_calls', 0) + 1\n"
        "    return session.faulty_calls\n"
        + textwrap.dedent(body)
        + "sessions.OpenVinoSession.run = faulty\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), *sys.path]))


def expected_candidates(bundle) -> set[str]:
    return set(predictor.candidates(read_manifest(bundle), "cpu", "auto"))


def openvino_candidates(bundle) -> set[str]:
    """openvino-fp32, and openvino-bf16 where this CPU has bf16 units (it was validated at export)."""
    return {n for n in expected_candidates(bundle) if BACKEND[n] == "openvino"}


def test_auto_measures_in_a_child_and_soaks_each_candidate(tiny_bundle):
    with PairClassifier.load(tiny_bundle, threads=1) as clf:
        choice = clf.choice
        assert choice["how"] == "measured" and choice["isolated"] is True
        assert set(choice["timings_s"]) == set(choice["soak"]) == expected_candidates(tiny_bundle)
        assert choice["crashed"] == {} and choice["skipped"] == {}
        calls = calibration.SOAK_ROWS + len(calibration.SOAK_BATCHES)
        for name, soaked in choice["soak"].items():
            assert soaked["calls"] >= calls  # (plus the manifest's check pairs, each alone)
            precision = read_manifest(tiny_bundle).variants[name].precision
            assert 0.0 <= soaked["max_moved"] <= calibration.SOAK_TOLERANCE[precision]
        assert clf.variant == calibration.fastest(choice["timings_s"])
        assert len(clf.predict(PAIRS)) == 2
    with PairClassifier.load(tiny_bundle, threads=1) as again:
        assert again.choice["how"] == "measured (cached)" and again.variant == clf.variant


def test_a_candidate_that_crashes_the_child_is_left_out_and_remembered(tiny_bundle, tmp_path, monkeypatch):
    fault_in_child(
        tmp_path,
        monkeypatch,
        """
        def faulty(self, feed):
            if calls(self) > 5:  # past the load's answer check, a few calls into the timing
                import os
                os.abort()
            return real(self, feed)
        """,
    )
    with PairClassifier.load(tiny_bundle, threads=1) as clf:
        crashed, openvino = clf.choice["crashed"], openvino_candidates(tiny_bundle)
        assert set(crashed) == openvino and all(c.startswith("killed by SIGABRT") for c in crashed.values())
        assert clf.backend == "onnxruntime"
        others = expected_candidates(tiny_bundle) - openvino
        assert set(clf.choice["timings_s"]) == others  # the ones after it were measured by a new child
        assert len(clf.predict(PAIRS)) == 2
    with PairClassifier.load(tiny_bundle, threads=1) as again:  # the same CPU and libraries crash again
        assert again.choice["how"] == "measured (cached)" and again.variant == clf.variant


def test_a_candidate_whose_answers_drift_is_left_out(tiny_bundle, tmp_path, monkeypatch):
    fault_in_child(
        tmp_path,
        monkeypatch,
        """
        def faulty(self, feed):
            out = real(self, feed)
            if calls(self) > 15:  # right at first (the answer check passes), wrong later
                out = out[:, ::-1].copy()  # the labels swapped
            return out
        """,
    )
    with PairClassifier.load(tiny_bundle, threads=1) as clf:
        assert set(clf.choice["skipped"]) == openvino_candidates(tiny_bundle) and clf.backend == "onnxruntime"
        assert all("differently from one call to the next" in why for why in clf.choice["skipped"].values())
    with PairClassifier.load(tiny_bundle, threads=1) as again:
        assert again.choice["how"] == "measured (cached)"


def test_a_candidate_that_hangs_is_killed_left_out_and_measured_again_next_time(
    tiny_bundle, tmp_path, monkeypatch
):
    fault_in_child(
        tmp_path,
        monkeypatch,
        """
        def faulty(self, feed):
            if calls(self) > 5:
                import time
                time.sleep(3600)
            return real(self, feed)
        """,
    )
    monkeypatch.setattr(predictor, "CHILD_SECONDS_PER_CANDIDATE", 8)
    with PairClassifier.load(tiny_bundle, threads=1) as clf:
        crashed = clf.choice["crashed"]
        assert set(crashed) == openvino_candidates(tiny_bundle) and clf.backend == "onnxruntime"
        assert all(why.startswith("still running 8 s after it started") for why in crashed.values())
    assert calibration.read_cache() == {}  # a hang may be the host's: not remembered


def test_without_a_child_process_auto_measures_here(tiny_bundle, monkeypatch, caplog):
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    with caplog.at_level("WARNING", logger="pairbert.runtime.predictor"):
        with PairClassifier.load(tiny_bundle, threads=1) as clf:
            assert clf.choice["how"] == "measured" and clf.choice["isolated"] is False
            assert set(clf.choice["soak"]) == expected_candidates(tiny_bundle)
    assert "cannot start a child process to measure in" in caplog.text


def test_measuring_here_also_soaks(tiny_bundle, monkeypatch):
    """In this process (PAIRBERT_CALIBRATE_IN_PROCESS), a drifting session is left out as well."""
    from pairbert.runtime import sessions

    real = sessions.OpenVinoSession.run

    def drifting(self, feed):
        self.faulty_calls = getattr(self, "faulty_calls", 0) + 1
        out = real(self, feed)
        return out[:, ::-1].copy() if self.faulty_calls > 15 else out  # the labels swapped

    monkeypatch.setattr(sessions.OpenVinoSession, "run", drifting)
    monkeypatch.setenv(calibration.IN_PROCESS_ENV, "1")
    with PairClassifier.load(tiny_bundle, threads=1) as clf:
        assert clf.choice["isolated"] is False and clf.backend == "onnxruntime"
        assert set(clf.choice["skipped"]) == openvino_candidates(tiny_bundle)


def test_soak_rows_answer_alone_as_in_any_batch_on_a_real_session(tiny_bundle):
    """The soak's own arithmetic: a real session passes it (any padding is masked), its batches mix the
    check pairs' rows with random ones, and a run whose answers depend on the batch fails it."""
    manifest = read_manifest(tiny_bundle)
    with PairClassifier.load(tiny_bundle, variant="fp32", threads=1) as clf:
        names = manifest.contract.input_names
        vocab = clf.encoder.tokenizer.get_vocab_size()
        check = manifest.answer_check.get("feed")
        soaked = calibration.soak(clf.session.run, names, vocab, "fp32", False, check)
        assert soaked["max_moved"] <= 1e-4
        assert soaked["calls"] == calibration.SOAK_ROWS + len(check["qa_input_ids"]) + len(
            calibration.SOAK_BATCHES
        )

        def by_batch(feed):  # the same pair answers differently with more company
            out = clf.session.run(feed)
            return out + np.float32(len(out) > 1) * np.array([0.0, 3.0], np.float32)

        with pytest.raises(calibration.Inconsistent, match="allowed 0.01 for fp32"):
            calibration.soak(by_batch, names, vocab, "fp32", False, check)
