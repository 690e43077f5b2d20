"""What a training run records, and what resume, evaluate and export make of it: files by absolute path (the
built-in data by name), every run setting checked on resume, stored values checked before use, and
checkpoints that could not be fed (a max_length past the positions, a tokenizer past the embeddings) or
trained (one label only) refused with one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import run_cli, settings_of, tiny_train_args, varied_pairs, write_jsonl


def test_a_run_records_absolute_paths_and_resumes_from_another_folder(
    tiny_tokenizer, tmp_path, monkeypatch, capsys
):
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    write_jsonl(here / "train.jsonl", varied_pairs(40, seed=1))
    write_jsonl(here / "val.jsonl", varied_pairs(16, seed=2))
    write_jsonl(elsewhere / "train.jsonl", varied_pairs(12, seed=3))  # same names, other pairs
    write_jsonl(elsewhere / "val.jsonl", varied_pairs(12, seed=4))
    shutil.copy(tiny_tokenizer, here / "tok.json")
    args = [
        "train",
        "--output-dir",
        str(tmp_path / "run"),
        "--source",
        "random:tiny",
        "--tokenizer",
        "tok.json",
    ]
    args += ["--train", "train.jsonl", "--validation", "val.jsonl", "--device", "cpu", "--quiet", "--no-plot"]
    monkeypatch.chdir(here)
    assert run_cli([*args, "--epochs", "2"]) == 0
    whole = json.loads((tmp_path / "run" / "last" / "trainer_state.json").read_text())["history"]
    recorded = settings_of(tmp_path / "run" / "last")["train_config"]
    assert recorded["train_file"] == str(here / "train.jsonl")
    assert recorded["tokenizer"] == str(here / "tok.json")
    # the same run stopped after its first epoch, then resumed from another folder
    monkeypatch.chdir(here)
    from pairbert.training.loop import TrainConfig, train

    first = TrainConfig(
        output_dir=str(tmp_path / "half"),
        source="random:tiny",
        tokenizer="tok.json",
        train_file="train.jsonl",
        validation_file="val.jsonl",
        device="cpu",
        epochs=2,
        stop_after_epochs=1,
        progress=False,
        plot=False,
    )
    train(first)
    monkeypatch.chdir(elsewhere)
    assert run_cli(["train", "--output-dir", str(tmp_path / "half"), "--resume", "--quiet", "--no-plot"]) == 0
    resumed = json.loads((tmp_path / "half" / "last" / "trainer_state.json").read_text())["history"]
    assert [h["step"] for h in resumed] == [h["step"] for h in whole]  # the 40 pairs, not elsewhere's 12


def test_the_builtin_data_is_recorded_by_name_and_found_wherever_pairbert_is():
    from pairbert.builtin_data import BUILTIN_TRAIN, local, portable

    assert portable(BUILTIN_TRAIN) == "builtin:train.jsonl"
    assert local("builtin:train.jsonl") == BUILTIN_TRAIN
    assert local("/old/clone/training/data/train.jsonl") == Path("/old/clone/training/data/train.jsonl")


def test_resume_checks_the_in_batch_weight_and_restores_frozen_embeddings(tiny_source, tmp_path, capsys):
    out = tmp_path / "run"
    write_jsonl(tmp_path / "train.jsonl", varied_pairs(24, seed=1))
    base = ["train", "--output-dir", str(out), "--source", str(tiny_source), "--device", "cpu", "--quiet"]
    base += ["--train", str(tmp_path / "train.jsonl"), "--no-plot"]
    from pairbert.training.loop import TrainConfig, train

    train(
        TrainConfig(
            output_dir=str(out),
            source=str(tiny_source),
            train_file=str(tmp_path / "train.jsonl"),
            validation_file=None,
            device="cpu",
            epochs=2,
            stop_after_epochs=1,
            freeze_embeddings=True,
            progress=False,
            plot=False,
        )
    )
    capsys.readouterr()
    resume = ["train", "--output-dir", str(out), "--resume", "--quiet", "--no-plot"]
    assert run_cli([*resume, "--contrastive", "0.25"]) == 1
    assert "contrastive is 0.25, the checkpoint's run used 1.0" in capsys.readouterr().err
    assert run_cli(resume) == 0, capsys.readouterr().err  # frozen embeddings restored, not refused
    assert settings_of(out / "last")["train_config"]["freeze_embeddings"] is True


@pytest.mark.parametrize(
    "edit, message",
    [
        (("train_config", "batch_size", -3), "train_config.batch_size is -3"),
        (("train_config", "epochs", "abc"), "train_config.epochs is 'abc'"),
        (("train_config", None, "x"), "train_config is str, not an object"),
        (("progress", "epoch", "1"), "trainer state's epoch is '1'"),
        (("progress", "history", 5), "trainer state's history is 5"),
    ],
)
def test_a_tampered_run_is_refused_on_resume_in_one_line(tiny_tokenizer, tmp_path, capsys, edit, message):
    out = tmp_path / "run"
    assert run_cli(tiny_train_args(out, tiny_tokenizer, "--epochs", "2", "--no-plot")) == 0
    where, key, value = edit
    if where == "progress":
        path = out / "last" / "trainer_state.json"
        data = json.loads(path.read_text())
        data[key] = value
    else:
        path = out / "last" / "pairbert.json"
        data = json.loads(path.read_text())
        if key is None:
            data["train_config"] = value
        else:
            data["train_config"][key] = value
    path.write_text(json.dumps(data))
    capsys.readouterr()
    status = run_cli(["train", "--output-dir", str(out), "--resume", "--quiet"])
    err = capsys.readouterr().err
    assert status == 1 and message in err and "Traceback" not in err, err


def test_checkpoints_that_could_not_be_fed_are_refused(tiny_checkpoint, tmp_path, capsys):
    from pairbert.training.checkpoint import CheckpointError, load_checkpoint

    long = tmp_path / "long"
    shutil.copytree(tiny_checkpoint, long)
    settings = settings_of(long)
    (long / "pairbert.json").write_text(json.dumps({**settings, "max_length": 1000}))
    with pytest.raises(CheckpointError, match="max_length 1000 exceeds the model's .* positions"):
        load_checkpoint(long)
    assert run_cli(["export", str(long), "--out", str(tmp_path / "b"), "--variants", "fp32"]) == 1
    assert "exceeds the model's" in capsys.readouterr().err and not (tmp_path / "b").exists()
    wide = tmp_path / "wide"
    shutil.copytree(tiny_checkpoint, wide)
    tokenizer = json.loads((wide / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab.update({f"extra{i}": len(vocab) + i for i in range(500)})
    (wide / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(CheckpointError, match="past the model's .* embeddings"):
        load_checkpoint(wide)


def test_resume_cannot_raise_max_length_past_the_positions(tiny_tokenizer, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(tiny_train_args(out, tiny_tokenizer, "--epochs", "1", "--no-plot")) == 0
    capsys.readouterr()
    argv = [
        "train",
        "--output-dir",
        str(out),
        "--resume",
        "--override",
        "--epochs",
        "2",
        "--max-length",
        "1000",
    ]
    assert run_cli([*argv, "--quiet"]) == 1
    assert "--max-length: max_length 1000 exceeds the model's" in capsys.readouterr().err


def test_a_training_file_of_one_label_is_refused(tiny_tokenizer, tmp_path, capsys):
    rows = [{**r, "label": 1} for r in varied_pairs(20, seed=1)]
    one = write_jsonl(tmp_path / "one.jsonl", rows)
    argv = tiny_train_args(tmp_path / "run", tiny_tokenizer, "--no-plot")
    argv[argv.index("--train") + 1] = str(one)
    assert run_cli(argv) == 1
    assert (
        f"{one}: every pair is labelled 1; a classifier needs pairs of both labels" in capsys.readouterr().err
    )


@pytest.mark.parametrize("extra", [["--pooling", "cls"], ["--single-order"]])
def test_towers_options_that_do_not_apply_are_usage_errors(
    tiny_tokenizer, tiny_source, tmp_path, capsys, extra
):
    argv = tiny_train_args(tmp_path / "run", tiny_tokenizer, "--pairing", "towers", *extra)
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert "does not apply to the towers pairing" in err and "Traceback" not in err
    # the default pairing, auto, is towers for a pretrained source too
    argv = ["train", "--output-dir", str(tmp_path / "run"), "--source", str(tiny_source), *extra]
    assert run_cli([*argv, "--device", "cpu", "--quiet"]) == 2
    assert "auto picks towers for a pretrained sentence encoder" in capsys.readouterr().err
    # and the notebook's cross recipe is what a random init gets: both options apply there
    assert run_cli(tiny_train_args(tmp_path / "cross", tiny_tokenizer, "--epochs", "1", *extra)) == 0


def test_resume_does_not_need_the_tokenizer_file_the_run_started_from(tiny_tokenizer, tmp_path, capsys):
    tokenizer = tmp_path / "tok.json"
    shutil.copy(tiny_tokenizer, tokenizer)
    out = tmp_path / "run"
    assert run_cli(tiny_train_args(out, tokenizer, "--epochs", "1", "--no-plot")) == 0
    tokenizer.unlink()  # moved away: resuming reads the checkpoint's own tokenizer.json
    argv = ["train", "--output-dir", str(out), "--resume", "--override", "--epochs", "2", "--quiet"]
    assert run_cli([*argv, "--no-plot"]) == 0, capsys.readouterr().err


def test_evaluate_never_tunes_the_baseline_on_the_evaluated_pairs(tiny_source, tmp_path, capsys):
    train_file = write_jsonl(tmp_path / "train.jsonl", varied_pairs(24, seed=1))
    out = tmp_path / "run"
    argv = ["train", "--output-dir", str(out), "--source", str(tiny_source), "--device", "cpu", "--quiet"]
    assert run_cli([*argv, "--train", str(train_file), "--epochs", "1", "--no-plot"]) == 0
    val = write_jsonl(tmp_path / "val.jsonl", varied_pairs(12, seed=2))
    copy = tmp_path / "copy.jsonl"
    shutil.copy(val, copy)
    capsys.readouterr()
    evaluate = ["evaluate", str(out / "best"), "--json"]
    assert run_cli([*evaluate, "--data", str(val), "--baseline-train", str(copy)]) == 2  # a copy of it
    assert "must not be the evaluated file (or a copy of it)" in capsys.readouterr().err
    assert run_cli([*evaluate, "--data", str(train_file)]) == 0  # the run's own training split
    report = json.loads(capsys.readouterr().out)
    assert "the evaluated file is the training split" in report["baseline"]["skipped"]
    assert run_cli([*evaluate, "--data", str(val)]) == 0
    assert json.loads(capsys.readouterr().out)["baseline"]["tuned_on"] == str(train_file)


def test_a_checkpoint_with_non_finite_weights_is_refused_by_name(tiny_checkpoint, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from pairbert.training.checkpoint import CheckpointError, load_checkpoint

    broken = tmp_path / "nan"
    shutil.copytree(tiny_checkpoint, broken)
    weights = load_file(broken / "model.safetensors")
    name = next(n for n in weights if n.endswith("classifier.weight"))
    weights[name][0, 0] = float("nan")
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=rf"model.safetensors: {name} holds NaN or infinite values"):
        load_checkpoint(broken)
    assert torch.isfinite(load_file(tiny_checkpoint / "model.safetensors")[name]).all()  # the original loads
    load_checkpoint(tiny_checkpoint)
