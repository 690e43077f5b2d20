"""Issue 13: each defect the hostile probe found, reproduced (each test failed before its fix)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import WORDS, edit_manifest, run_cli, settings_of, tiny_config, tiny_train_args, varied_pairs

from pairbert.runtime import BundleError, PairClassifier, PredictorError, atomic_dir
from pairbert.runtime.bundle import read_manifest, read_verified
from pairbert.runtime.errors import PairbertError
from pairbert.runtime.external_weights import ExternalWeights, ExternalWeightsError
from pairbert.runtime.pair_files import MAX_LINE_CHARS, PairFileError, read_pairs
from pairbert.runtime.tokenization import PairEncoder, TokenizerError, longest_first


def copy_bundle(bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    return copy


# 1. --resume must never run code from a checkpoint


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_resume_refuses_a_trainer_state_that_runs_code(tmp_path, tiny_tokenizer, capsys):
    import torch

    out = tmp_path / "run"
    assert run_cli(tiny_train_args(out, tiny_tokenizer, "--epochs", "2")) == 0
    marker = tmp_path / "pwned"
    torch.save(
        {"optimizer": {}, "scheduler": {}, "evil": _Payload(str(marker))}, out / "last" / "trainer_state.pt"
    )
    assert run_cli(tiny_train_args(out, tiny_tokenizer, "--epochs", "2", "--resume")) != 0
    assert not marker.exists()
    err = capsys.readouterr().err
    assert "refused to load" in err and "system" in err  # what it would have called, named
    assert "weights_only" not in err  # never torch's advice to load it with weights_only=False


# 2. memory is bounded by the token budget; results unchanged


def _random_text(rng: random.Random, max_length: int) -> str:
    n = rng.choice(
        [
            0,
            1,
            3,
            max_length // 2,
            max_length,
            3 * max_length,
            9 * max_length,
            rng.randint(1, 20 * max_length),
        ]
    )
    seps = [" ", "  ", "\n", "! ", ", ", "\t", "?"]
    tail = rng.choice(["", "?", "x" * rng.randint(0, 40), "é" * rng.randint(0, 5)])
    return "".join(rng.choice(WORDS) + rng.choice(seps) for _ in range(n)) + tail or "a"


@pytest.mark.parametrize("max_length", [8, 9, 16, 33])
def test_bounded_tokenization_gives_the_ids_of_the_full_texts(tiny_tokenizer, max_length):
    from tokenizers import Tokenizer

    encoder = PairEncoder.from_file(tiny_tokenizer, max_length)
    reference = Tokenizer.from_file(str(tiny_tokenizer))
    reference.enable_truncation(max_length, strategy="longest_first")
    rng = random.Random(max_length)
    pairs = [(_random_text(rng, max_length), _random_text(rng, max_length)) for _ in range(120)]
    pairs += [("word " * 10 * max_length, "word " * 10 * max_length)]  # equal long sides: the tie rule
    qa, aq = encoder.tokenize([q for q, _ in pairs], [a for _, a in pairs])
    assert sum(len(q) > 8 * max_length or len(a) > 8 * max_length for q, a in pairs) > 30  # the long path ran
    for (q, a), got_qa, got_aq in zip(pairs, qa, aq, strict=True):
        for got, want in ((got_qa, reference.encode(q, a)), (got_aq, reference.encode(a, q))):
            assert got.ids == want.ids and got.type_ids == want.type_ids, (len(q), len(a))


def test_longest_first_rule_matches_tokenizers():
    assert longest_first(3, 4, 10) == (3, 4)
    assert longest_first(200, 2, 10) == (8, 2)
    assert longest_first(200, 300, 9) == (4, 5)  # the longer side gets the odd token
    assert longest_first(300, 200, 9) == (5, 4)
    assert longest_first(200, 200, 9) == (4, 5)  # a tie: the second side


PEAK_RSS_SCRIPT = """
import resource, sys
from pairbert.runtime.tokenization import PairEncoder
encoder = PairEncoder.from_file(sys.argv[1], 128)
encoder.encode(["warm up"], ["the tokenizer"])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
text = "what is the capital of france? " * 33334  # 1,000,020 characters
arrays = encoder.encode([text, "short"], [text, "pair"])
assert arrays["qa_input_ids"].shape == (2, 128), arrays["qa_input_ids"].shape
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) // 1024)
"""
PEAK_RSS_BOUND_MB = 200  # measured ~12 MB (MiniLM tokenizer); the old path was OOM-killed at ~24 GB


def test_peak_rss_of_a_million_character_pair_is_bounded(tiny_tokenizer):
    import resource

    def limit():  # the unfixed tokenizer would take the machine down: cap the child's address space
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_SCRIPT, str(tiny_tokenizer)],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) < PEAK_RSS_BOUND_MB


def test_long_pair_through_the_predictor(tiny_bundle):
    clf = PairClassifier.load(tiny_bundle, variant="fp32")
    t = "word " * 8000
    result = clf.predict([(t, t), ("who wrote hamlet?", t)])
    assert result.probabilities.shape == (2, 2) and np.isfinite(result.probabilities).all()


def test_huge_jsonl_line_is_refused_with_its_line(tmp_path):
    path = tmp_path / "big.jsonl"
    with open(path, "w") as f:
        f.write(json.dumps({"question": "q", "answer": "a", "label": 1}) + "\n")
        f.write(json.dumps({"question": "q", "answer": "x" * (MAX_LINE_CHARS + 10), "label": 1}) + "\n")
    with pytest.raises(PairFileError, match=r"big.jsonl, line 2: line longer than"):
        read_pairs(path)


# 3. predict never destroys a file


def _input_file(tmp_path: Path, n: int = 6, bad_line: int | None = None) -> Path:
    lines = [json.dumps({"question": r["question"], "answer": r["answer"]}) for r in varied_pairs(n)]
    if bad_line is not None:
        lines[bad_line - 1] = '{"question": "q\\ud800", "answer": "a"}'
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    return src


def test_predict_output_equal_to_input_is_refused(tiny_bundle, tmp_path, capsys):
    src = _input_file(tmp_path)
    before = src.read_text()
    assert run_cli(["predict", str(tiny_bundle), "--input", str(src), "--output", str(src)]) != 0
    assert src.read_text() == before
    assert "is the --input file" in capsys.readouterr().err


def test_predict_with_a_missing_input_keeps_the_existing_output(tiny_bundle, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n")
    typo = str(tmp_path / "typo.jsonl")
    assert run_cli(["predict", str(tiny_bundle), "--input", typo, "--output", str(out)]) != 0
    assert out.read_text() == "precious\n"
    assert "cannot open" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["missing-folder", "folder", "proc"])
def test_predict_unwritable_outputs_are_clear_errors(tiny_bundle, tmp_path, capsys, where):
    target = {
        "missing-folder": tmp_path / "nope" / "out.jsonl",
        "folder": tmp_path,
        "proc": Path("/proc/version"),
    }[where]
    if where == "proc" and not target.exists():
        pytest.skip("no /proc here")
    assert run_cli(["predict", str(tiny_bundle), "-q", "q", "-a", "a", "--output", str(target)]) != 0
    err = capsys.readouterr().err
    assert "--output" in err and "Traceback" not in err


# 8. a bad line (lone surrogate) mid-file: named by its file line; everything before it kept


def test_predict_bad_line_is_named_and_earlier_predictions_are_kept(tiny_bundle, tmp_path, capsys):
    src = _input_file(tmp_path, n=9, bad_line=6)
    out = tmp_path / "out.jsonl"
    out.write_text("previous run\n")
    assert (
        run_cli(["predict", str(tiny_bundle), "--input", str(src), "--output", str(out), "--chunk", "2"]) != 0
    )
    err = capsys.readouterr().err
    assert "in.jsonl, line 6, field 'question': not valid Unicode" in err
    assert out.read_text() == "previous run\n"  # the old output is untouched
    partial = [json.loads(line) for line in (tmp_path / "out.jsonl.partial").read_text().splitlines()]
    assert [r["question"] for r in partial] == [p["question"] for p in varied_pairs(9)[:5]]


def test_predict_success_replaces_the_output_atomically(tiny_bundle, tmp_path):
    src = _input_file(tmp_path, n=5)
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    assert (
        run_cli(["predict", str(tiny_bundle), "--input", str(src), "--output", str(out), "--chunk", "2"]) == 0
    )
    assert len(out.read_text().splitlines()) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]  # no temporary left


# 4. resume takes its settings from the checkpoint


def test_resume_continues_the_run_it_resumes(tmp_path, tiny_tokenizer, capsys):
    out = tmp_path / "run"
    custom = ("--epochs", "3", "--batch-size", "2", "--lr", "0.002", "--seed", "7")
    assert run_cli(tiny_train_args(out, tiny_tokenizer, *custom)) == 0
    last = out / "last"
    (last / "pairbert.json").write_text(json.dumps({**settings_of(last), "epoch": 2}))  # as if stopped early
    state = json.loads((last / "trainer_state.json").read_text())
    (last / "trainer_state.json").write_text(
        json.dumps({**state, "epoch": 2, "history": state["history"][:2]})
    )
    # resume as the README shows: only the output folder; nothing may fall back to the defaults
    assert run_cli(["train", "--output-dir", str(out), "--resume", "--quiet", "--device", "cpu"]) == 0, (
        capsys.readouterr().err
    )
    config = settings_of(out / "last")["train_config"]
    assert (
        config["source"],
        config["batch_size"],
        config["learning_rate"],
        config["seed"],
        config["epochs"],
    ) == ("random:tiny", 2, 0.002, 7, 3)
    assert config["train_file"] == "builtin:smoke.jsonl"  # the built-in data by name (builtin_data.portable)

    assert run_cli(["train", "--output-dir", str(out), "--resume", "--quiet", "--lr", "0.5"]) != 0
    err = capsys.readouterr().err
    assert "learning_rate is 0.5, the checkpoint's run used 0.002" in err and "--override" in err
    assert run_cli(["train", "--output-dir", str(out), "--resume", "--quiet", "--head-lr", "0.01"]) != 0
    assert "head_learning_rate" in capsys.readouterr().err
    again = ["train", "--output-dir", str(out), "--resume", "--quiet", "--head-lr", "0.01", "--override"]
    assert run_cli(again) != 0
    err = capsys.readouterr().err
    assert "optimizer state does not fit" in err and "Traceback" not in err


# 5. what is verified is what is loaded


def test_model_swapped_after_the_checksum_is_never_served(tiny_bundle, tmp_path, monkeypatch):
    import onnxruntime

    bundle = copy_bundle(tiny_bundle, tmp_path)
    pairs = [(r["question"], r["answer"]) for r in varied_pairs(20, seed=3)]
    expected = PairClassifier.load(bundle, variant="fp32").predict(pairs).probabilities
    real = onnxruntime.InferenceSession

    def swap_then_open(source, *args, **kwargs):  # another process swaps the files between check and use
        shutil.copyfile(bundle / "model.int8.onnx", bundle / "model.fp32.onnx")
        shutil.copyfile(bundle / "model.int8.onnx.data", bundle / "model.fp32.onnx.data")  # the weights too
        return real(source, *args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", swap_then_open)
    got = PairClassifier.load(bundle, variant="fp32").predict(pairs).probabilities
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("variant", ["fp32", "openvino-fp32"])
def test_weights_the_manifest_does_not_list_are_never_looked_up(tiny_bundle, tmp_path, monkeypatch, variant):
    """A graph naming a weight file its manifest does not list (as a crafted bundle could): neither ONNX
    Runtime nor OpenVINO reads it, from the bundle folder or the current directory; the load fails."""
    bundle = copy_bundle(tiny_bundle, tmp_path)

    def unlist(d):
        for name in ("fp32", "openvino-fp32"):
            d["variants"][name]["external_data"], d["variants"][name]["external_sha256"] = [], []

    edit_manifest(bundle, unlist)
    here = tmp_path / "cwd"
    here.mkdir()
    (here / "model.fp32.onnx.data").write_bytes(bytes((bundle / "model.fp32.onnx.data").stat().st_size))
    monkeypatch.chdir(here)
    with pytest.raises(BundleError, match=r"model\.fp32\.onnx: .*cannot load the graph"):
        PairClassifier.load(bundle, variant=variant, threads=1)
    with pytest.raises(ExternalWeightsError, match="not a plain file name"):  # never reaches a runtime
        ExternalWeights(b"", {"../model.fp32.onnx.data": b""})


def test_read_verified_returns_the_bytes_it_checked(tiny_bundle):
    manifest = read_manifest(tiny_bundle)
    data = read_verified(tiny_bundle, manifest.tokenizer_file, manifest.tokenizer_sha256)
    assert data == (tiny_bundle / "tokenizer.json").read_bytes()
    with pytest.raises(BundleError, match="checksum mismatch"):
        read_verified(tiny_bundle, manifest.tokenizer_file, "0" * 64)


# 6. manifest names stay inside the bundle; the manifest itself is checksummed


@pytest.mark.parametrize(
    "field,value",
    [
        ("file", "../outside.onnx"),
        ("file", "/etc/passwd"),
        ("file", "sub/model.onnx"),
        ("file", "..\\x.onnx"),
        ("tokenizer_file", "../tokenizer.json"),
        ("tokenizer_file", "/etc/passwd"),
        ("external_data", ["../weights.data"]),
    ],
)
def test_manifest_file_names_cannot_escape_the_bundle(tiny_bundle, tmp_path, field, value):
    bundle = copy_bundle(tiny_bundle, tmp_path)

    def change(d):
        if field == "tokenizer_file":
            d["tokenizer_file"] = value
        else:
            d["variants"]["fp32"][field] = value
            if field == "external_data":
                d["variants"]["fp32"]["external_sha256"] = ["a" * 64]

    edit_manifest(bundle, change)
    with pytest.raises(BundleError, match="plain file name"):
        PairClassifier.load(bundle, variant="fp32")


def test_symlink_out_of_the_bundle_is_refused(tiny_bundle, tmp_path):
    bundle = copy_bundle(tiny_bundle, tmp_path)
    outside = tmp_path / "outside.onnx"
    shutil.move(bundle / "model.fp32.onnx", outside)
    (bundle / "model.fp32.onnx").symlink_to(outside)
    with pytest.raises(BundleError, match="outside the bundle"):
        PairClassifier.load(bundle, variant="fp32")


def test_external_checksums_must_cover_every_external_file(tiny_bundle, tmp_path):
    bundle = copy_bundle(tiny_bundle, tmp_path)
    edit_manifest(
        bundle,
        lambda d: d["variants"]["fp32"].update(
            external_data=["a.data", "b.data"], external_sha256=["a" * 64]
        ),
    )
    with pytest.raises(BundleError, match="same number of files"):
        read_manifest(bundle)


def test_swapped_label_names_are_detected(tiny_bundle, tmp_path):
    bundle = copy_bundle(tiny_bundle, tmp_path)
    edit_manifest(bundle, lambda d: d.update(labels=list(reversed(d["labels"]))), redigest=False)
    with pytest.raises(BundleError, match="manifest_sha256"):
        PairClassifier.load(bundle)


# 10. malformed manifests: one BundleError naming the field, at load


@pytest.mark.parametrize(
    "field,change",
    [
        ("labels", lambda d: d.update(labels=[])),
        ("labels", lambda d: d.update(labels=["only"])),
        ("labels", lambda d: d.update(labels=["a", "b", "c"])),
        ("labels", lambda d: d.update(labels=["a", "a"])),
        ("max_length", lambda d: d.update(max_length=-5)),
        ("max_length", lambda d: d.update(max_length=0)),
        ("max_length", lambda d: d.update(max_length=7)),
        ("max_length", lambda d: d.update(max_length=True)),
        ("max_length", lambda d: d.update(max_length=1e30)),
        ("max_length", lambda d: d.update(max_length=10**6)),
        ("variants", lambda d: d.update(variants=[1, 2])),
        ("sha256", lambda d: d["variants"]["fp32"].update(sha256=12345)),
        ("tokenizer_file", lambda d: d.update(tokenizer_file=None)),
        ("passed_parity", lambda d: d["variants"]["int8"].update(passed_parity="false")),
        ("size_bytes", lambda d: d["variants"]["fp32"].update(size_bytes="big")),
        ("contract", lambda d: d.update(contract={"inputs": []})),
        ("feed", lambda d: d.update(feed="half")),
        ("feed", lambda d: d.update(feed=["pair"])),
    ],
)
def test_malformed_manifest_fields_are_named(tiny_bundle, tmp_path, field, change):
    bundle = copy_bundle(tiny_bundle, tmp_path)
    edit_manifest(bundle, change)
    with pytest.raises(BundleError, match=f"field '{field}'"):
        PairClassifier.load(bundle)


def test_a_manifest_without_a_feed_feeds_whole_pairs(tiny_bundle, tmp_path):
    """Bundles written before the field existed were fed whole pairs, whatever their pairing."""
    bundle = copy_bundle(tiny_bundle, tmp_path)
    edit_manifest(bundle, lambda d: d.pop("feed"))
    with PairClassifier.load(bundle, variant="fp32") as clf:
        assert clf.manifest.feed == "pair" and clf.encoder.feed == "pair"
        assert clf.predict([("a question", "an answer")]).probabilities.shape == (1, 2)


def test_a_tokenizer_json_that_is_not_one_is_a_clear_error(tiny_bundle, tmp_path):
    import hashlib

    bundle = copy_bundle(tiny_bundle, tmp_path)
    (bundle / "tokenizer.json").write_text("{}")
    edit_manifest(bundle, lambda d: d.update(tokenizer_sha256=hashlib.sha256(b"{}").hexdigest()))
    with pytest.raises(TokenizerError, match="tokenizer.json: not a tokenizers tokenizer.json"):
        PairClassifier.load(bundle)


def test_format_1_bundles_are_refused_with_a_reason(tiny_bundle, tmp_path):
    bundle = copy_bundle(tiny_bundle, tmp_path)
    edit_manifest(bundle, lambda d: (d.update(format_version=1), d.pop("manifest_sha256")), redigest=False)
    with pytest.raises(BundleError, match="format_version 1 .written before manifests were checksummed"):
        read_manifest(bundle)


# 7. NaN never passes the parity gate; a diverged model is never saved


def test_nan_logits_fail_the_parity_gate():
    from pairbert.export.validation import PARITY_RULES, StageReport, gate

    reference = np.array([[0.1, 0.9], [0.8, 0.2]], np.float32)
    for variant in PARITY_RULES:
        candidate = np.full_like(reference, np.nan)
        _, fails = gate(variant, reference, candidate, StageReport())
        assert fails and "non-finite" in fails[0], variant
    _, fails = gate("fp32", np.full_like(reference, np.nan), np.full_like(reference, np.nan), StageReport())
    assert fails


def test_diverged_training_saves_no_best_checkpoint(tmp_path, tiny_tokenizer):
    from pairbert.training.loop import TrainingError, train

    cfg = tiny_config(
        tmp_path / "run", tiny_tokenizer, epochs=3, learning_rate=float("inf"), warmup_ratio=0.0
    )
    with pytest.raises(TrainingError, match="non-finite"):
        train(cfg)
    assert not (tmp_path / "run" / "best").exists() and not (tmp_path / "run" / "last").exists()


# 9. crash-safe swaps


def _folder(path: Path, content: str) -> Path:
    path.mkdir(parents=True)
    (path / "data.txt").write_text(content)
    return path


class _Killed(BaseException):
    pass


@pytest.mark.parametrize("kill_after", [0, 1, 2, 3])
def test_a_kill_between_any_two_swap_steps_leaves_a_complete_folder(tmp_path, monkeypatch, kill_after):
    target = _folder(tmp_path / "last", "old")
    work = atomic_dir.temp_dir(target)
    (work / "data.txt").write_text("new")
    calls = {"n": 0}
    real_replace = os.replace

    def replace(src, dst):
        if calls["n"] == kill_after:
            raise _Killed
        calls["n"] += 1
        real_replace(src, dst)

    monkeypatch.setattr(atomic_dir.os, "replace", replace)
    with pytest.raises(_Killed):
        atomic_dir.swap_into_place(work, target)
    monkeypatch.setattr(atomic_dir.os, "replace", real_replace)
    found = atomic_dir.locate(target)  # readers find a complete copy without renaming anything
    assert (found / "data.txt").read_text() in ("old", "new")
    expected = "old" if kill_after == 0 else "new"  # once .new-last exists, recovery completes the swap
    assert (atomic_dir.recover(target) / "data.txt").read_text() == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"] or kill_after == 0


def test_a_kill_while_deleting_the_old_folder_loses_nothing(tmp_path, monkeypatch):
    target = _folder(tmp_path / "last", "old")
    work = atomic_dir.temp_dir(target)
    (work / "data.txt").write_text("new")

    def killed(path, ignore_errors=False):
        raise _Killed

    monkeypatch.setattr(atomic_dir.shutil, "rmtree", killed)
    with pytest.raises(_Killed):
        atomic_dir.swap_into_place(work, target)
    monkeypatch.undo()
    assert (atomic_dir.recover(target) / "data.txt").read_text() == "new"
    assert not (tmp_path / ".old-last").exists()


def test_stale_temporary_folders_are_cleaned(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = int(done.stdout)
    target = _folder(tmp_path / "last", "current")
    stale = _folder(tmp_path / f".tmp-last-{dead}-123", "half written")
    trash = _folder(tmp_path / f".trash-old-last-{dead}-5", "half deleted")
    mine = atomic_dir.temp_dir(target)  # a live writer's folder stays
    atomic_dir.recover(target)
    assert not stale.exists() and not trash.exists() and mine.exists()


def test_resume_after_a_kill_between_the_renames_of_last(tmp_path, tiny_tokenizer, capsys):
    out = tmp_path / "run"
    assert run_cli(tiny_train_args(out, tiny_tokenizer, "--epochs", "4")) == 0
    last = out / "last"
    (last / "pairbert.json").write_text(
        json.dumps({**settings_of(last), "epoch": 1})
    )  # as if stopped after 1
    state = json.loads((last / "trainer_state.json").read_text())
    (last / "trainer_state.json").write_text(
        json.dumps({**state, "epoch": 1, "history": state["history"][:1]})
    )
    last.rename(out / ".old-last")  # killed between `last → .old-last` and `.tmp → last`
    _folder(out / ".tmp-last-999999999-1", "half written")
    assert run_cli(["train", "--output-dir", str(out), "--resume", "--quiet", "--device", "cpu"]) == 0, (
        capsys.readouterr().err
    )
    assert settings_of(last)["epoch"] == 4
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_a_bundle_left_as_old_by_a_killed_export_still_loads(tiny_bundle, tmp_path):
    bundle = copy_bundle(tiny_bundle, tmp_path)
    bundle.rename(tmp_path / ".old-bundle")
    clf = PairClassifier.load(bundle, variant="fp32")
    assert len(clf.predict([("q", "a")])) == 1


# 11. API misuse is a PredictorError


def test_api_misuse_is_a_predictor_error(tiny_bundle):
    clf = PairClassifier.load(tiny_bundle, variant="fp32")
    for call in (
        lambda: clf.predict(5),
        lambda: clf.predict_qa(None, None),
        lambda: clf.predict_qa(["q"], 3),
        lambda: clf.predict([("q", "a")], batch_size=True),
        lambda: clf.predict([("q", "a")], batch_size=8.0),
        lambda: PairClassifier.load(tiny_bundle, threads=1.5),
    ):
        with pytest.raises(PredictorError):
            call()
    assert len(clf.predict([("q", "a")], batch_size=np.int64(8))) == 1
    assert (
        len(PairClassifier.load(tiny_bundle, variant="fp32", threads=np.int64(1)).predict([("q", "a")])) == 1
    )


# 12. CLI: bad train options are one-line errors


@pytest.mark.parametrize(
    "extra,message",
    [
        (("--batch-size", "0"), "at least 1"),
        (("--max-length", "4"), "--max-length must be in"),
        (("--max-length", "1000"), "exceeds the 160 positions"),
        (("--lr", "nan"), "--lr must be a positive"),
        (("--lr", "-1"), "--lr must be a positive"),
        (("--epochs", "0"), "at least 1"),
        (("--warmup-ratio", "2"), "--warmup-ratio must be in"),
        (("--distill", "nan"), "--distill must be in [0, 1]"),
        (("--distill", "2"), "--distill must be in [0, 1]"),
        (("--contrastive", "-1"), "--contrastive must be a finite number"),
        (("--max-grad-norm", "inf"), "--max-grad-norm must be a positive"),
        (("--teacher-negatives", "-3"), "--teacher-negatives must be 0 or more"),
    ],
)
def test_cli_train_rejects_bad_settings(tmp_path, tiny_tokenizer, capsys, extra, message):
    assert run_cli(tiny_train_args(tmp_path / "run", tiny_tokenizer, *extra)) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_cli_train_output_dir_that_is_a_file_and_a_bad_tokenizer(tmp_path, tiny_tokenizer, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert run_cli(tiny_train_args(blocker / "run", tiny_tokenizer)) != 0
    assert "is a file, not a folder" in capsys.readouterr().err
    bogus = tmp_path / "tokenizer.json"
    bogus.write_text('{"not": "a tokenizer"}')
    assert run_cli(tiny_train_args(tmp_path / "run", bogus)) != 0
    assert "not a tokenizers tokenizer.json" in capsys.readouterr().err


# 13. fp32 results do not depend on how pairs are batched


def test_fp32_probabilities_do_not_depend_on_batch_composition(tiny_bundle):
    clf = PairClassifier.load(tiny_bundle, variant="fp32")
    pairs = [(r["question"], r["answer"]) for r in varied_pairs(40, seed=11)]
    alone = np.concatenate([clf.predict([p]).probabilities for p in pairs])
    for batch_size in (3, 32):
        batched = clf.predict(pairs, batch_size=batch_size).probabilities
        assert np.abs(batched - alone).max() <= 1e-5
        assert (batched.argmax(-1) == alone.argmax(-1)).all()


# 14. small inconsistencies


def test_bom_is_accepted_in_jsonl_as_in_csv(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_text(
        "\ufeff" + json.dumps({"question": "q", "answer": "a", "label": 1}) + "\n", encoding="utf-8"
    )
    assert read_pairs(path)[0].question == "q"


def test_long_csv_fields_are_read_and_over_long_ones_named(tmp_path):
    path = tmp_path / "long.csv"
    path.write_text("question,answer,label\nq," + "w " * 100_000 + ",1\n")  # 200,000 characters
    assert len(read_pairs(path)[0].answer) == 200_000
    path.write_text("question,answer,label\nq,a,1\nq," + "w" * (MAX_LINE_CHARS + 1) + ",1\n")
    with pytest.raises(PairFileError, match=r"long.csv, line 3: a field longer than"):
        read_pairs(path)


def test_every_issue_error_is_a_pairbert_error():
    assert issubclass(PairFileError, PairbertError) and issubclass(TokenizerError, PairbertError)
    assert issubclass(BundleError, PairbertError) and issubclass(PredictorError, PairbertError)


def test_a_checkpoint_json_with_a_huge_integer_is_one_clear_error(tmp_path):
    """An integer past Python's 4,300-digit limit is a ValueError that is not a JSONDecodeError: it must read
    as the file's error, not a traceback."""
    from pairbert.training.checkpoint import CheckpointError, read_settings

    (tmp_path / "pairbert.json").write_text('{"max_length": 1' + "0" * 5000 + "}")
    with pytest.raises(CheckpointError, match=r"pairbert.json: unreadable \(.*integer string conversion"):
        read_settings(tmp_path)
