"""Training: the notebook's behaviour, save/load, weight-decay groups, resume, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import helpers
import pytest
import torch

from pairbert.builtin_data import SMOKE
from pairbert.runtime.pair_files import read_pairs
from pairbert.training.checkpoint import load_checkpoint
from pairbert.training.loop import TrainConfig, TrainingError, evaluate, train, weight_decay_groups
from pairbert.training.weights import build_model


def tiny_config(tmp_path, tokenizer, **overrides) -> TrainConfig:
    return helpers.tiny_config(tmp_path / "run", tokenizer, **{**helpers.FAST, "epochs": 60, **overrides})


def test_five_examples_are_learned(tmp_path, tiny_tokenizer):
    result = train(tiny_config(tmp_path, tiny_tokenizer))
    last = result["history"][-1]
    assert last["train_loss"] < 0.05
    for kept in ("best", "last"):
        ckpt = load_checkpoint(tmp_path / "run" / kept)
        metrics = evaluate(ckpt.model, ckpt.encoder, read_pairs(SMOKE))
        assert metrics["accuracy"] == 1.0, kept
    assert metrics["loss"] < 0.05  # the last checkpoint: trained to near-zero loss


def test_save_load_gives_identical_logits(tmp_path, tiny_tokenizer):
    train(tiny_config(tmp_path, tiny_tokenizer, epochs=2))
    ckpt = load_checkpoint(tmp_path / "run" / "last")
    pairs = read_pairs(SMOKE)
    from pairbert.training.batches import encode_batch

    batch = encode_batch(ckpt.encoder, pairs, with_labels=False)
    with torch.no_grad():
        a = ckpt.model(**batch).logits
        again = load_checkpoint(tmp_path / "run" / "last")
        b = again.model(**batch).logits
    assert torch.equal(a, b)
    # and the checkpoint carries its recipe
    settings = json.loads((tmp_path / "run" / "last" / "pairbert.json").read_text())
    assert settings["max_length"] == 128 and settings["epoch"] == 2
    assert settings["train_config"]["source"] == "random:tiny"


def test_weight_decay_groups_exclude_bias_and_layernorm():
    model = build_model("random:tiny", vocab_size=100)
    decay, no_decay = weight_decay_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    not_decayed = {names[id(p)] for p in no_decay["params"]}
    assert not any(n.endswith("bias") for n in decayed)
    assert not any("LayerNorm" in n for n in decayed)
    assert "classifier.weight" in decayed
    assert "qa_encoder.embeddings.word_embeddings.weight" in decayed
    assert "qa_encoder.encoder.layer.0.attention.output.LayerNorm.weight" in not_decayed
    assert "classifier.bias" in not_decayed
    assert decayed | not_decayed == set(names.values()) and not decayed & not_decayed


def test_resume_matches_uninterrupted_run(tmp_path, tiny_tokenizer):
    full = tiny_config(tmp_path / "full", tiny_tokenizer, epochs=4, learning_rate=1e-3)
    train(full)
    part = tiny_config(tmp_path / "part", tiny_tokenizer, epochs=4, learning_rate=1e-3, stop_after_epochs=2)
    first = train(part)
    assert len(first["history"]) == 2
    part.stop_after_epochs, part.resume = None, True
    resumed = train(part)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3, 4]
    a = load_checkpoint(tmp_path / "full" / "run" / "last").model.state_dict()
    b = load_checkpoint(tmp_path / "part" / "run" / "last").model.state_dict()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, tiny_tokenizer):
    from pairbert.training.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="run/last: no such checkpoint folder"):
        train(tiny_config(tmp_path / "run", tiny_tokenizer, resume=True))


def test_non_finite_loss_stops_with_clear_error(tmp_path, tiny_tokenizer):
    with pytest.raises(TrainingError, match="non-finite (loss|weights)"):
        train(tiny_config(tmp_path, tiny_tokenizer, learning_rate=float("inf"), epochs=3))


def test_interrupted_swap_leaves_a_loadable_checkpoint(tmp_path, tiny_tokenizer):
    train(tiny_config(tmp_path, tiny_tokenizer, epochs=1))
    run = tmp_path / "run"
    (run / "last").rename(run / ".old-last")  # a crash between the two renames
    assert load_checkpoint(run / "last").settings["epoch"] == 1


def test_cli_train_and_evaluate(tmp_path, tiny_tokenizer):
    out = tmp_path / "cli"
    cmd = [
        sys.executable,
        "-m",
        "pairbert",
        *helpers.tiny_train_args(out, tiny_tokenizer, "--epochs", "2", "--batch-size", "5"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["epochs_run"] == 2
    done = subprocess.run(
        [sys.executable, "-m", "pairbert", "evaluate", str(out / "best"), "--data", str(SMOKE)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "accuracy" in done.stdout and "true 1" in done.stdout


def test_cli_reports_bad_data_without_traceback(tmp_path, tiny_tokenizer):
    bad = tmp_path / "bad.csv"
    bad.write_text("question,answer,label\nq1,a1,1\nq2,a2,maybe\n")
    cmd = [
        sys.executable,
        "-m",
        "pairbert",
        "train",
        "--output-dir",
        str(tmp_path / "o"),
        "--source",
        "random:tiny",
        "--tokenizer",
        str(tiny_tokenizer),
        "--train",
        str(bad),
        "--quiet",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 1  # a data error; 2 is for usage errors
    assert "bad.csv, line 3, field 'label'" in done.stderr
    assert "Traceback" not in done.stderr


def test_local_bert_folder_initialises_both_branches(tmp_path, tiny_tokenizer):
    from transformers import BertConfig, BertModel

    from pairbert.training.weights import RANDOM_CONFIGS, tokenizer_file_for

    folder = tmp_path / "local-bert"
    bert = BertModel(BertConfig(vocab_size=140, **RANDOM_CONFIGS["tiny"]))
    bert.save_pretrained(folder)
    (folder / "tokenizer.json").write_bytes(tiny_tokenizer.read_bytes())
    model = build_model(str(folder))
    reference = bert.state_dict()
    for branch in (model.qa_encoder, model.aq_encoder):
        for name, tensor in branch.state_dict().items():
            assert torch.equal(tensor, reference[name]), name
    assert tokenizer_file_for(str(folder)) == folder / "tokenizer.json"


def test_random_config_sources_and_bad_sources(tmp_path):
    from pairbert.training.weights import WeightSourceError

    cfg = tmp_path / "config.json"
    cfg.write_text(
        json.dumps(
            {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
        )
    )
    model = build_model(f"random:{cfg}", vocab_size=50)
    assert model.qa_encoder.config.hidden_size == 16 and model.classifier.in_features == 32
    with pytest.raises(WeightSourceError, match="unknown random config"):
        build_model("random:huge")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightSourceError, match="no config.json"):
        build_model(str(tmp_path / "empty"))


def test_training_without_torch_names_the_extra():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "try:\n    import pairbert.training\nexcept ImportError as e:\n    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "pip install 'pairbert[train]'" in done.stdout


def test_hub_name_without_network_is_a_clear_error(monkeypatch):
    import huggingface_hub.constants

    from pairbert.training.weights import WeightSourceError, tokenizer_file_for

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    with pytest.raises(WeightSourceError, match="cannot fetch tokenizer.json for 'no-such-org/no-such-bert'"):
        tokenizer_file_for("no-such-org/no-such-bert")
