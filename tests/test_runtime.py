"""Runtime: torch-free, parity with torch, tokenization equal to training's, hard to break, thread-safe."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from helpers import edit_manifest, varied_pairs
from tokenizers import Tokenizer, processors

from pairbert.runtime import BundleError, DeviceError, PairClassifier, PredictorError
from pairbert.runtime.devices import LEDGER, physical_cores
from pairbert.runtime.pair_files import read_pairs
from pairbert.training.batches import encode_batch
from pairbert.training.checkpoint import load_checkpoint


def torch_logits(checkpoint, pairs) -> np.ndarray:
    ckpt = load_checkpoint(checkpoint)
    with torch.inference_mode():
        return ckpt.model(**encode_batch(ckpt.encoder, pairs, with_labels=False)).logits.numpy()


def logits_of(prediction) -> np.ndarray:
    # log-probabilities differ from logits by a per-row constant; compare centred values
    lp = np.log(prediction.probabilities.astype(np.float64))
    return lp - lp.mean(-1, keepdims=True)


def test_predictor_never_imports_torch(tiny_bundle):
    code = (
        "import sys; from pairbert.runtime import PairClassifier;"
        f"c = PairClassifier.load({str(tiny_bundle)!r});"
        "r = c.predict([('what is the capital of france?', 'paris is the capital.')]);"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'onnx')"
        " or m.startswith(('pairbert.training', 'pairbert.export')));"
        "print(len(r), heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1 []"


@pytest.mark.parametrize("variant", ["fp32", "optimized"])
def test_fp32_variants_match_torch(tiny_bundle, tiny_checkpoint, variant, tmp_path):
    from pairbert.runtime.pair_files import Pair

    pairs = [Pair(r["question"], r["answer"], r["label"]) for r in varied_pairs(60, seed=5)]
    expected = torch_logits(tiny_checkpoint, pairs)
    clf = PairClassifier.load(tiny_bundle, variant=variant)
    got = clf.predict([(p.question, p.answer) for p in pairs], batch_size=8)
    centred = expected - expected.mean(-1, keepdims=True)
    assert np.abs(logits_of(got) - centred).max() <= 1e-4
    assert (got.labels == expected.argmax(-1)).all()


def test_int8_agrees_on_labels(tiny_bundle, tiny_checkpoint):
    from pairbert.runtime.pair_files import Pair

    pairs = [Pair(r["question"], r["answer"]) for r in varied_pairs(200, seed=7)]
    expected = torch_logits(tiny_checkpoint, pairs).argmax(-1)
    got = PairClassifier.load(tiny_bundle, variant="int8").predict([(p.question, p.answer) for p in pairs])
    assert (got.labels == expected).mean() >= 0.99


def test_auto_on_cpu_without_measuring_takes_the_fixed_order_and_reports_provider(tiny_bundle):
    clf = PairClassifier.load(tiny_bundle, backend="onnxruntime", calibrate=False)
    assert clf.variant == "int8" and clf.device == "cpu" and clf.backend == "onnxruntime"
    assert clf.provider == "CPUExecutionProvider"


def test_auto_passes_over_a_variant_that_gave_up_labels_unless_nothing_else_can_run(tiny_bundle, tmp_path):
    """int8 may pass its own 99 % gate at 99.0 %: `auto` takes only variants that agreed on >= 99.5 % of the
    gate's labels while one does; by name, int8 still loads."""
    import shutil

    from pairbert.runtime.bundle import read_manifest
    from pairbert.runtime.predictor import candidate_tiers

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    edit_manifest(bundle, lambda d: d["variants"]["int8"]["parity"].update(label_agreement=0.99))
    assert candidate_tiers(read_manifest(bundle), "cpu", "onnxruntime") == [["optimized", "fp32"], ["int8"]]
    clf = PairClassifier.load(bundle, backend="onnxruntime", calibrate=False)
    assert clf.variant == "optimized"
    assert PairClassifier.load(bundle, variant="int8").variant == "int8"

    def only_int8_passes(d):
        for name, info in d["variants"].items():
            info["passed_parity"] = name == "int8"

    edit_manifest(bundle, only_int8_passes)
    assert candidate_tiers(read_manifest(bundle), "cpu", "auto") == [["int8"]]
    assert PairClassifier.load(bundle, calibrate=False).variant == "int8"


