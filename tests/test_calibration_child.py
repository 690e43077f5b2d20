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
from pathlib import Path

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
    """openvino-fp32 and openvino-int8, and openvino-bf16 where this CPU has bf16 units (validated at export);
    each reads its own `provider` (the precisions it runs in), which the faults below key their markers by."""
    found = {n for n in first_tier(bundle) if BACKEND[n] == "openvino"}
    assert found  # (the faulted ones: the tests below compare with this set)
    return found


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
        for name in openvino_candidates(tiny_bundle) & set(choice["soak"]):
            # measured and soaked as every later load runs it: the blob imported from the model cache
            assert choice["soak"][name]["from_cache"] is (predictor._openvino_cache(name) is not None), name
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
        for why in crashed.values():
            assert why.count("killed by SIGABRT") == 2  # twice: remembered
    with PairClassifier.load(tiny_bundle, threads=1) as again:
        assert again.choice["how"] == "measured (cached)" and again.variant == clf.variant


@posix_only
def test_a_crash_that_does_not_recur_is_left_out_but_not_remembered(tiny_bundle, tmp_path, monkeypatch):
    """Each crashed candidate runs once more in a new child; one that then runs (the host's doing, or a
    crash that comes and goes) is still left out, but measured again next time."""
    marker = tmp_path / "crashed-once"
    fault_in_child(
        tmp_path,
        monkeypatch,
        f"""
        def faulty(self, feed):
            import os
            if calls(self) > 5 and not os.path.exists({str(marker)!r} + self.provider):
                open({str(marker)!r} + self.provider, "w").close()
                os.abort()
            return real(self, feed)
        """,
    )
    with PairClassifier.load(tiny_bundle, threads=1) as clf:
        crashed = clf.choice["crashed"]
        assert set(crashed) == openvino_candidates(tiny_bundle) and clf.backend == "onnxruntime"
        for why in crashed.values():  # the first crash's words kept, and what the second run did
            assert why.startswith("killed by SIGABRT") and why.endswith("then, once more: ran")
    assert calibration.read_cache() == {}


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
    monkeypatch.setattr(predictor, "CHILD_STEP_SECONDS", 10)
    with PairClassifier.load(tiny_bundle, threads=1) as clf:
        crashed = clf.choice["crashed"]
        assert set(crashed) == openvino_candidates(tiny_bundle) and clf.backend == "onnxruntime"
        assert all(why.startswith("showed no sign of life in time") for why in crashed.values())
    assert calibration.read_cache() == {}  # a hang may be the host's: not remembered


def script(folder, name: str, body: str) -> str:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


@posix_only
@pytest.mark.parametrize("kind", ["missing", "not python", "exits 0", "exits 1", "silent", "empty"])
def test_without_a_python_child_auto_measures_here(tiny_bundle, tmp_path, monkeypatch, caplog, kind):
    """sys.executable that is missing, not named like a Python (uwsgi, an embedding host), one that exits 0
    or 1 at once or runs without a word, or empty (an embedded interpreter): measured and soaked in this
    process, with a warning, never a failure."""
    executable = {
        "missing": str(tmp_path / "python-missing"),
        "not python": script(tmp_path, "uwsgi", "exit 0"),
        "exits 0": script(tmp_path, "python-true", "exit 0"),
        "exits 1": script(tmp_path, "python-false", "exit 1"),
        "silent": script(tmp_path, "python-silent", "sleep 60"),
        "empty": "",
    }[kind]
    monkeypatch.setattr(predictor, "CHILD_HELLO_SECONDS", 1)  # (then 4 s: a slow start gets a second try)
    monkeypatch.setattr(sys, "executable", executable)
    with caplog.at_level("WARNING", logger="pairbert.runtime.predictor"):
        with PairClassifier.load(tiny_bundle, threads=1) as clf:
            assert clf.choice["how"] == "measured" and clf.choice["isolated"] is False
            assert set(clf.choice["soak"]) == set(clf.choice["timings_s"]) and clf.choice["timings_s"]
    assert "no child process to measure in" in caplog.text


