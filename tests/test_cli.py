"""The `pairbert` command's surface: version, help, defaults, choices, exit codes, output fields."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest
from helpers import varied_pairs, write_jsonl

import pairbert
from pairbert import cli
from pairbert.runtime.variants import VARIANTS


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"pairbert {pairbert.__version__}"


@pytest.mark.parametrize("command", ["train", "evaluate", "export", "predict", "bench"])
def test_every_flag_has_help_and_shows_its_default(command):
    parser = subparsers()[command]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{command} {action.dest} has no help"
    text = parser.format_help()
    assert "exit codes:" in text and "1    data or runtime error" in text and "2    usage error" in text
    if command == "predict":
        assert "(default: 512)" in " ".join(text.split())  # --chunk
    if command == "export":
        assert "fp32,optimized,int8,fp16" in text


def test_exit_codes_are_documented_in_the_module_and_top_level_help():
    assert "Exit codes: 0 success; 1 a data or runtime error" in cli.__doc__
    assert "exit codes:" in cli.build_parser().format_help()


def test_train_flags_match_the_train_config_defaults():
    from pairbert.training.loop import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    covered = set(cli.TRAIN_OPTIONS.values()) | cli.TRAIN_CONFIG_NOT_ON_CLI
    assert covered == fields, f"TrainConfig fields without a flag: {sorted(fields - covered)}"
    args = subparsers()["train"].parse_args([])
    config = TrainConfig()
    for dest, field in cli.TRAIN_OPTIONS.items():
        if field in ("train_file", "validation_file"):  # None on the command line = the built-in split
            assert getattr(args, dest) is None
            continue
        assert getattr(args, dest) == getattr(config, field), (dest, field)
    assert args.quiet is (not config.progress)


def test_variant_and_device_are_choices_from_the_one_list():
    predict = subparsers()["predict"]
    choices = {a.dest: a.choices for a in predict._actions}
    assert tuple(choices["variant"]) == ("auto", *VARIANTS)
    assert tuple(choices["device"]) == cli.DEVICES
    assert subparsers()["export"].parse_args(["ckpt", "--out", "b"]).variants is None  # all, failures skipped
    assert cli.variant_list("int8, fp16") == ("int8", "fp16")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "b", "--variant", "int4"], "invalid choice: 'int4'"),
        (["predict", "b", "--device", "tpu"], "invalid choice: 'tpu'"),
        (["export", "c", "--out", "b", "--variants", "fp32,int4"], "choose a comma-separated subset"),
        (["predict", "b", "--threads", "0"], "must be at least 1"),
        (["train", "--epochs", "many"], "invalid positive_int value"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_conflicting_options_exit_2_and_data_errors_exit_1(tiny_bundle, tmp_path, capsys):
    assert cli.main(["predict", str(tiny_bundle), "-q", "only a question"]) == 2
    assert "give both -q and -a" in capsys.readouterr().err
    assert cli.main(["predict", str(tmp_path / "nowhere"), "-q", "q", "-a", "a"]) == 1
    err = capsys.readouterr().err
    assert "no such bundle folder" in err and "Traceback" not in err


def test_predict_fields_are_unambiguous(tiny_bundle, capsys):
    assert (
        cli.main(["predict", str(tiny_bundle), "-q", "who wrote hamlet?", "-a", "shakespeare wrote hamlet."])
        == 0
    )
    row = json.loads(capsys.readouterr().out)
    assert set(row) == {"question", "answer", "label", "label_name", "match_probability", "probabilities"}
    assert set(row["probabilities"]) == {"no_match", "match"}
    assert row["match_probability"] == row["probabilities"]["match"]
    assert abs(sum(row["probabilities"].values()) - 1) < 1e-5
    assert row["label_name"] == ["no_match", "match"][row["label"]]
    assert row["label_name"] == max(row["probabilities"], key=row["probabilities"].get)


def test_evaluate_json(tiny_checkpoint, tmp_path, capsys):
    data = write_jsonl(tmp_path / "val.jsonl", varied_pairs(12, seed=3))
    assert cli.main(["evaluate", str(tiny_checkpoint), "--data", str(data), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["count"] == 12
    assert {"accuracy", "f1", "precision", "recall", "confusion_matrix"} <= set(metrics)
    assert sum(map(sum, metrics["confusion_matrix"])) == 12