def test_an_int8_variant_with_8_bit_weights_comes_last_on_a_cpu_that_overflows_them(
    tiny_bundle, tmp_path, monkeypatch, caplog
):
    """Bundles exported before int8 weights became 7-bit: their gate does not hold on an x86 CPU without
    VNNI, so `auto` tries their int8 there only when nothing else runs, with a warning (so does asking for it
    by name). Unsigned 8-bit weights take a kernel that does not overflow."""
    import shutil

    from pairbert.runtime import predictor
    from pairbert.runtime.bundle import read_manifest

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    edit_manifest(
        bundle, lambda d: d["variants"]["int8"].update(notes="int8 options: QInt8-perchannel-ffnfp32")
    )
    monkeypatch.setattr(predictor, "int8_overflows_here", lambda: True)
    assert predictor.candidate_tiers(read_manifest(bundle), "cpu", "onnxruntime") == [
        ["optimized", "fp32"],
        ["int8"],
    ]
    with caplog.at_level("WARNING", logger="pairbert.runtime.predictor"):
        assert PairClassifier.load(bundle, variant="int8").variant == "int8"
    assert "variant int8 has 8-bit weights, which overflow on this CPU" in caplog.text

    def only_int8_passes(d):
        for name, info in d["variants"].items():
            info["passed_parity"] = name == "int8"

    edit_manifest(bundle, only_int8_passes)
    caplog.clear()
    with caplog.at_level("WARNING", logger="pairbert.runtime.predictor"):
        assert PairClassifier.load(bundle, calibrate=False).variant == "int8"  # still loads: the last tier
    assert "auto: int8 has 8-bit weights, which overflow on this CPU" in caplog.text
    edit_manifest(bundle, lambda d: d["variants"]["int8"].update(notes="int8 options: QUInt8-perchannel"))
    assert predictor.candidate_tiers(read_manifest(bundle), "cpu", "auto") == [["int8"]]
    assert not predictor._overflows_here("int8", read_manifest(bundle).variants["int8"])
    monkeypatch.setattr(predictor, "int8_overflows_here", lambda: False)
    manifest = read_manifest(tiny_bundle)  # 7-bit: first tier anywhere
    assert "int8" in predictor.candidate_tiers(manifest, "cpu", "onnxruntime")[0]


@pytest.mark.parametrize("recorded", [True, "0.999", None, float("nan"), 10**400, -1, 1.5])
def test_a_label_agreement_that_is_not_a_fraction_counts_as_none(tiny_bundle, tmp_path, recorded):
    """A manifest (edited, its checksum recomputed) whose label_agreement is not a fraction in [0, 1] puts
    that variant in `auto`'s last tier, never a traceback (10**400 overflowed float())."""
    import shutil

    from pairbert.runtime.bundle import read_manifest
    from pairbert.runtime.predictor import candidate_tiers

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    edit_manifest(bundle, lambda d: d["variants"]["int8"]["parity"].update(label_agreement=recorded))
    assert candidate_tiers(read_manifest(bundle), "cpu", "onnxruntime")[-1] == ["int8"]


def test_bucketing_keeps_caller_order(tiny_bundle):
    clf = PairClassifier.load(tiny_bundle, variant="fp32")
    rows = varied_pairs(37, seed=11)
    pairs = [(r["question"], r["answer"]) for r in rows]
    together = clf.predict(pairs, batch_size=4)
    one_by_one = np.stack([clf.predict([p]).probabilities[0] for p in pairs])
    np.testing.assert_allclose(together.probabilities, one_by_one, atol=1e-5)
    qa_form = clf.predict_qa([p[0] for p in pairs], [p[1] for p in pairs], batch_size=5)
    np.testing.assert_allclose(qa_form.probabilities, together.probabilities, atol=1e-5)


