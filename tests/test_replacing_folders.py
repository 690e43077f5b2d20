"""What export and training may replace (only their own kind of folder), and checkpoints that do not hold
what their config describes (refused with one line, never loaded half-random)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import tiny_train_args
from safetensors.torch import load_file, save_file

from pairbert.builtin_data import SMOKE
from pairbert.cli import main
from pairbert.training.checkpoint import CheckpointError, load_checkpoint


def run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def _copy(checkpoint: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(checkpoint, tmp_path / "run" / "last"))


@pytest.mark.parametrize(
    "where", ["own-folder", "the-checkpoint", "its-run-folder", "a-file", "cwd", "web-extension"]
)
def test_export_never_replaces_what_is_not_a_bundle(tiny_checkpoint, tmp_path, capsys, monkeypatch, where):
    checkpoint = _copy(tiny_checkpoint, tmp_path)
    user = tmp_path / "thesis"
    user.mkdir()
    (user / "thesis.txt").write_text("precious")
    (tmp_path / "notes.txt").write_text("precious")
    out = {
        "own-folder": user,
        "the-checkpoint": checkpoint,
        "its-run-folder": checkpoint.parent,
        "a-file": tmp_path / "notes.txt",
        "cwd": Path("."),
        "web-extension": user,  # a manifest.json that is not a bundle's
    }[where]
    if where == "web-extension":
        (user / "manifest.json").write_text('{"name": "my extension", "version": "1.0"}')
    monkeypatch.chdir(user)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert run_cli(["export", str(checkpoint), "--out", str(out), "--variants", "fp32"]) == 1
    err = capsys.readouterr().err
    assert "refusing to replace it" in err and err.count("\n") == 1
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing moved


def test_export_fills_an_empty_folder_and_replaces_a_bundle(tiny_checkpoint, tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    for _ in range(2):  # empty folder, then the bundle it became
        assert run_cli(["export", str(tiny_checkpoint), "--out", str(out), "--variants", "fp32"]) == 0
        assert (out / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no temporary or old folder left


def test_export_under_a_file_is_a_clear_error(tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "bundle"
    assert run_cli(["export", str(tiny_checkpoint), "--out", str(out), "--variants", "fp32"]) == 1
    assert "a file is in the way" in capsys.readouterr().err


def test_export_with_a_one_pair_validation_file(tiny_checkpoint, tmp_path, capsys, caplog):
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"question": "how long to boil an egg", "answer": "six minutes"}) + "\n")
    out = tmp_path / "bundle"
    argv = ["export", str(tiny_checkpoint), "--out", str(out), "--variants", "fp32", "--validation", str(one)]
    with caplog.at_level("WARNING", logger="pairbert.export.bundle_writer"):
        assert run_cli(argv) == 0
    assert f"the parity gate runs on 1 pair from {one}: label agreement on so few says little" in caplog.text
    assert "parity on 1 pair from" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["variants"]["fp32"]["passed_parity"] is True


def test_training_never_replaces_a_best_folder_that_is_not_a_checkpoint(tmp_path, tiny_tokenizer, capsys):
    out = tmp_path / "run"
    (out / "best").mkdir(parents=True)
    (out / "best" / "thesis.txt").write_text("precious")
    assert run_cli(tiny_train_args(out, tiny_tokenizer, "--epochs", "1")) == 1
    assert "refusing to replace it" in capsys.readouterr().err
    assert (out / "best" / "thesis.txt").read_text() == "precious"
    assert not (out / "last").exists()  # refused before any training


def _drop_one_weight(checkpoint: Path) -> str:
    tensors = load_file(checkpoint / "model.safetensors")
    name = next(n for n in tensors if n.endswith("attention.self.query.weight"))
    del tensors[name]
    save_file(tensors, checkpoint / "model.safetensors", metadata={"format": "pt"})
    return name


def _add_a_weight(checkpoint: Path) -> str:
    tensors = load_file(checkpoint / "model.safetensors")
    tensors["stranger.weight"] = torch.zeros(2)
    save_file(tensors, checkpoint / "model.safetensors", metadata={"format": "pt"})
    return "stranger.weight"


def _damage(checkpoint: Path, how: str) -> str:
    """Damage the copy `how`; returns text the refusal must contain."""
    config, weights = checkpoint / "config.json", checkpoint / "model.safetensors"
    if how == "missing-weight":
        return _drop_one_weight(checkpoint)
    if how == "unexpected-weight":
        return _add_a_weight(checkpoint)
    if how == "config-not-object":
        config.write_text("[]")
        return "config.json: expected a JSON object"
    if how == "config-truncated":
        config.write_text(config.read_text()[:50])
        return "config.json: unreadable"
    if how == "config-missing":
        config.unlink()
        return "config.json: missing"
    if how == "weights-truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
        return "cannot load the model"
    if how == "weights-zeroed":
        weights.write_bytes(bytes(len(weights.read_bytes())))
        return "cannot load the model"
    if how == "three-labels":
        settings = checkpoint / "pairbert.json"
        data = json.loads(settings.read_text())
        settings.write_text(json.dumps({**data, "labels": ["a", "b", "c"]}))
        return "pairbert.json: field 'labels' has 3 names but the model's head has 2"
    if how == "repeated-label":  # held to the manifest's rule, so export cannot write a bundle none can load
        settings = checkpoint / "pairbert.json"
        data = json.loads(settings.read_text())
        settings.write_text(json.dumps({**data, "labels": ["match", "match"]}))
        return "pairbert.json: field 'labels' must be a list of at least 2 distinct non-empty names"
    if how == "pickle-instead":
        weights.unlink()
        (checkpoint / "pytorch_model.bin").write_bytes(b"not read")
        return "model.safetensors missing"
    raise AssertionError(how)


DAMAGES = [
    "repeated-label",
    "missing-weight",
    "unexpected-weight",
    "config-not-object",
    "config-truncated",
    "config-missing",
    "weights-truncated",
    "weights-zeroed",
    "pickle-instead",
    "three-labels",
]


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_checkpoint_is_refused_with_one_line(tiny_checkpoint, tmp_path, how):
    checkpoint = _copy(tiny_checkpoint, tmp_path)
    expected = _damage(checkpoint, how)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(checkpoint)
    message = str(caught.value)
    assert expected in message and "\n" not in message


@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_a_checkpoint_missing_a_weight_is_never_evaluated_or_exported(
    tiny_checkpoint, tmp_path, capsys, command
):
    checkpoint = _copy(tiny_checkpoint, tmp_path)
    name = _drop_one_weight(checkpoint)
    argv = {
        "evaluate": ["evaluate", str(checkpoint), "--data", str(SMOKE), "--no-baseline"],
        "export": ["export", str(checkpoint), "--out", str(tmp_path / "bundle"), "--variants", "fp32"],
    }[command]
    assert run_cli(argv) == 1
    err = capsys.readouterr().err
    assert f"missing {name}" in err and "Traceback" not in err
    assert not (tmp_path / "bundle").exists()


def test_a_missing_checkpoint_folder_is_named_as_missing(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        load_checkpoint(tmp_path / "nowhere")


def test_a_symlinked_bundle_path_leaves_no_trash_behind(tiny_bundle, tmp_path):
    from pairbert.runtime import atomic_dir

    real = Path(shutil.copytree(tiny_bundle, tmp_path / "real"))
    link = tmp_path / "bundle"
    link.symlink_to(real)
    work = atomic_dir.temp_dir(link)
    (work / "manifest.json").write_text((real / "manifest.json").read_text())
    atomic_dir.swap_into_place(work, link, "manifest.json", "pairbert bundle")
    assert link.is_dir() and not link.is_symlink()  # the link was replaced, what it pointed to kept
    assert (real / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "real"]  # no .trash-* link left


def test_an_export_where_no_asked_variant_passes_leaves_the_bundle_alone(
    tiny_checkpoint, tiny_bundle, tmp_path, monkeypatch
):
    from pairbert.export import validation
    from pairbert.export.bundle_writer import ExportSettings, export_bundle
    from pairbert.export.validation import ParityError

    out = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setitem(validation.PARITY_RULES, "optimized", validation.ParityRule(max_abs_logit_diff=-1.0))
    with pytest.raises(ParityError, match="no variant asked for passed its gate; nothing written"):
        export_bundle(tiny_checkpoint, out, ExportSettings(variants=("optimized",)), echo=None)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_missing_validation_file_is_named_not_replaced(tiny_checkpoint, tmp_path, capsys):
    argv = ["export", str(tiny_checkpoint), "--out", str(tmp_path / "b"), "--variants", "fp32"]
    assert run_cli([*argv, "--validation", str(tmp_path / "typo.jsonl")]) == 1
    err = capsys.readouterr().err
    assert "--validation" in err and "typo.jsonl: no such file" in err
    assert "Loading weights" not in err and not (tmp_path / "b").exists()
