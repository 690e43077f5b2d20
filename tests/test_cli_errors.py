"""`pairbert predict/evaluate/serve` under hostile conditions (probe6): write errors, exit codes, empty and
malformed inputs, chunk memory, Ctrl-C. Real files, real subprocesses where the condition needs a process
(a file-size limit, stdout on /dev/full, a pipe closed early, SIGINT)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import varied_pairs

from pairbert import cli
from pairbert.runtime.pair_files import Pair, PairFileError


def run_cli(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return exc.code


def pairs_file(tmp_path: Path, n: int, name: str = "in.jsonl", tail: str = "") -> Path:
    src = tmp_path / name
    rows = [json.dumps({"question": r["question"], "answer": r["answer"]}) for r in varied_pairs(n)]
    src.write_text("\n".join(rows) + "\n" + tail)
    return src


def pairbert(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pairbert", *args], capture_output=True, text=True, timeout=120, **kwargs
    )


# 1. write errors: one line naming the output and the OS reason; only complete rows kept in .partial


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_output_on_a_full_device_is_one_line(tiny_bundle, tmp_path, capsys):
    src = pairs_file(tmp_path, 5)
    assert run_cli(["predict", str(tiny_bundle), "--input", str(src), "--output", "/dev/full"]) == 1
    err = capsys.readouterr().err
    assert (
        err.strip() == "pairbert predict: error: --output /dev/full: cannot write (No space left on device)"
    )


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_stdout_on_a_full_device_is_one_line(tiny_bundle, tmp_path):
    src = pairs_file(tmp_path, 5)
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "pairbert", "predict", str(tiny_bundle), "--input", str(src)],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "pairbert predict: error: standard output: cannot write (No space left on device)"
    ]


def _limit_file_size(limit: int):
    def apply() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG as an error instead of a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_file_too_large_keeps_only_complete_rows_in_partial(tiny_bundle, tmp_path):
    src = pairs_file(tmp_path, 40)
    out = tmp_path / "out.jsonl"
    out.write_text("previous run\n")
    done = subprocess.run(
        [sys.executable, "-m", "pairbert", "predict", str(tiny_bundle), "--input", str(src)]
        + ["--output", str(out), "--chunk", "4", "--variant", "fp32"],  # not auto: its first timing
        capture_output=True,  # (when no earlier test cached it) copies OpenVINO's graph under this limit
        text=True,
        timeout=120,
        preexec_fn=_limit_file_size(3000),  # a few chunks fit; the one that crosses the limit is torn
    )
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"pairbert predict: error: --output {out}: cannot write (File too large) (")
    assert out.read_text() == "previous run\n"
    partial = (tmp_path / "out.jsonl.partial").read_text()
    rows = [json.loads(r) for r in partial.splitlines()]  # every kept row is whole
    assert partial.endswith("\n") and len(rows) % 4 == 0 and 0 < len(rows) < 40
    assert f"{len(rows)} predictions before it are in {out}.partial" in line
    assert [r["question"] for r in rows] == [p["question"] for p in varied_pairs(40)[: len(rows)]]


def test_a_reader_leaving_early_stays_quiet(tiny_bundle, tmp_path):
    src = pairs_file(tmp_path, 3000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pairbert", "predict", str(tiny_bundle), "--input", str(src), "--chunk", "50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert json.loads(proc.stdout.readline())["question"]  # `| head -1`
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0
    assert err == ""


# 2. exit codes: a data error is 1 with or without --output; bad option values are usage errors (2)


def test_data_error_with_output_exits_1_with_the_same_message(tiny_bundle, tmp_path, capsys):
    src = pairs_file(tmp_path, 3, tail='{"question": "q"}\n')
    assert run_cli(["predict", str(tiny_bundle), "--input", str(src)]) == 1
    plain = capsys.readouterr().err.strip()
    out = tmp_path / "out.jsonl"
    assert run_cli(["predict", str(tiny_bundle), "--input", str(src), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert "usage:" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith(plain + " (3 predictions before it are in ")
    assert "in.jsonl, line 4, field 'answer': missing" in plain


@pytest.mark.parametrize(
    "argv, message",
    [
        (["serve", "b", "--port", "70000"], "argument --port: must be between 0 and 65535, got 70000"),
        (["serve", "b", "--port", "-1"], "argument --port: must be between 0 and 65535"),
        (["serve", "b", "--max-wait-ms", "nan"], "argument --max-wait-ms: must be a number between 0 and"),
        (["serve", "b", "--max-wait-ms", "inf"], "argument --max-wait-ms: must be a number between 0 and"),
        (["serve", "b", "--max-wait-ms", "-1"], "argument --max-wait-ms: must be a number between 0 and"),
        (["serve", "b", "--max-wait-ms", "soon"], "argument --max-wait-ms: invalid number value: 'soon'"),
        (["serve", "b", "--max-queue-pairs", "0"], "argument --max-queue-pairs: must be at least 1"),
        (["serve", "b", "--threads", "100000"], "argument --threads: at most"),
        (["predict", "b", "-q", "q", "-a", "a", "--threads", "100000"], "argument --threads: at most"),
        (["serve", "b", "--body-timeout", "nan"], "argument --body-timeout: must be a number between"),
        (["serve", "b", "--graceful-shutdown", "0"], "argument --graceful-shutdown: must be a number"),
        (["serve", "b", "--max-connections", "0"], "argument --max-connections: must be at least 1"),
        (["serve", "b", "--workers", "999"], "argument --workers: at most"),
        (["bench-serve", "b", "--clients", "1,x"], "argument --clients: '1,x': give comma-separated"),
        (["bench-serve", "b", "--seconds", "nan"], "argument --seconds: must be a number between"),
        (["bench-serve", "b", "--rss-requests", "-5"], "argument --rss-requests: must be 0 or more"),
    ],
)
def test_bad_numeric_options_are_usage_errors(argv, message, capsys):
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert "usage: pairbert" in err and message in err


def test_output_under_a_file_says_it_is_a_file(tiny_bundle, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "x.jsonl"
    assert run_cli(["predict", str(tiny_bundle), "-q", "q", "-a", "a", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--output {out}: {tmp_path / 'afile'} is a file, not a folder" in err
    assert err.startswith("usage: pairbert predict ")  # the command's usage line, not the top level's


def test_an_output_folder_the_system_refuses_is_exit_1_not_a_usage_error(
    tiny_bundle, tmp_path, monkeypatch, capsys
):
    import tempfile

    def refused(*args, **kwargs):  # what a read-only or full file system answers (root ignores modes)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    out = tmp_path / "x.jsonl"
    assert run_cli(["predict", str(tiny_bundle), "-q", "q", "-a", "a", "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert "usage:" not in err and f"--output {out}: cannot write in {tmp_path} (Permission denied)" in err


def test_serve_help_says_a_signal_is_a_graceful_exit_0():
    from pairbert.cli import build_parser

    parser = build_parser()
    serve = parser._subparsers._group_actions[0].choices["serve"]
    epilog = serve.format_help()
    assert "0    stopped by SIGTERM or Ctrl-C" in epilog and "130" not in epilog


# 3. empty input


def test_empty_input_files_say_so(tiny_bundle, tmp_path, capsys):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "header.csv").write_text("question,answer,label\n")
    for name in ("empty.jsonl", "header.csv"):
        assert run_cli(["predict", str(tiny_bundle), "--input", str(tmp_path / name)]) == 1
        assert (
            capsys.readouterr().err.strip() == f"pairbert predict: error: {tmp_path / name}: no pairs in file"
        )


def test_empty_stdin_is_an_empty_stream(tiny_bundle, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    assert run_cli(["predict", str(tiny_bundle), "--input", "-"]) == 0
    assert capsys.readouterr().out == ""
    help_text = " ".join(_predict_help().split())
    assert (
        "one without pairs is an error, exit 1" in help_text
        and "an empty one gives no output, exit 0" in help_text
    )


def _predict_help() -> str:
    parser = cli.build_parser()
    (action,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return action.choices["predict"].format_help()


# 4. and 5. duplicate header columns; invalid UTF-8 with its line, file or stdin


def test_duplicate_header_column_is_named(tiny_bundle, tmp_path, capsys):
    src = tmp_path / "dup.csv"
    src.write_text("question,question,answer\nq1,q2,a\n")
    assert run_cli(["predict", str(tiny_bundle), "--input", str(src)]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"pairbert predict: error: {src}, line 1, field 'question': column appears 2 times in the header"
    )


def test_invalid_utf8_names_its_line_in_files_and_stdin(tiny_bundle, tmp_path, monkeypatch, capsys):
    good = json.dumps({"question": "q", "answer": "a"}).encode()
    data = good + b"\n" + good + b"\n" + b'{"question": "caf\xe9", "answer": "a"}\n'
    src = tmp_path / "latin.jsonl"
    src.write_bytes(data)
    problem = "line 3: not UTF-8 text (invalid continuation byte at byte 18 of the line)"
    assert run_cli(["predict", str(tiny_bundle), "--input", str(src)]) == 1
    assert capsys.readouterr().err.strip() == f"pairbert predict: error: {src}, {problem}"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert run_cli(["predict", str(tiny_bundle), "--input", "-"]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == f"pairbert predict: error: <stdin>, {problem}"
    assert len(captured.out.splitlines()) == 2  # the lines before it were still answered


# 6. chunks are bounded by characters too; the output does not change


def test_chunks_stop_at_the_character_budget():
    pairs = [Pair("q" * n, "a") for n in (3, 3, 3, 10, 1, 1)]  # 4, 4, 4, 11, 2, 2 characters
    sizes = [[len(p.question) for p in c] for c in cli._chunks(iter(pairs), 512, max_chars=8)]
    assert sizes == [[3, 3], [3], [10], [1, 1]]  # a pair over the budget is a chunk of its own
    sizes = [[len(p.question) for p in c] for c in cli._chunks(iter(pairs), 2, max_chars=100)]
    assert sizes == [[3, 3], [3, 10], [1, 1]]


def test_chunks_hand_out_what_was_read_before_a_bad_line():
    def reader():
        yield Pair("q1", "a")
        yield Pair("q2", "a")
        raise PairFileError("f.jsonl", 3, None, "bad")

    chunks = cli._chunks(reader(), 512)
    assert [p.question for p in next(chunks)] == ["q1", "q2"]
    with pytest.raises(PairFileError, match="line 3"):
        next(chunks)


def test_a_small_character_budget_gives_the_same_output(tiny_bundle, tmp_path, monkeypatch, capsys):
    src = pairs_file(tmp_path, 20)
    argv = ["predict", str(tiny_bundle), "--input", str(src), "--variant", "fp32"]  # int8 varies by batch
    assert run_cli(argv) == 0
    expected = capsys.readouterr().out
    seen: list[int] = []
    original = cli._rows

    def counting_rows(clf, batch, batch_size):
        seen.append(len(batch))
        return original(clf, batch, batch_size)

    monkeypatch.setattr(cli, "CHUNK_CHARS", 120)
    monkeypatch.setattr(cli, "_rows", counting_rows)
    assert run_cli(argv) == 0
    assert capsys.readouterr().out == expected
    assert sum(seen) == 20 and len(seen) > 1 and max(seen) < 20


# 7. Ctrl-C with --output says what happened to the rows written so far


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a FIFO")
@pytest.mark.parametrize(
    "sig, code, how", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_ctrl_c_or_sigterm_names_the_partial_file(tiny_bundle, tmp_path, sig, code, how):
    fifo = tmp_path / "in.jsonl"
    os.mkfifo(fifo)
    out = tmp_path / "out.jsonl"
    # A runner started in the background (`cmd &` without job control) ignores SIGINT, and an ignored signal
    # stays ignored across exec: give the child the default disposition a terminal's Ctrl-C meets.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pairbert", "predict", str(tiny_bundle), "--input", str(fifo)]
            + ["--output", str(out), "--chunk", "1"],
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    with open(fifo, "w") as writer:  # kept open: the reader then waits for more lines
        for row in varied_pairs(2):
            writer.write(json.dumps({"question": row["question"], "answer": row["answer"]}) + "\n")
        writer.flush()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _rows_in_temporaries(tmp_path) < 2:
            time.sleep(0.05)
        assert _rows_in_temporaries(tmp_path) == 2
        proc.send_signal(sig)
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == code
    assert err.strip() == (
        f"pairbert predict: {how} (2 predictions before it are in {out}.partial; {out} not written)"
    )
    assert _rows_in_temporaries(tmp_path) == 0  # no temporary left behind
    assert len((tmp_path / "out.jsonl.partial").read_text().splitlines()) == 2
    assert not out.exists()


def _rows_in_temporaries(folder: Path) -> int:
    return sum(len(p.read_bytes().splitlines()) for p in folder.glob(".out.jsonl.*.tmp"))


# 8. evaluate: the data is checked before the model loads; a missing checkpoint is called missing


def test_evaluate_reads_the_data_first_and_names_a_missing_checkpoint(tiny_checkpoint, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "a"}\n')  # no label
    no_label = f"pairbert evaluate: error: {bad}, line 1, field 'label': missing (training and evaluation"
    done = pairbert("evaluate", str(tmp_path / "nowhere"), "--data", str(bad), "--no-baseline")
    assert done.returncode == 1
    assert done.stderr.strip() == no_label + " need labels)"
    good = tmp_path / "good.jsonl"
    good.write_text('{"question": "q", "answer": "a", "label": 1}\n')
    done = pairbert("evaluate", str(tmp_path / "nowhere"), "--data", str(good), "--no-baseline")
    assert done.returncode == 1
    assert (
        done.stderr.strip() == f"pairbert evaluate: error: {tmp_path / 'nowhere'}: no such checkpoint folder"
    )
    done = pairbert("evaluate", str(tiny_checkpoint), "--data", str(bad), "--no-baseline")
    assert done.returncode == 1 and "Loading weights" not in done.stderr  # no model load for a bad file
    assert done.stderr.strip().splitlines() == [no_label + " need labels)"]


def test_evaluate_names_a_missing_baseline_train_file(tiny_checkpoint, tmp_path, capsys):
    from pairbert.builtin_data import SMOKE

    nope = tmp_path / "nope"
    argv = ["evaluate", str(tiny_checkpoint), "--data", str(SMOKE), "--baseline-train", str(nope)]
    assert run_cli(argv) == 2
    assert capsys.readouterr().err.strip().endswith(f"--baseline-train {nope}: no such file")


def test_export_names_a_missing_checkpoint(tmp_path, capsys):
    assert run_cli(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b")]) == 1
    assert (
        capsys.readouterr().err.strip()
        == f"pairbert export: error: {tmp_path / 'nowhere'}: no such checkpoint folder"
    )
    assert not (tmp_path / "b").exists()


def test_export_int8_options_without_int8_are_a_usage_error(tiny_checkpoint, tmp_path, capsys):
    argv = ["export", str(tiny_checkpoint), "--out", str(tmp_path / "b"), "--variants", "fp32,optimized"]
    assert run_cli([*argv, "--int8-per-tensor", "--int8-weight-type", "QUInt8"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "pairbert export: error: --int8-weight-type, --int8-per-tensor: int8 options, but --variants has no "
        "int8; add it or drop them"
    )
    assert run_cli([*argv, "--no-int8-reduce-range"]) == 2
    assert "--[no-]int8-reduce-range: int8 options" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_export_skip_failed_leaves_out_a_variant_that_misses_its_gate(
    tiny_checkpoint, tmp_path, capsys, caplog, monkeypatch
):
    """The gate made impossible for openvino-fp32: named in --variants it is an error (exit 1, nothing of it
    written); with --skip-failed the rest is written and it is left out with a warning naming it."""
    pytest.importorskip("openvino")
    from pairbert.export import validation

    monkeypatch.setitem(
        validation.PARITY_RULES, "openvino-fp32", validation.ParityRule(max_abs_logit_diff=-1.0)
    )
    out = tmp_path / "b"
    argv = ["export", str(tiny_checkpoint), "--out", str(out), "--variants", "fp32,openvino-fp32"]
    assert run_cli(argv) == 1
    assert "variant 'openvino-fp32'" in capsys.readouterr().err
    assert "openvino-fp32" not in json.loads((out / "manifest.json").read_text())["variants"]
    caplog.clear()
    assert run_cli([*argv, "--skip-failed"]) == 0
    assert "not written (failed its gate" in caplog.text and "openvino-fp32: max |Δlogit|" in caplog.text
    assert set(json.loads((out / "manifest.json").read_text())["variants"]) == {"fp32"}


def test_evaluate_finds_a_checkpoint_whose_swap_was_interrupted(tiny_checkpoint, tmp_path):
    import shutil

    shutil.copytree(tiny_checkpoint, tmp_path / ".old-best")  # a kill between the renames left only this
    good = tmp_path / "good.jsonl"
    good.write_text('{"question": "q", "answer": "a", "label": 1}\n')
    done = pairbert("evaluate", str(tmp_path / "best"), "--data", str(good), "--no-baseline")
    assert done.returncode == 0, done.stderr
    (tmp_path / "afile").write_text("x")
    done = pairbert("evaluate", str(tmp_path / "afile"), "--data", str(good), "--no-baseline")
    assert (
        done.stderr.strip()
        == f"pairbert evaluate: error: {tmp_path / 'afile'}: is a file, not a checkpoint folder"
    )


def test_serve_slow_client_flags_reach_the_settings(monkeypatch):
    import pairbert.serving.server as server

    seen = {}
    monkeypatch.setattr(server, "serve", lambda settings: seen.setdefault("settings", settings))
    argv = ["serve", "b", "--body-timeout", "2.5", "--graceful-shutdown", "7", "--max-connections", "9"]
    assert run_cli([*argv, "--header-timeout", "1.5"]) in (0, None)
    s = seen["settings"]
    assert (s.header_timeout_s, s.body_timeout_s, s.graceful_shutdown_s, s.max_connections) == (
        1.5,
        2.5,
        7.0,
        9,
    )


def test_stdout_is_utf8_whatever_the_locale(tiny_bundle):
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "LC_ALL": "C"}
    done = subprocess.run(
        [sys.executable, "-m", "pairbert", "predict", str(tiny_bundle), "-q", "café ☕?", "-a", "naïve"],
        capture_output=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout.decode("utf-8"))
    assert row["question"] == "café ☕?" and row["answer"] == "naïve"


def test_a_closed_standard_output_is_a_clear_error_unless_output_goes_to_a_file(tiny_bundle, tmp_path):
    def closed_stdout(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "pairbert", "predict", str(tiny_bundle), "-q", "a", "-a", "b", *argv],
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            preexec_fn=lambda: os.close(1),
        )

    done = closed_stdout()
    assert done.returncode == 1
    assert done.stderr.strip() == "pairbert predict: error: standard output is closed"
    out = tmp_path / "out.jsonl"
    done = closed_stdout("--output", str(out))
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["label_name"] in ("match", "no_match")


def test_a_closed_standard_input_is_a_clear_error(tiny_bundle):
    done = subprocess.run(
        [sys.executable, "-m", "pairbert", "predict", str(tiny_bundle), "--input", "-"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.close(0),
    )
    assert done.returncode == 1
    assert done.stderr.strip() == "pairbert predict: error: <stdin>: standard input is closed"


def test_verbose_goes_before_or_after_the_command_and_a_missing_command_lists_them(capsys):
    parser = cli.build_parser()
    argv = ["b", "-q", "x", "-a", "y"]
    assert parser.parse_args(["predict", "-v", *argv]).verbose is True
    assert parser.parse_args(["-v", "predict", *argv]).verbose is True
    assert parser.parse_args(["predict", *argv]).verbose is False
    assert run_cli([]) == 2
    assert "required: {train,evaluate,export,predict,bench,serve,bench-serve}" in capsys.readouterr().err


LONG = "x" * 300  # one path component past the 255 bytes file systems allow: the system refuses it


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", LONG, "-q", "a", "-a", "b"],
        ["evaluate", LONG, "--data", "{smoke}"],
        ["export", LONG, "--out", "{tmp}/b"],
        ["predict", "{bundle}", "-q", "a", "-a", "b", "--output", LONG],
        ["train", "--output-dir", LONG, "--train", "{smoke}", "--epochs", "1"],
    ],
    ids=["predict-bundle", "evaluate-checkpoint", "export-checkpoint", "predict-output", "train-output-dir"],
)
def test_a_path_the_system_refuses_is_one_line(argv, tiny_bundle, tmp_path, capsys):
    from pairbert.builtin_data import SMOKE

    argv = [a.format(smoke=SMOKE, tmp=tmp_path, bundle=tiny_bundle) for a in argv]
    assert run_cli(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "File name too long" in err and LONG not in err, err


def test_output_keeps_the_replaced_files_permissions_and_writes_through_a_link(tiny_bundle, tmp_path):
    src = pairs_file(tmp_path, 3)
    private = tmp_path / "private.jsonl"
    private.write_text("old\n")
    private.chmod(0o600)
    assert run_cli(["predict", str(tiny_bundle), "--input", str(src), "--output", str(private)]) == 0
    assert (private.stat().st_mode & 0o777) == 0o600  # predictions hold the inputs' texts: stays private
    assert len(private.read_text().splitlines()) == 3
    real, link = tmp_path / "real.jsonl", tmp_path / "link.jsonl"
    real.write_text("old\n")
    link.symlink_to(real.name)
    assert run_cli(["predict", str(tiny_bundle), "--input", str(src), "--output", str(link)]) == 0
    assert link.is_symlink() and len(real.read_text().splitlines()) == 3


def test_output_never_destroys_the_input_through_its_partial_file_or_stdin(tiny_bundle, tmp_path, capsys):
    src = pairs_file(tmp_path, 3, name="a.jsonl.partial", tail='{"question": "q"}\n')
    before = src.read_bytes()
    argv = ["predict", str(tiny_bundle), "--input", str(src), "--output", str(tmp_path / "a.jsonl")]
    assert run_cli(argv) == 2
    assert "--output's .partial file" in capsys.readouterr().err and src.read_bytes() == before
    out = tmp_path / "o.jsonl"
    out.write_bytes(pairs_file(tmp_path, 2).read_bytes())
    with open(out, "rb") as stdin:
        done = pairbert("predict", str(tiny_bundle), "--input", "-", "--output", str(out), stdin=stdin)
    assert done.returncode == 2 and "is the file standard input reads" in done.stderr


def test_a_folder_in_the_way_of_the_partial_file_keeps_the_rows_in_the_temporary(
    tiny_bundle, tmp_path, capsys
):
    src = pairs_file(tmp_path, 3, tail='{"question": "q"}\n')
    out = tmp_path / "o.jsonl"
    (tmp_path / "o.jsonl.partial").mkdir()
    assert run_cli(["predict", str(tiny_bundle), "--input", str(src), "--output", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "3 predictions before it are in " in err and "not moved to" in err
    (kept,) = tmp_path.glob(".o.jsonl.*.tmp")
    assert len(kept.read_text().splitlines()) == 3 and not out.exists()


def test_openvino_variants_without_fp32_are_a_usage_error(tiny_checkpoint, tmp_path, capsys):
    argv = ["export", str(tiny_checkpoint), "--out", str(tmp_path / "b"), "--variants", "openvino-fp32"]
    assert run_cli(argv) == 2
    assert "OpenVINO variants compile the fp32 graph, so fp32 must be listed too" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