def test_tokenization_matches_transformers_on_varied_strings():
    """Our tokenizers-based two-order encoding vs transformers' BertTokenizer built from vocab.txt."""
    import random

    from transformers import BertTokenizer

    from pairbert.runtime.tokenization import PairEncoder
    from pairbert.training.weights import packaged_minilm_dir

    model_dir = packaged_minilm_dir()
    ours = PairEncoder.from_file(model_dir / "tokenizer.json", max_length=128)
    theirs = BertTokenizer(str(model_dir / "vocab.txt"), do_lower_case=True)
    rng = random.Random(0)
    pieces = [
        "hello",
        "Wörld",
        "naïve café",
        "안녕하세요 세계",
        "日本語のテキスト",
        "😀👍🏽",
        "e\u0301",
        "  ",
        "\t\n",
        "Ünïcödé",
        "don't",
        "U.S.A.",
        "3.14159",
        "C++/C#",
        "<html>",
        "ß",
        "İstanbul",
        "x" * 50,
        "¿qué?",
        "Москва",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
        "\u200b",
        "a-b_c",
        "1,000,000",
    ]
    strings = []
    for i in range(1000):
        kind = i % 5
        if kind == 0:
            s = " ".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
        elif kind == 1:
            s = " ".join(rng.choice(pieces) for _ in range(rng.randint(60, 200)))  # needs truncation
        elif kind == 2:
            s = rng.choice(["   ", "\t", "\n\n", " \u3000 "])  # whitespace only
        elif kind == 3:
            s = "".join(chr(rng.randint(0x20, 0x2FFF)) for _ in range(rng.randint(1, 40)))
        else:
            s = rng.choice(pieces) + "?"
        strings.append(s)
    questions, answers = strings[:500], strings[500:]
    questions += strings[::-1][:500]
    answers += strings[:500]
    for start in range(0, 1000, 100):
        q, a = questions[start : start + 100], answers[start : start + 100]
        got = ours.encode(q, a)
        for order, (first, second) in (("qa", (q, a)), ("aq", (a, q))):
            ref = theirs(
                list(first),
                list(second),
                truncation="longest_first",
                max_length=128,
                padding="longest",
                return_tensors="np",
            )
            for feature in ("input_ids", "attention_mask", "token_type_ids"):
                np.testing.assert_array_equal(
                    got[f"{order}_{feature}"], ref[feature], err_msg=f"{order} {feature}"
                )


@pytest.mark.parametrize(
    "pairs, message",
    [
        (None, "sequence of"),
        ("just a string", "sequence of"),
        ([("q", None)], "pair 0: answer must be a str, got NoneType"),
        ([("q", "a"), (1, "a")], "pair 1: question must be a str, got int"),
        ([("q", "a", "extra")], "pair 0: expected a \\(question, answer\\) pair"),
        ([("q\ud800", "a")], "pair 0: question is not valid Unicode"),
        ([b"bytes"], "pair 0: expected"),
    ],
)
def test_bad_input_gets_a_clear_error_and_the_predictor_keeps_working(tiny_bundle, pairs, message):
    clf = PairClassifier.load(tiny_bundle, variant="fp32")
    with pytest.raises(PredictorError, match=message):
        clf.predict(pairs)
    assert len(clf.predict([("what is this?", "this is a cat.")])) == 1


def test_valid_but_odd_text_gets_an_answer(tiny_bundle):
    clf = PairClassifier.load(tiny_bundle, variant="fp32")
    result = clf.predict([("", ""), ("   ", "\t\n"), ("what? " * 20000, "paris"), ("😀", "안녕")])
    assert result.probabilities.shape == (4, 2) and np.isfinite(result.probabilities).all()
    np.testing.assert_allclose(result.probabilities.sum(-1), 1.0, rtol=1e-5)
    empty = clf.predict([])
    assert len(empty) == 0 and empty.probabilities.shape == (0, 2)
    with pytest.raises(PredictorError, match="2 questions but 1 answers"):
        clf.predict_qa(["a", "b"], ["c"])
    with pytest.raises(PredictorError, match="batch_size"):
        clf.predict([("a", "b")], batch_size=0)


def test_bundle_faults(tiny_bundle, tmp_path):
    with pytest.raises(BundleError, match="no such bundle folder"):
        PairClassifier.load(tmp_path / "nowhere")
    with pytest.raises(BundleError, match="variant 'int4' not in this bundle"):
        PairClassifier.load(tiny_bundle, variant="int4")
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_bundle, copy)
    PairClassifier.load(copy)  # auto: measured and cached while every file is there
    (copy / "model.int8.onnx").unlink()
    with pytest.raises(BundleError, match="model.int8.onnx: listed in the manifest but missing"):
        PairClassifier.load(copy, variant="int8")
    # A missing file fails the load whichever variant would run, cached choice or not (probe8: the same
    # folder loaded on a machine whose cache held another choice and failed on a fresh one).
    for variant in ("auto", "fp32"):
        with pytest.raises(BundleError, match="model.int8.onnx: listed in the manifest but missing"):
            PairClassifier.load(copy, variant=variant)
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        PairClassifier.load(copy)
    (copy / "manifest.json").write_text('{"max_length": 1' + "0" * 5000 + "}")  # past Python's digit limit
    with pytest.raises(BundleError, match="manifest.json: not valid JSON .*integer string conversion"):
        PairClassifier.load(copy)


