"""`auto` measures in a child process and soaks every candidate: a candidate that crashes the process, hangs
or answers differently from one call to the next is left out (and the caller lives on). The faults are
real: a sitecustomize module on the child's PYTHONPATH makes OpenVINO's real session abort, hang or drift
after a few calls, as pairbert's bf16 sessions did on an AMX machine."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from datetime import datetime, timedelta, timezone

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


def first_tier(bundle) -> set[str]:
    """What `auto` measures first: the candidates agreeing with torch on >= 99.5 % of the gate's pairs."""
    return set(predictor.candidate_tiers(read_manifest(bundle), "cpu", "auto")[0])


def openvino_candidates(bundle) -> set[str]:
    """openvino-fp32, and openvino-bf16 where this CPU has bf16 units (it was validated at export)."""
    return {n for n in first_tier(bundle) if BACKEND[n] == "openvino"}


posix_only = pytest.mark.skipif(os.name != "posix", reason="signals")


def test_auto_measures_each_candidate_in_a_child_and_soaks_it(tiny_bundle):
    with PairClassifier.load(tiny_bundle, threads=1) as clf:
        choice = clf.choice
        assert choice["how"] == "measured" and choice["isolated"] is True and choice["crashed"] == {}
        assert set(choice["timings_s"]) | set(choice["skipped"]) == first_tier(tiny_bundle)
        assert set(choice["soak"]) == set(choice["timings_s"]) and choice["timings_s"]
        check_rows = len(read_manifest(tiny_bundle).answer_check["feed"]["qa_input_ids"])
        for soaked in choice["soak"].values():  # every row alone, then at least one round of batches
            assert soaked["calls"] >= calibration.SOAK_ROWS + check_rows + len(calibration.SOAK_BATCHES)
        assert clf.variant == calibration.fastest(choice["timings_s"])
        assert len(clf.predict(PAIRS)) == 2
    with PairClassifier.load(tiny_bundle, threads=1) as again:
        assert again.choice["how"] == "measured (cached)" and again.variant == clf.variant


@posix_only
def test_a_candidate_that_crashes_its_child_is_left_out_and_remembered(tiny_bundle, tmp_path, monkeypatch):
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
        assert set(crashed) == openvino and clf.backend == "onnxruntime"
        for why in crashed.values():
            assert why.startswith("killed by SIGABRT") and why.endswith("(while timing)")
        assert set(clf.choice["timings_s"]) == first_tier(tiny_bundle) - openvino
        assert len(clf.predict(PAIRS)) == 2
    with PairClassifier.load(tiny_bundle, threads=1) as again:  # the same CPU and libraries crash again
        assert again.choice["how"] == "measured (cached)" and again.variant == clf.variant


@posix_only
def test_a_crash_at_the_child_exit_is_the_candidate_s_own(tiny_bundle, tmp_path, monkeypatch):
    """Heap damage is often reported by a later free, at teardown: one child per candidate blames the one
    that ran, even after its result was sent."""
    fault_in_child(
        tmp_path,
        monkeypatch,
        """
        def faulty(self, feed):
            if calls(self) == 1:
                import atexit, os
                atexit.register(os.abort)
            return real(self, feed)
        """,
    )
    with PairClassifier.load(tiny_bundle, threads=1) as clf:
        crashed = clf.choice["crashed"]
        assert set(crashed) == openvino_candidates(tiny_bundle) and clf.backend == "onnxruntime"
        assert all(why.endswith("(after its result)") for why in crashed.values())


@posix_only
def test_a_child_killed_from_outside_is_left_out_but_not_remembered(tiny_bundle, tmp_path, monkeypatch):
    """SIGTERM (a service manager), SIGKILL (the OOM killer): not the candidate's doing, measured again."""
    fault_in_child(
        tmp_path,
        monkeypatch,
        """
        def faulty(self, feed):
            if calls(self) > 5:
                import os, signal
                os.kill(os.getpid(), signal.SIGTERM)
            return real(self, feed)
        """,
    )
    with PairClassifier.load(tiny_bundle, threads=1) as clf:
        crashed = clf.choice["crashed"]
        assert set(crashed) == openvino_candidates(tiny_bundle) and clf.backend == "onnxruntime"
        assert all(why.startswith("killed by SIGTERM") for why in crashed.values())
    assert calibration.read_cache() == {}


def test_a_candidate_whose_answers_go_wrong_is_left_out(tiny_bundle, tmp_path, monkeypatch):
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
    monkeypatch.setattr(predictor, "CHILD_STEP_SECONDS", 6)
    with PairClassifier.load(tiny_bundle, threads=1) as clf:
        crashed = clf.choice["crashed"]
        assert set(crashed) == openvino_candidates(tiny_bundle) and clf.backend == "onnxruntime"
        assert all(why.startswith("showed no sign of life in time") for why in crashed.values())
    assert calibration.read_cache() == {}  # a hang may be the host's: not remembered


