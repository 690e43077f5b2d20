"""Model quality machinery: the zero-shot baseline (tuned on train only), pooling options through export,
distillation, early stopping, the training curve, and the built-in/held-out data builder."""

from __future__ import annotations

import csv
import difflib
import importlib.util
import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    edit_manifest,
    name_graph_axis,
    tiny_config,
    train_tiny_towers,
    train_tiny_varied,
    varied_pairs,
    write_jsonl,
)

from pairbert.builtin_data import SMOKE
from pairbert.runtime.pair_files import Pair, read_pairs
from pairbert.runtime.predictor import PairClassifier
from pairbert.training.baseline import SentenceEmbedder, baseline_for, evaluate_baseline, tune_threshold
from pairbert.training.batches import encode_batch
from pairbert.training.checkpoint import load_checkpoint
from pairbert.training.loop import TrainConfig, should_stop, train

DATA = Path(__file__).resolve().parents[1] / "training" / "data"


def flipped(rows: list[dict]) -> list[dict]:
    return [{**r, "label": 1 - r["label"]} for r in rows]


def test_tune_threshold_maximises_accuracy_on_its_own_labels():
    assert tune_threshold([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == pytest.approx(0.5)
    cut = tune_threshold([0.3, 0.3, 0.6], [0, 1, 1])  # ties are never split
    assert cut < 0.3 or cut > 0.3
    with pytest.raises(ValueError):
        tune_threshold([], [])


def test_baseline_threshold_never_sees_the_evaluated_labels(tmp_path, tiny_source):
    train_file = write_jsonl(tmp_path / "train.jsonl", varied_pairs(40, seed=1))
    rows = varied_pairs(30, seed=2)
    evaluated = write_jsonl(tmp_path / "eval.jsonl", rows)
    inverted = write_jsonl(tmp_path / "inverted.jsonl", flipped(rows))

    embedder, fit = baseline_for(str(tiny_source), train_file)
    a = evaluate_baseline(embedder, fit, read_pairs(evaluated))
    b = evaluate_baseline(embedder, fit, read_pairs(inverted))
    assert a["threshold"] == b["threshold"] == fit.threshold
    assert a["tuned_on"] == str(train_file)
    assert a["accuracy"] + b["accuracy"] == pytest.approx(1.0)  # same predictions, opposite labels

    # the threshold is the training split's best cut: refitting on train reproduces it exactly
    scores = embedder.cosines(read_pairs(train_file))
    assert fit.threshold == tune_threshold(scores.tolist(), [p.label for p in read_pairs(train_file)])


def test_sentence_embeddings_are_normalised_mean_pools(tiny_source):
    embedder = SentenceEmbedder.from_source(str(tiny_source))
    vectors = embedder.embed(["what is the capital of france", "paris", "paris"])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors[1], vectors[2])


def test_random_source_has_no_baseline():
    from pairbert.training.weights import WeightSourceError

    with pytest.raises(WeightSourceError, match="random init"):
        SentenceEmbedder.from_source("random:tiny")


def test_cli_evaluate_prints_baseline_tuned_on_the_training_file(tmp_path, tiny_source):
    train_file = write_jsonl(tmp_path / "train.jsonl", varied_pairs(40, seed=1))
    rows = varied_pairs(30, seed=2)
    evaluated = write_jsonl(tmp_path / "eval.jsonl", rows)
    inverted = write_jsonl(tmp_path / "inverted.jsonl", flipped(rows))
    out = tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pairbert",
            "train",
            "--output-dir",
            str(out),
            "--source",
            str(tiny_source),
            "--train",
            str(train_file),
            "--validation",
            str(evaluated),
            "--epochs",
            "1",
            "--batch-size",
            "8",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "epoch 1/1: train loss" in done.stdout + done.stderr  # epoch metrics without -v
    reports = []
    for data in (evaluated, inverted):
        done = subprocess.run(
            [sys.executable, "-m", "pairbert", "evaluate", str(out / "best"), "--data", str(data), "--json"],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        reports.append(json.loads(done.stdout))
    a, b = (r["baseline"] for r in reports)
    assert a["tuned_on"] == str(train_file) and a["threshold"] == b["threshold"]
    assert a["accuracy"] + b["accuracy"] == pytest.approx(1.0)
    assert reports[0]["accuracy"] + reports[1]["accuracy"] == pytest.approx(1.0)
    text = subprocess.run(
        [sys.executable, "-m", "pairbert", "evaluate", str(out / "best"), "--data", str(evaluated)],
        capture_output=True,
        text=True,
    ).stdout
    assert "baseline" in text and f"{a['threshold']:.4f}" in text
    same = subprocess.run(
        [
            sys.executable,
            "-m",
            "pairbert",
            "evaluate",
            str(out / "best"),
            "--data",
            str(evaluated),
            "--baseline-train",
            str(evaluated),
        ],
        capture_output=True,
        text=True,
    )
    assert same.returncode == 2 and "must not be the evaluated file" in same.stderr


@pytest.mark.parametrize("pooling", ["mean", "cls+mean"])
def test_pooling_round_trips_through_save_load_export(tmp_path, tiny_tokenizer, pooling):
    from pairbert.export.bundle_writer import ExportSettings, export_bundle
    from pairbert.runtime.bundle import read_manifest
    from pairbert.runtime.predictor import PairClassifier
    from pairbert.training.batches import encode_batch

    train_tiny_varied(tmp_path, tiny_tokenizer, epochs=3, pooling=pooling)
    validation = tmp_path / "val.jsonl"
    ckpt = load_checkpoint(tmp_path / "run" / "last")
    assert ckpt.model.config.pooling == pooling
    assert json.loads((tmp_path / "run" / "last" / "config.json").read_text())["pooling"] == pooling
    pairs = read_pairs(validation)
    with torch.no_grad():
        logits = ckpt.model(**encode_batch(ckpt.encoder, pairs, with_labels=False)).logits.numpy()
    export_bundle(
        tmp_path / "run" / "last",
        tmp_path / "bundle",
        ExportSettings(variants=("fp32", "optimized")),
        echo=None,
    )
    manifest = read_manifest(tmp_path / "bundle")
    clf = PairClassifier.load(tmp_path / "bundle", variant="fp32")
    probs = clf.predict([(p.question, p.answer) for p in pairs]).probabilities
    assert np.abs(probs - torch.softmax(torch.from_numpy(logits), -1).numpy()).max() < 1e-4
    assert manifest.variants["fp32"].parity["max_abs_logit_diff"] <= 1e-4


def test_cls_pooling_is_still_the_notebooks_pooler(tiny_tokenizer):
    from pairbert.training.weights import build_model

    model = build_model("random:tiny", vocab_size=200).eval()
    assert model.config.pooling == "cls" and model.classifier.in_features == 2 * 32
    both = build_model("random:tiny", vocab_size=200, pooling="cls+mean")
    assert both.classifier.in_features == 4 * 32
    with pytest.raises(ValueError, match="pooling"):
        build_model("random:tiny", vocab_size=200, pooling="max")


def test_distillation_and_teacher_negatives_train_and_are_deterministic(tmp_path, tiny_source):
    train_file = write_jsonl(tmp_path / "train.jsonl", varied_pairs(20, seed=3))
    results = []
    for name in ("a", "b"):
        cfg = TrainConfig(
            output_dir=str(tmp_path / name),
            source=str(tiny_source),
            train_file=str(train_file),
            validation_file=str(SMOKE),
            epochs=2,
            batch_size=8,
            progress=False,
            distill=0.5,
            teacher_negatives=2,
            plot=False,
        )
        results.append(train(cfg)["history"])
    assert results[0] == [{**h, "elapsed_s": results[0][i]["elapsed_s"]} for i, h in enumerate(results[1])]
    assert all(np.isfinite(h["train_loss"]) for h in results[0])


def test_early_stopping_rule():
    history = [{"val_accuracy": a} for a in (0.7, 0.8, 0.8, 0.79)]
    assert should_stop(history, 2) and not should_stop(history, 3) and not should_stop(history, None)
    assert not should_stop(history[:2], 1)


def test_training_curve_png_beside_metrics(tmp_path, tiny_tokenizer):
    train(tiny_config(tmp_path / "run", tiny_tokenizer, epochs=2))
    png = tmp_path / "run" / "training_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]) == 2


def test_builtin_and_heldout_files_are_what_the_builder_writes():
    spec = importlib.util.spec_from_file_location("build_builtin", DATA / "build_builtin.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    train_rows, validation = mod.builtin_split()
    assert (DATA / "train.jsonl").read_text() == mod.render(train_rows)
    assert (DATA / "validation.jsonl").read_text() == mod.render(validation)
    heldout = mod.build_heldout(mod.load_bank(mod.HELDOUT_BANK))
    assert mod.HELDOUT_FILE.read_text() == mod.render(heldout)
    assert 0.45 <= sum(r["label"] for r in heldout) / len(heldout) <= 0.55 and len(heldout) >= 150
    bank_questions = {r["question"] for r in mod.load_bank()}
    assert len(bank_questions) == len(mod.load_bank()) >= 700  # no duplicated question
    assert not bank_questions & {r["question"] for r in heldout}  # the held-out file is unseen
    with open(mod.HELDOUT_BANK, encoding="utf-8", newline="") as f:
        assert all(row["answer"] for row in csv.DictReader(f, delimiter="\t"))


def test_casual_chat_dev_file_is_built_and_unseen():
    """The dev proxy for the hidden set: built by the builder, half positives, negatives are other questions'
    answers of the same file, and none of its questions is in the bank or in the held-out file."""
    spec = importlib.util.spec_from_file_location("build_builtin", DATA / "build_builtin.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    dev = mod.build_dev(mod.load_bank(mod.DEV_BANK))
    assert mod.DEV_FILE.read_text() == mod.render(dev)
    assert len(dev) >= 200 and sum(r["label"] for r in dev) * 2 == len(dev)
    true_answer = {r["question"]: r["answer"] for r in dev if r["label"] == 1}
    assert all(r["answer"] != true_answer[r["question"]] for r in dev if r["label"] == 0)
    assert {r["answer"] for r in dev if r["label"] == 0} <= set(true_answer.values())
    seen = {r["question"].lower() for r in mod.load_bank()}
    seen |= {r["question"].lower() for r in mod.load_bank(mod.HELDOUT_BANK)}
    assert not seen & {q.lower() for q in true_answer}


def test_towers_untrained_is_the_calibrated_baseline(tmp_path, tiny_source):
    """pairing='towers' with the head initialised from the baseline's logistic fit reproduces the baseline."""
    from pairbert.training.baseline import Teacher
    from pairbert.training.batches import encode_batch
    from pairbert.training.loop import _teacher
    from pairbert.training.weights import build_model

    train_file = write_jsonl(tmp_path / "train.jsonl", varied_pairs(40, seed=1))
    cfg = TrainConfig(source=str(tiny_source), train_file=str(train_file))
    teacher = _teacher(cfg)
    assert isinstance(teacher, Teacher)
    model = build_model(str(tiny_source), pooling="mean", pairing="towers").eval()
    model.init_head_from_cosine(*teacher.fit.platt)
    pairs = read_pairs(write_jsonl(tmp_path / "eval.jsonl", varied_pairs(20, seed=5)))
    from pairbert.runtime.tokenization import PairEncoder

    encoder = PairEncoder.from_file(tiny_source / "tokenizer.json", 128)
    with torch.no_grad():
        probs = torch.softmax(model(**encode_batch(encoder, pairs, with_labels=False)).logits, -1)[:, 1]
    assert np.allclose(probs.numpy(), teacher.probabilities(pairs), atol=1e-5)


def test_towers_export_keeps_the_contract_and_fusions(tmp_path, tiny_tokenizer, capsys):
    from pairbert.export.bundle_writer import ExportSettings, export_bundle
    from pairbert.runtime.bundle import read_manifest

    export_bundle(
        train_tiny_towers(tmp_path, tiny_tokenizer),
        tmp_path / "bundle",
        ExportSettings(variants=("fp32", "optimized")),
        echo=None,
    )
    manifest = read_manifest(tmp_path / "bundle")
    assert manifest.variants["fp32"].parity["max_abs_logit_diff"] <= 1e-4
    assert manifest.variants["optimized"].parity["max_abs_logit_diff"] <= 1e-4
    # the runtime feeds each branch only its own segment; the answers are torch's on the WHOLE pair
    assert manifest.feed == "first-segment"
    ckpt = load_checkpoint(tmp_path / "run" / "last")
    assert ckpt.encoder.feed == "first-segment"
    rows = varied_pairs(30, seed=3) + [{"question": "why " * 90, "answer": "because " * 70, "label": 0}]
    pairs = read_pairs(write_jsonl(tmp_path / "eval.jsonl", rows))
    whole = ckpt.encoder.with_feed("pair")
    with torch.no_grad():
        reference = torch.softmax(ckpt.model(**encode_batch(whole, pairs, with_labels=False)).logits, -1)
    # each order has its own sequence axis, so the runtime pads each to its own length
    from pairbert.runtime.contract import orders_padded_apart

    assert orders_padded_apart(manifest.contract)
    for variant in ("fp32", "optimized"):
        with PairClassifier.load(tmp_path / "bundle", variant=variant) as clf:
            assert clf.encoder.feed == "first-segment" and clf.encoder.apart
            feed = clf.encoder.encode(["a b c d e f g h i j k"], ["yes"])
            assert feed["qa_input_ids"].shape[1] > feed["aq_input_ids"].shape[1]
            got = clf.predict([(p.question, p.answer) for p in pairs], batch_size=8).probabilities
        assert np.abs(got - reference.numpy()).max() < 1e-4, variant
    from pairbert.benchmarks.feed_ab import main as feed_ab

    feed_ab([str(tmp_path / "bundle"), "--threads", "1", "--rounds", "1", "--out", str(tmp_path / "ab.json")])
    ab = json.loads((tmp_path / "ab.json").read_text())
    assert ab["labels_agree"] == 1.0 and ab["max_abs_prob_diff"] < 1e-4
    assert set(ab["best"]) == {"pair", "first-segment, one length", "first-segment"}
    assert "labels agree 100.0 %" in capsys.readouterr().out
    # CUDA graph replay pads every input to one bucket as long as the longer order (checked with the CPU
    # session: the padding, not the GPU, is under test)
    from pairbert.runtime.cuda_graphs import graph_shape
    from pairbert.runtime.shapes import pad_feed

    with PairClassifier.load(tmp_path / "bundle", variant="optimized") as clf:
        feed = clf.encoder.encode(["ok?", "why"], ["because " * 20, "no"])
        assert feed["aq_input_ids"].shape[1] > feed["qa_input_ids"].shape[1]
        batch, length = graph_shape(feed)
        assert length >= feed["aq_input_ids"].shape[1]
        np.testing.assert_allclose(
            clf.session.run(pad_feed(feed, batch, length))[:2], clf.session.run(feed), atol=1e-5
        )
    # a graph naming one sequence axis for both orders (as exported before) is fed both orders at one length:
    # ONNX Runtime plans its buffers on that promise; a manifest that says otherwise is refused at load
    from pairbert.runtime.bundle import BundleError
    from pairbert.runtime.contract import BATCH_AXIS, SEQUENCE_AXIS

    name_graph_axis(tmp_path / "bundle", "optimized", 1, SEQUENCE_AXIS)
    with pytest.raises(BundleError, match="its own sequence axis but the graph's inputs have"):
        PairClassifier.load(tmp_path / "bundle", variant="optimized")

    def one_axis(d):
        for t in d["contract"]["inputs"]:
            t["axes"] = [BATCH_AXIS, SEQUENCE_AXIS]
        d.pop("answer_check")  # such bundles were written before the answer check (its batch is fed apart)

    edit_manifest(tmp_path / "bundle", one_axis)
    with PairClassifier.load(tmp_path / "bundle", variant="optimized") as clf:
        assert not clf.encoder.apart
        feed = clf.encoder.encode(["a b c d e f g h i j k"], ["yes"])
        assert feed["qa_input_ids"].shape == feed["aq_input_ids"].shape
        got = clf.predict([(p.question, p.answer) for p in pairs], batch_size=8).probabilities
    assert np.abs(got - reference.numpy()).max() < 1e-4


def test_first_segment_feed_gives_the_towers_the_same_logits_for_less_work(tiny_source):
    """Towers attend only within each order's first segment, so cutting the rest changes nothing."""
    from pairbert.runtime.tokenization import PairEncoder
    from pairbert.training.batches import encode_batch
    from pairbert.training.weights import build_model

    model = build_model(str(tiny_source), pooling="mean", pairing="towers").eval()
    pairs = [
        Pair("how long is a marathon", "42.195 kilometres, a bit over 26 miles, most people take four hours"),
        Pair("what is the capital of australia and why not sydney", "canberra"),
        Pair("ok?", "yes"),
    ]
    whole = PairEncoder.from_file(tiny_source / "tokenizer.json", 24)  # the first pair is truncated
    cut = whole.with_feed("first-segment")
    full_batch, cut_batch = (encode_batch(e, pairs, with_labels=False) for e in (whole, cut))
    assert cut_batch["qa_input_ids"].shape == cut_batch["aq_input_ids"].shape
    assert cut_batch["qa_input_ids"].shape[1] < full_batch["qa_input_ids"].shape[1]
    assert int(cut_batch["qa_token_type_ids"].sum()) == 0
    apart_batch = encode_batch(cut.with_apart(True), pairs, with_labels=False)  # each order its own length
    assert apart_batch["qa_input_ids"].shape[1] != apart_batch["aq_input_ids"].shape[1]
    with torch.no_grad():
        a, b, c = (model(**batch).logits for batch in (full_batch, cut_batch, apart_batch))
    assert float((a - b).abs().max()) < 1e-6 and float((a - c).abs().max()) < 1e-6
    assert whole.for_pairing("towers").feed == "first-segment" and whole.for_pairing("cross").feed == "pair"
    # a template whose last [SEP] has type id 0 would be attended by the towers: such a pair cannot be cut
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing

    from pairbert.runtime.tokenization import TokenizerError

    slip = Tokenizer.from_file(str(tiny_source / "tokenizer.json"))
    cls, sep = (slip.token_to_id(t) for t in ("[CLS]", "[SEP]"))
    slip.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    assert PairEncoder(slip, 24).for_pairing("towers").feed == "pair"
    with pytest.raises(TokenizerError, match="cannot be cut|needs a pair template"):
        PairEncoder(slip, 24, feed="first-segment")
    cross = build_model(str(tiny_source), pairing="cross").eval()  # the cross pairing needs the whole pair
    with torch.no_grad():
        assert float((cross(**full_batch).logits - cross(**cut_batch).logits).abs().max()) > 1e-5


def test_single_order_ablation_trains_but_does_not_export(tmp_path, tiny_tokenizer):
    from pairbert.export.bundle_writer import export_bundle
    from pairbert.export.validation import ExportError

    train(tiny_config(tmp_path / "run", tiny_tokenizer, epochs=1, single_order=True, plot=False))
    ckpt = load_checkpoint(tmp_path / "run" / "last")
    assert ckpt.model.aq_encoder is None and ckpt.model.classifier.in_features == 32
    with pytest.raises(ExportError, match="contract"):
        export_bundle(tmp_path / "run" / "last", tmp_path / "bundle", echo=None)


def test_auto_pairing_is_towers_with_a_teacher_and_cross_without(tmp_path, tiny_tokenizer, tiny_source):
    from pairbert.training.loop import resolve_auto

    cfg = TrainConfig()
    assert (cfg.pairing, cfg.pooling) == ("auto", "auto")
    assert (resolve_auto(cfg, True).pairing, resolve_auto(cfg, True).pooling) == ("towers", "mean")
    assert (resolve_auto(cfg, False).pairing, resolve_auto(cfg, False).pooling) == ("cross", "cls")
    towers, cross = resolve_auto(cfg, True), resolve_auto(cfg, False)  # the in-batch loss's shape follows it
    assert (towers.contrastive_negatives, towers.contrastive_symmetric) == (False, False)
    on = resolve_auto(replace(cfg, contrastive_negatives=True, contrastive_symmetric=True), True)
    assert (on.contrastive_negatives, on.contrastive_symmetric) == (True, True)
    assert (cross.contrastive_negatives, cross.contrastive_symmetric) == (False, False)
    off = resolve_auto(replace(cfg, contrastive=0.0), True)
    assert (off.contrastive_negatives, off.contrastive_symmetric) == (False, False)
    train(tiny_config(tmp_path / "random", tiny_tokenizer, plot=False))
    settings = json.loads((tmp_path / "random" / "last" / "pairbert.json").read_text())["train_config"]
    assert (settings["pairing"], settings["pooling"]) == ("cross", "cls")  # recorded resolved, never "auto"
    assert load_checkpoint(tmp_path / "random" / "last").model.config.pairing == "cross"


def _tiny_run(tmp_path, tiny_source, **settings) -> dict:
    """TrainConfig fields for a quick towers run on 20 varied pairs (plus `settings`)."""
    train_file = write_jsonl(tmp_path / "train.jsonl", varied_pairs(20, seed=3))
    return dict(
        source=str(tiny_source),
        train_file=str(train_file),
        validation_file=str(SMOKE),
        batch_size=8,
        progress=False,
        plot=False,
        **settings,
    )


def test_towers_resume_matches_uninterrupted_run(tmp_path, tiny_source):
    """The auto recipe (towers, distillation, a separate head rate) resumes exactly."""
    common = _tiny_run(tmp_path, tiny_source, epochs=3)
    full = train(TrainConfig(output_dir=str(tmp_path / "full"), **common))
    part = TrainConfig(output_dir=str(tmp_path / "part"), stop_after_epochs=1, **common)
    train(part)
    part.stop_after_epochs, part.resume = None, True
    resumed = train(part)
    strip = [{k: v for k, v in h.items() if k != "elapsed_s"} for h in full["history"]]
    assert strip == [{k: v for k, v in h.items() if k != "elapsed_s"} for h in resumed["history"]]
    a = load_checkpoint(tmp_path / "full" / "last").model.state_dict()
    b = load_checkpoint(tmp_path / "part" / "last").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert load_checkpoint(tmp_path / "full" / "last").model.config.pairing == "towers"


def test_a_run_recorded_before_the_in_batch_options_resumes_without_them(tmp_path, tiny_source):
    """A checkpoint whose settings lack the options ran without them: resuming keeps them off, and asking
    for one is a changed setting (an error without --override)."""
    from pairbert.training.loop import TrainingError

    common = _tiny_run(tmp_path, tiny_source, epochs=2)
    part = TrainConfig(output_dir=str(tmp_path / "run"), stop_after_epochs=1, **common)
    train(part)
    settings_file = tmp_path / "run" / "last" / "pairbert.json"
    settings = json.loads(settings_file.read_text())
    assert settings["train_config"]["contrastive_negatives"] is False  # recorded resolved
    for name in ("contrastive_negatives", "contrastive_symmetric"):
        del settings["train_config"][name]
    settings_file.write_text(json.dumps(settings))
    asked = replace(part, stop_after_epochs=None, resume=True, contrastive_negatives=True)
    with pytest.raises(TrainingError, match="contrastive_negatives is True, the checkpoint's run used False"):
        train(asked)
    resumed = train(replace(part, stop_after_epochs=None, resume=True))
    assert resumed["history"][-1]["epoch"] == 2
    stored = json.loads(settings_file.read_text())["train_config"]
    assert (stored["contrastive_negatives"], stored["contrastive_symmetric"]) == (False, False)


def test_in_batch_loss_prefers_each_question_own_answer():
    from pairbert.training.loop import in_batch_loss

    u = torch.nn.functional.normalize(torch.eye(4, 8) + 0.01, dim=-1)
    labels = torch.tensor([1, 1, 1, 1])
    matched = in_batch_loss(u, u.clone(), labels)
    shuffled = in_batch_loss(u, u[[1, 2, 3, 0]], labels)
    assert matched < 0.01 < shuffled
    # negatives are not rows of the ranking; fewer than two positives: nothing to rank
    assert in_batch_loss(u, u[[1, 2, 3, 0]], torch.tensor([1, 1, 0, 0])) > 1.0
    assert in_batch_loss(u, u, torch.tensor([1, 0, 0, 0])) == 0.0


def test_in_batch_negatives_rank_wrong_answers_but_never_a_right_one():
    """negatives=True adds the batch's negative pairs' answers as candidates, a question's own wrong answer
    included; a candidate that is right too (the same answer text, a second right answer to the question) is
    left out; symmetric=True also ranks questions for each answer, with the same rule."""
    from pairbert.training.loop import CONTRASTIVE_SCALE, in_batch_loss

    torch.manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    v = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    # pairs: (qA, aA, 1) (qB, aB, 1) (qA, aC, 0) (qD, aA, 0) (qB, aE, 1)
    labels = torch.tensor([1, 1, 0, 0, 1])
    questions = torch.tensor([[11, 12], [13, 14], [11, 12], [15, 16], [13, 14]])
    answers = torch.tensor([[21, 22], [23, 24], [25, 26], [21, 22], [27, 28]])
    ones, zeros = torch.ones_like(questions), torch.zeros_like(questions)
    batch = {"qa_input_ids": questions, "aq_input_ids": answers}
    batch.update({f"{o}_attention_mask": ones for o in ("qa", "aq")})
    batch.update({f"{o}_token_type_ids": zeros for o in ("qa", "aq")})
    rows = [0, 1, 4]
    scores = CONTRASTIVE_SCALE * u[rows] @ v.T
    scores[0, 3] = float("-inf")  # aA again: right for qA
    scores[1, 4] = scores[2, 1] = float("-inf")  # qB has two right answers
    expected = torch.nn.functional.cross_entropy(scores, torch.tensor([0, 1, 4]))
    got = in_batch_loss(u, v, labels, batch, negatives=True)
    assert torch.allclose(got, expected)
    assert float(scores[0, 2]) > float("-inf")  # qA's own wrong answer stays a candidate
    back = CONTRASTIVE_SCALE * v[rows] @ u[rows].T
    back[1, 2] = back[2, 1] = float("-inf")
    back_loss = torch.nn.functional.cross_entropy(back, torch.arange(3))
    both = in_batch_loss(u, v, labels, batch, negatives=True, symmetric=True)
    assert torch.allclose(both, (expected + back_loss) / 2)


def test_training_batches_keep_a_question_together_when_keyed():
    from pairbert.training.batches import training_batches

    lengths = [(i * 7) % 30 + 3 for i in range(101)]
    keys = [f"q{i // 3}" for i in range(101)]  # three pairs per question (the last has two)
    plain = training_batches(lengths, 16, seed=4)
    keyed = training_batches(lengths, 16, seed=4, keys=keys)
    for batches in (plain, keyed):
        assert sorted(i for b in batches for i in b) == list(range(101)) and max(map(len, batches)) <= 16

    def owners(batches):
        return {i: n for n, b in enumerate(batches) for i in b}

    keyed_owner, plain_owner = owners(keyed), owners(plain)
    assert all(keyed_owner[i] == keyed_owner[3 * (i // 3)] for i in range(101))
    assert any(plain_owner[i] != plain_owner[3 * (i // 3)] for i in range(101))  # unkeyed: spread out


def test_contrastive_and_frozen_embeddings_train_deterministically(tmp_path, tiny_source):
    """--contrastive (towers) and --freeze-embeddings: finite, reproducible, and the tables stay as loaded."""
    common = _tiny_run(
        tmp_path,
        tiny_source,
        contrastive=1.0,
        freeze_embeddings=True,
        contrastive_negatives=True,  # the keyed batches and both in-batch directions, end to end
        contrastive_symmetric=True,
    )
    first = train(TrainConfig(output_dir=str(tmp_path / "a"), **common))["history"]
    second = train(TrainConfig(output_dir=str(tmp_path / "b"), **common))["history"]
    assert [h["train_loss"] for h in first] == [h["train_loss"] for h in second]
    assert all(np.isfinite(h["train_loss"]) for h in first)
    model = load_checkpoint(tmp_path / "a" / "last").model
    from transformers import BertModel

    source = BertModel.from_pretrained(str(tiny_source)).embeddings.word_embeddings.weight
    assert model.config.pairing == "towers"
    assert torch.equal(model.qa_encoder.embeddings.word_embeddings.weight, source)
    assert torch.equal(model.aq_encoder.embeddings.word_embeddings.weight, source)
    assert not torch.equal(model.qa_encoder.encoder.layer[0].output.dense.weight, _source_layer(tiny_source))


def _source_layer(source: Path) -> torch.Tensor:
    from transformers import BertModel

    return BertModel.from_pretrained(str(source)).encoder.layer[0].output.dense.weight


def test_contrastive_needs_towers(tmp_path, tiny_tokenizer):
    from pairbert.training.loop import TrainingError

    with pytest.raises(TrainingError, match="contrastive"):
        train(tiny_config(tmp_path / "run", tiny_tokenizer, contrastive=1.0))
    with pytest.raises(TrainingError, match="--contrastive-negatives .* needs --contrastive > 0"):
        train(tiny_config(tmp_path / "run2", tiny_tokenizer, contrastive_negatives=True))


def test_builder_variants_leave_validation_unchanged():
    """Extra training negatives and the train-only bank add training rows only; the split is the same."""
    spec = importlib.util.spec_from_file_location("build_builtin", DATA / "build_builtin.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    bank, extra = mod.load_bank(), mod.load_bank(mod.EXTRA_BANK)
    train_rows, validation = mod.build(bank)
    for kwargs in ({"extra_train_negatives": True}, {"train_only": extra}):
        more, same = mod.build(bank, **kwargs)
        assert same == validation and len(more) > len(train_rows)
        assert {json.dumps(r) for r in train_rows} <= {json.dumps(r) for r in more}
    seen = {
        r["question"].lower() for r in bank + mod.load_bank(mod.HELDOUT_BANK) + mod.load_bank(mod.DEV_BANK)
    }
    assert not seen & {r["question"].lower() for r in extra}  # the train-only bank repeats no other question


_TEXTSPEAK = {
    **{"u": "you", "ur": "your", "r": "are", "ya": "you", "wat": "what", "wanna": "want", "whats": "what"},
    **{"cant": "can", "dont": "do", "doesnt": "does", "im": "i", "its": "it", "isnt": "is", "wont": "will"},
}
# the same thing said with another word, as rewordings of a question do
_SYNONYMS = {
    **{
        "biggest": "largest",
        "sofa": "couch",
        "bedsheets": "sheets",
        "bedsheet": "sheets",
        "trainers": "shoes",
    },
    **{
        "trainer": "shoes",
        "sneakers": "shoes",
        "kids": "children",
        "kid": "children",
        "fridge": "refrigerator",
    },
    **{"telly": "tv", "television": "tv", "mobile": "phone", "cellphone": "phone", "laptop": "computer"},
    **{"pc": "computer", "quickly": "fast", "quick": "fast", "fix": "stop", "cure": "stop", "shift": "stop"},
    **{"rid": "stop", "eat": "have", "pills": "medicine", "tablets": "medicine", "overripe": "brown"},
}
_STOP = set(
    "a an the i me my you your we our it is are was be been do does did doing how what why when where which "
    "who can could should would will to of in on at for with from by about into and or but if so that this "
    "these those there get got any some much many very really just up out off over then than too also "
    "one".split()
)


def _words(text: str) -> list[str]:
    """Lower case, no punctuation, text-speak and contractions spelt out ('Whats up?' == 'what up')."""
    words = re.sub(r"[^a-z0-9 ]+", "", text.lower().replace("-", " ").replace("'", "")).split()
    return [_TEXTSPEAK.get(w, w) for w in words]


def _stem(word: str) -> str:
    return next(
        (word[: -len(s)] for s in ("ing", "ed", "es", "s", "y") if len(word) > 4 and word.endswith(s)), word
    )


def _content(text: str) -> set[str]:
    """What a question is about: its words less the function words, synonyms merged, crudely stemmed."""
    return {_stem(_SYNONYMS.get(w, w)) for w in _words(text) if w not in _STOP}


def _near_question(a: str, b: str) -> bool:
    """Half or more of the two questions' content words shared (or, for all-function-word questions, the
    same words): a rewording, or the same subject asked about."""
    ca, cb = _content(a), _content(b)
    if not ca or not cb:
        return _words(a) == _words(b)
    return len(ca & cb) / len(ca | cb) >= 0.5


def _near_answer(a: str, b: str) -> bool:
    return difflib.SequenceMatcher(None, " ".join(_words(a)), " ".join(_words(b))).ratio() >= 0.75


def test_train_only_bank_neither_repeats_nor_nearly_repeats_an_evaluated_question():
    """The train-only casual bank must not teach what validation, dev or held-out evaluate: no question about
    the same thing as one of theirs (half its content words, after text-speak, contractions and synonyms), no
    answer worded like one of their true answers, no question twice. A failure names the bank's row only, so
    the held-out file stays unread."""
    spec = importlib.util.spec_from_file_location("build_builtin", DATA / "build_builtin.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    extra = mod.load_bank(mod.EXTRA_BANK)
    assert len(extra) >= 750
    questions = [tuple(_words(r["question"])) for r in extra]
    assert len(set(questions)) == len(questions), [q for q in questions if questions.count(q) > 1]
    rows = [json.loads(line) for line in (DATA / "validation.jsonl").read_text().splitlines()]
    evaluated = [(r["question"], r["answer"] if r["label"] == 1 else "") for r in rows]
    evaluated += [
        (r["question"], r["answer"]) for r in mod.load_bank(mod.DEV_BANK) + mod.load_bank(mod.HELDOUT_BANK)
    ]
    leaks = [
        f"{r['question']} / {r['answer']}"
        for r in extra
        if any(_near_question(r["question"], q) or (a and _near_answer(r["answer"], a)) for q, a in evaluated)
    ]
    assert not leaks, leaks


def test_near_duplicate_rule_catches_rewordings_only():
    assert _words("What's a VPN?") == _words("whats a vpn") and _words("how do u do it") == _words(
        "How do you do it?"
    )
    assert _near_question("what is the cloud", "What's the cloud?")
    assert _near_question("whats the biggest ocean", "What is the largest ocean?")
    assert _near_question("how do i stop my trainers smelling", "How do I stop my shoes from smelling?")
    assert _near_question("how do i fix a squeaky door", "How do I stop a door from squeaking?")
    assert _near_question("how do i stop my dog barking at night", "how do i stop my dog barking")
    assert not _near_question("how do i stop my dog barking", "how do i stop my cat scratching")
    assert not _near_question("how do i get rid of a stye", "how do i get rid of hiccups")
    assert _near_answer(
        "hold ur breath and swallow a few times, works for me every time",
        "hold your breath and swallow a few times, works for me every time",
    )
    assert not _near_answer("banana bread, every time", "Six minutes in boiling water.")