def test_cuda_request_without_cuda_is_an_error_unless_fallback_allowed(tiny_bundle):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA; covered by the gpu tests")  # only reachable on GPU machines
    with pytest.raises(DeviceError, match="no CUDAExecutionProvider"):
        PairClassifier.load(tiny_bundle, device="cuda")
    clf = PairClassifier.load(tiny_bundle, device="cuda", allow_fallback=True)
    assert clf.device == "cpu" and clf.provider == "CPUExecutionProvider"


def test_concurrent_predictions_equal_sequential(tiny_bundle):
    clf = PairClassifier.load(tiny_bundle, variant="optimized")
    jobs = [[(r["question"], r["answer"]) for r in varied_pairs(25, seed=s)] for s in range(8)]
    sequential = [clf.predict(job, batch_size=4).probabilities for job in jobs]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(3):
                results[i] = clf.predict(jobs[i], batch_size=4).probabilities
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(8):
        np.testing.assert_array_equal(results[i], sequential[i])


def test_a_default_second_predictor_shares_quietly_and_an_explicit_overcommit_warns(tiny_bundle, caplog):
    import gc

    gc.collect()  # predictors other tests dropped hand their threads back now, not in the middle of this test
    cores = physical_cores()
    before = LEDGER.claimed
    with caplog.at_level("WARNING"):
        a = PairClassifier.load(tiny_bundle, variant="fp32")
        b = PairClassifier.load(tiny_bundle, variant="fp32")
    assert a.threads == max(1, cores - before)  # the first takes the free cores
    assert b.threads == max(1, cores - before - a.threads)  # the second what is left, at least one
    assert "compete" not in caplog.text  # a default load never warns: it took what it was given
    caplog.clear()
    with caplog.at_level("WARNING"):
        c = PairClassifier.load(tiny_bundle, variant="fp32", threads=cores)
    assert "compete" in caplog.text  # asking for more than is free is said out loud
    del a, b, c
    gc.collect()
    assert LEDGER.claimed == before


def test_cli_predict_single_and_stream(tiny_bundle, tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pairbert",
            "predict",
            str(tiny_bundle),
            "-q",
            "who wrote hamlet?",
            "-a",
            "shakespeare wrote hamlet.",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    assert row["label"] in (0, 1) and 0.0 <= row["match_probability"] <= 1.0

    src = tmp_path / "in.jsonl"
    src.write_text(
        "".join(
            json.dumps({"question": r["question"], "answer": r["answer"]}) + "\n" for r in varied_pairs(30)
        )
    )
    out = tmp_path / "out.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pairbert",
            "predict",
            str(tiny_bundle),
            "--input",
            str(src),
            "--output",
            str(out),
            "--chunk",
            "7",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["question"] for r in rows] == [p.question for p in read_pairs(src)]

    done = subprocess.run(
        [sys.executable, "-m", "pairbert", "predict", str(tiny_bundle), "--input", "-"],
        input='{"question": "q", "answer": "a"}\n{"question": "q"\n',
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1  # a data error (2 is kept for usage errors)
    assert len(done.stdout.splitlines()) == 1  # the good line was still answered
    assert "<stdin>, line 2" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.gpu
def test_cuda_fp16_parity_with_io_binding(tiny_bundle, tiny_checkpoint):
    from pairbert.runtime.pair_files import Pair

    pairs = [Pair(r["question"], r["answer"]) for r in varied_pairs(100, seed=9)]
    expected = torch_logits(tiny_checkpoint, pairs).argmax(-1)
    clf = PairClassifier.load(tiny_bundle, device="cuda")
    assert clf.provider == "CUDAExecutionProvider" and clf.variant == "fp16"
    got = clf.predict([(p.question, p.answer) for p in pairs])
    assert (got.labels == expected).mean() >= 0.99
    opt = PairClassifier.load(tiny_bundle, device="cuda", variant="optimized")
    np.testing.assert_allclose(
        opt.predict([(p.question, p.answer) for p in pairs]).probabilities,
        PairClassifier.load(tiny_bundle, device="cpu", variant="optimized")
        .predict([(p.question, p.answer) for p in pairs])
        .probabilities,
        atol=1e-3,  # fp32 GEMMs on CUDA may run in TF32 (an H200 gave 1.4e-4)
    )


def test_bucketed_batches_respect_size_and_token_caps():
    from pairbert.runtime.predictor import bucketed_batches

    lengths = [5, 120, 7, 64, 64, 3, 128, 9, 30, 100]
    batches = bucketed_batches(lengths, batch_size=3, max_tokens=200)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 3
        assert len(b) * max(lengths[i] for i in b) <= 200 or len(b) == 1
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat)
    assert len(bucketed_batches(lengths, batch_size=100, max_tokens=None)) == 1