@pytest.mark.parametrize("executable", ["/nonexistent/python", "/bin/true", "/bin/false", "sleeper", None])
def test_without_a_python_child_auto_measures_here(tiny_bundle, tmp_path, monkeypatch, caplog, executable):
    """sys.executable that is missing, not a Python (exits 0 or 1 at once, or runs without a word), or
    empty (an embedded interpreter): measured and soaked in this process, with a warning, never a failure."""
    if executable == "sleeper":
        executable = tmp_path / "sleeper"
        executable.write_text("#!/bin/sh\nsleep 60\n")
        executable.chmod(0o755)
        monkeypatch.setattr(predictor, "CHILD_HELLO_SECONDS", 2)
    if executable is not None and not os.path.exists(executable) and "nonexistent" not in str(executable):
        pytest.skip(f"no {executable} here")
    monkeypatch.setattr(sys, "executable", None if executable is None else str(executable))
    with caplog.at_level("WARNING", logger="pairbert.runtime.predictor"):
        with PairClassifier.load(tiny_bundle, threads=1) as clf:
            assert clf.choice["how"] == "measured" and clf.choice["isolated"] is False
            assert set(clf.choice["soak"]) == set(clf.choice["timings_s"]) and clf.choice["timings_s"]
    assert "no child process to measure in" in caplog.text


def test_a_frozen_application_measures_here(tiny_bundle, monkeypatch, caplog):
    """A frozen app's executable runs the app, not `python -c`: no child is started (it could start the
    app again, and that one another)."""
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    with caplog.at_level("WARNING", logger="pairbert.runtime.predictor"):
        with PairClassifier.load(tiny_bundle, threads=1) as clf:
            assert clf.choice["isolated"] is False
    assert "a frozen application" in caplog.text


def test_measuring_here_also_soaks(tiny_bundle, monkeypatch):
    """In this process (PAIRBERT_CALIBRATE_IN_PROCESS), a session whose answers go wrong is left out too."""
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


def test_a_remembered_crash_is_trusted_for_a_week_and_recalibrate_measures_again(tiny_bundle, monkeypatch):
    with PairClassifier.load(tiny_bundle, threads=1) as clf:
        assert clf.choice["how"] == "measured"
    path = calibration.cache_dir() / calibration.CACHE_FILE
    cache = json.loads(path.read_text())
    (key,) = cache
    long_ago = datetime.now(timezone.utc) - timedelta(days=calibration.CRASH_MEMORY_DAYS + 1)
    cache[key].update(crashed={"openvino-bf16": "killed by SIGABRT"}, measured_at=long_ago.isoformat())
    path.write_text(json.dumps(cache))
    with PairClassifier.load(tiny_bundle, threads=1) as again:
        assert again.choice["how"] == "measured"  # a crash a week old: the host may have changed
    with PairClassifier.load(tiny_bundle, threads=1) as cached:
        assert cached.choice["how"] == "measured (cached)"
    monkeypatch.setenv(calibration.RECALIBRATE_ENV, "1")
    with PairClassifier.load(tiny_bundle, threads=1) as forced:
        assert forced.choice["how"] == "measured"


def test_soak_on_a_real_session(tiny_bundle):
    """The soak's own arithmetic: a real session passes it (padding is masked), the check pairs are held
    to the export's answers, and a run whose answers depend on the batch fails it."""
    from pairbert.runtime.contract import orders_padded_apart

    manifest = read_manifest(tiny_bundle)
    apart = orders_padded_apart(manifest.contract)
    check = manifest.answer_check
    expected = check["probabilities"]["fp32"]
    with PairClassifier.load(tiny_bundle, variant="fp32", threads=1) as clf:
        names, run = manifest.contract.input_names, clf.session.run
        vocab = clf.encoder.tokenizer.get_vocab_size()
        soaked = calibration.soak(run, names, vocab, "fp32", apart, check["feed"], expected)
        assert soaked["max_moved"] <= 1e-4

        swapped = [row[::-1] for row in expected]  # the export said otherwise
        assert np.abs(np.asarray(swapped) - np.asarray(expected)).max() > 0.02
        with pytest.raises(calibration.Inconsistent, match="allowed 0.01 for fp32"):
            calibration.soak(run, names, vocab, "fp32", apart, check["feed"], swapped)

        def by_batch(feed):  # the same pair answers differently with more company
            out = run(feed)
            return out + np.float32(len(out) > 1) * np.array([0.0, 3.0], np.float32)

        with pytest.raises(calibration.Inconsistent, match="allowed 0.01 for fp32"):
            calibration.soak(by_batch, names, vocab, "fp32", apart, check["feed"], expected)


def test_soak_rows_cut_by_their_masks_and_collate_back():
    names = ["qa_input_ids", "qa_attention_mask", "aq_input_ids", "aq_attention_mask"]
    feed = {
        "qa_input_ids": [[5, 6, 7, 0], [8, 9, 0, 0]],
        "qa_attention_mask": [[1, 1, 1, 0], [1, 1, 0, 0]],
        "aq_input_ids": [[3, 0], [4, 2]],
        "aq_attention_mask": [[1, 0], [1, 1]],
    }
    rows = calibration._rows_of(feed, names)
    assert [len(r["qa_input_ids"]) for r in rows] == [3, 2]
    assert [len(r["aq_input_ids"]) for r in rows] == [1, 2]
    again = calibration._collate(rows, names)
    for name in names:
        np.testing.assert_array_equal(again[name], np.asarray(feed[name])[:, : again[name].shape[1]])
    assert again["qa_input_ids"].shape == (2, 3) and again["aq_input_ids"].shape == (2, 2)
    assert calibration._rows_of({"qa_input_ids": [[1]]}, names) == []  # a feed missing inputs: no rows