@posix_only
def test_native_output_on_stdout_does_not_disturb_the_events(tiny_bundle, tmp_path, monkeypatch):
    fault_in_child(
        tmp_path,
        monkeypatch,
        """
        def faulty(self, feed):
            import os
            os.write(1, b"a native library's words, no newline")
            return real(self, feed)
        """,
    )
    with PairClassifier.load(tiny_bundle, threads=1) as clf:
        assert clf.choice["isolated"] is True and clf.choice["crashed"] == {}
        assert openvino_candidates(tiny_bundle) <= set(clf.choice["timings_s"])


def test_a_damaged_file_found_by_a_child_fails_the_load_as_a_load_would(tiny_bundle, tmp_path):
    import shutil

    from pairbert.runtime import BundleError

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    data = bundle / "model.optimized.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size: only its sha256 tells
    data.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="model.optimized.onnx.data"):
        PairClassifier.load(bundle, threads=1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_child_does_not_outlive_a_caller_killed_outright(tiny_bundle, tmp_path, monkeypatch):
    import signal
    import subprocess
    import time

    fault_in_child(tmp_path, monkeypatch, "def faulty(self, feed):\n    import time\n    time.sleep(3600)\n")
    marker = str(tmp_path / "orphan-cache")
    env = {**os.environ, calibration.CACHE_ENV: marker}
    load = f"from pairbert.runtime import PairClassifier; PairClassifier.load({str(tiny_bundle)!r})"
    caller = subprocess.Popen([sys.executable, "-c", load], env=env)

    def children() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != caller.pid:
                try:
                    if marker.encode() in (entry / "environ").read_bytes():
                        found.append(int(entry.name))
                except OSError:
                    continue
        return found

    deadline = time.monotonic() + 120
    while not children() and time.monotonic() < deadline:  # until a measuring child hangs in OpenVINO
        time.sleep(0.2)
    assert children(), "no measuring child started"
    caller.send_signal(signal.SIGKILL)
    caller.wait()
    deadline = time.monotonic() + 15
    while children() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert children() == []


@pytest.mark.parametrize(
    "final, status, outcome",
    [
        (None, 0, "crashed"),  # hello, then a clean exit without a result (SIGCHLD ignored, sys.exit)
        (None, None, "crashed"),  # no sign of life in time
        (None, -6, "crashed lasting"),  # SIGABRT
        (None, -15, "crashed"),  # SIGTERM: from outside
        (None, 1, "crashed"),
        ("done", 0, "timed"),
        ("done", None, "timed"),  # hung at its exit after its result
        ("done", -11, "crashed lasting"),  # SIGSEGV at teardown
        ("done", 3, "crashed"),
        ("skipped", 0, "skipped"),
        ("skipped", -6, "skipped"),
        ("mismatch", 0, "skipped lasting"),
    ],
)
def test_what_a_child_said_and_how_it_ended(final, status, outcome):
    events = [{"hello": "x"}, {"loaded": "v"}]
    if final == "done":
        events.append({"done": "v", "timings_s": {"1x21": 0.1}, "soak": {"calls": 3, "max_moved": 0.0}})
    elif final in ("skipped", "mismatch"):
        events.append({"skipped": "v", "reason": "why", "mismatch": final == "mismatch"})
    measured = predictor._Measured({}, {}, {}, set(), {}, isolated=True)
    crash = predictor._take_child_result(measured, "v", events, "double free or corruption (!prev)\n", status)
    kind = outcome.split()[0]
    got = {"crashed": measured.crashed, "timed": measured.timings, "skipped": measured.skipped}
    assert [k for k, v in got.items() if v] == [kind]
    if kind == "crashed":
        assert measured.crashed["v"].endswith("(after its result)" if final else "(while timing)")
    assert crash == (outcome == "crashed lasting")
    if outcome == "skipped lasting":
        assert measured.lasting == {"v"}


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