def test_token_cap_does_not_change_answers(tiny_bundle):
    rows = varied_pairs(40, seed=13)
    pairs = [(r["question"], r["answer"]) for r in rows]
    capped = PairClassifier.load(tiny_bundle, variant="fp32", max_batch_tokens=64).predict(
        pairs, batch_size=40
    )
    whole = PairClassifier.load(tiny_bundle, variant="fp32", max_batch_tokens=None).predict(
        pairs, batch_size=40
    )
    np.testing.assert_allclose(capped.probabilities, whole.probabilities, atol=1e-5)


def test_cpu_arena_modes_reach_the_session_and_give_the_same_answers(tiny_bundle):
    rows = varied_pairs(30, seed=21)
    pairs = [(r["question"], r["answer"]) for r in rows]
    answers = {}
    for mode, arena_on in (("off", False), ("shrink", True), ("keep", True)):
        clf = PairClassifier.load(tiny_bundle, variant="fp32", cpu_arena=mode)
        ort_session = clf.session.session  # the predictor's OrtSession wraps the InferenceSession
        assert ort_session.get_session_options().enable_cpu_mem_arena is arena_on
        assert (clf.session._run_options is not None) == (mode == "shrink")
        answers[mode] = clf.predict(pairs, batch_size=7).probabilities
    assert PairClassifier.load(tiny_bundle, variant="fp32").session.settings.cpu_arena == "off"  # the default
    np.testing.assert_allclose(answers["off"], answers["shrink"], atol=1e-6)
    np.testing.assert_allclose(answers["off"], answers["keep"], atol=1e-6)
    with pytest.raises(PredictorError, match="cpu_arena must be one of off, shrink, keep, got 'big'"):
        PairClassifier.load(tiny_bundle, variant="fp32", cpu_arena="big")


def test_predict_encoded_equals_predict_and_checks_its_arguments(tiny_bundle):
    clf = PairClassifier.load(tiny_bundle, variant="optimized", threads=1)
    pairs = [(r["question"], r["answer"]) for r in varied_pairs(9, seed=5)]
    qa, aq = clf.encoder.tokenize([q for q, _ in pairs], [a for _, a in pairs])
    got = clf.predict_encoded(qa, aq, batch_size=4)
    want = clf.predict(pairs, batch_size=4)
    np.testing.assert_array_equal(got.probabilities, want.probabilities)
    assert got.labels.tolist() == want.labels.tolist()
    assert clf.predict_encoded([], []).probabilities.shape == (0, len(clf.label_names))
    with pytest.raises(PredictorError, match="9 question-first encodings but 8 answer-first"):
        clf.predict_encoded(qa, aq[:8])
    with pytest.raises(PredictorError, match="batch_size"):
        clf.predict_encoded(qa, aq, batch_size=0)
    with pytest.raises(PredictorError, match=r"qa\[1\] must be the Tokens made by clf.encoder.tokenize, got"):
        clf.predict_encoded([qa[0], qa[1].ids], aq[:2])
    with pytest.raises(PredictorError, match="aq must be a list of encodings, got str"):
        clf.predict_encoded(qa[:2], "ab")
    # another tokenizer's encodings: an id past this bundle's vocabulary is refused, not gathered
    other = copy.copy(clf.encoder)
    other.tokenizer = Tokenizer.from_str(clf.encoder.tokenizer.to_str())
    vocab = clf.encoder.tokenizer.get_vocab_size()
    other.tokenizer.add_tokens(["zzzunseen"])
    qa2, aq2 = other.tokenize(["what zzzunseen is"], ["a word"])
    assert vocab in qa2[0].ids
    with pytest.raises(PredictorError, match=rf"token id {vocab}, outside \[0, {vocab}\) for this bundle"):
        clf.predict_encoded(qa2, aq2)
    # a template with other token types (BERT has two): refused too, not gathered from past the table
    other.tokenizer = Tokenizer.from_str(clf.encoder.tokenizer.to_str())
    ids = other.tokenizer.get_vocab()
    other.tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS]:7 $A:7 [SEP]:7",
        pair="[CLS]:7 $A:7 [SEP]:7 $B:7 [SEP]:7",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    qa3, aq3 = other.tokenize(["what is it"], ["a word"])
    with pytest.raises(PredictorError, match=r"token type 7, outside \[0, 2\) for this bundle"):
        clf.predict_encoded(qa3, aq3)
    # the bound is one past the largest id, not the token count (a vocabulary may have gaps)
    from tokenizers.models import WordPiece

    from pairbert.runtime.tokenization import PairEncoder

    gapped = PairEncoder(Tokenizer(WordPiece({"[PAD]": 0, "[UNK]": 1, "word": 5}, unk_token="[UNK]")))
    assert gapped.tokenizer.get_vocab_size() == 3 and gapped.id_bound == 6


@pytest.mark.parametrize("damage", ["flip a byte", "truncate"])
@pytest.mark.parametrize("damaged", ["model.optimized.onnx", "model.optimized.onnx.data"])
def test_a_damaged_graph_is_refused_as_a_checksum_mismatch_though_hashed_while_building(
    tiny_bundle, tmp_path, damage, damaged
):
    """The digests (graph and weight file) are computed while the session is built; a file that still parses
    and one that no longer does both fail on the checksum, and no predictor comes back."""
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    data = bytearray((copy / damaged).read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[-10] ^= 0xFF
    (copy / damaged).write_bytes(bytes(data))
    claimed = LEDGER.claimed
    with pytest.raises(BundleError, match=re.escape(damaged) + ": checksum mismatch"):
        PairClassifier.load(copy, variant="optimized", threads=1)
    assert LEDGER.claimed == claimed  # the threads of the refused load were handed back
    if damage == "truncate":  # unchecked, the parser's complaint is what is left to say
        with pytest.raises(BundleError, match="cannot load the graph"):
            PairClassifier.load(copy, variant="optimized", threads=1, verify=False)


def test_cuda_graph_padding_keeps_every_answer(tiny_bundle):
    """What CUDA graph replay feeds the model — batch padded to a power of two, sequence to a bucket — gives
    the unpadded answers (checked with the CPU session: the padding, not the GPU, is under test)."""
    from pairbert.runtime.cuda_graphs import BATCH_BUCKETS, SEQUENCE_BUCKETS
    from pairbert.runtime.shapes import bucket, pad_feed

    clf = PairClassifier.load(tiny_bundle, variant="fp32", device="cpu")
    assert clf.session.graphs is None  # graphs are a CUDA feature only
    rows = varied_pairs(5, seed=4)
    qa, aq = clf.encoder.tokenize([r["question"] for r in rows], [r["answer"] for r in rows])
    feed = clf.encoder.collate(qa, aq)
    b, s = feed["qa_input_ids"].shape
    batch, length = bucket(b, BATCH_BUCKETS), bucket(s, SEQUENCE_BUCKETS)
    assert batch == 8 and length >= s and (length == 16 or length // 2 < s)  # the smallest bucket that fits
    assert bucket(600, SEQUENCE_BUCKETS) is None  # beyond the buckets: run without a graph
    padded = pad_feed(feed, batch, length)
    assert all(v.shape == (batch, length) and v.dtype == np.int64 for v in padded.values())
    np.testing.assert_allclose(clf.session.run(padded)[:b], clf.session.run(feed), atol=1e-5)


@pytest.mark.gpu
def test_cuda_graphs_replay_gives_the_plain_cuda_answers(tiny_bundle):
    rows = varied_pairs(70, seed=5)
    pairs = [(r["question"], r["answer"]) for r in rows]
    graphs = PairClassifier.load(tiny_bundle, device="cuda", variant="fp16")
    plain = PairClassifier.load(tiny_bundle, device="cuda", variant="fp16", cuda_graphs=False)
    assert plain.session.graphs is None and graphs.session.graphs is not None
    for batch_size in (1, 3, 32):  # several buckets; each shape is captured once, then replayed
        for _ in range(3):
            got = graphs.predict(pairs, batch_size=batch_size)
        want = plain.predict(pairs, batch_size=batch_size)
        np.testing.assert_allclose(got.probabilities, want.probabilities, atol=2e-3)
        assert (got.labels == want.labels).mean() >= 0.99
    assert graphs.session.graphs.enabled and graphs.session.graphs.graphs >= 3
