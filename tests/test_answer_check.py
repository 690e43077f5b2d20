"""Every load checks that a variant answers pairbert's check pairs as it did where it was exported."""

from __future__ import annotations

import logging
import shutil

import pytest
from helpers import edit_manifest

from pairbert.runtime.answer_check import CHECK_PAIRS, AnswerMismatch
from pairbert.runtime.bundle import BundleError, read_manifest
from pairbert.runtime.predictor import PairClassifier


@pytest.fixture
def bundle(tiny_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    return copy


def test_export_records_the_check_batch_and_every_validated_variants_answers(tiny_bundle):
    manifest = read_manifest(tiny_bundle)
    check = manifest.answer_check
    assert sorted(check["feed"]) == sorted(manifest.contract.input_names)
    assert all(len(rows) == len(CHECK_PAIRS) for rows in check["feed"].values())
    validated = {n for n, v in manifest.variants.items() if v.validated_on != "none"}
    assert set(check["probabilities"]) == validated and "fp32" in validated
    for rows in check["probabilities"].values():
        assert len(rows) == len(CHECK_PAIRS) and all(abs(sum(r) - 1) < 1e-5 for r in rows)


def test_a_variant_answering_differently_here_is_refused_by_name_and_skipped_by_auto(bundle, caplog):
    """As if the exporting machine had computed other answers (or this one computed wrongly): swapping the
    recorded probabilities of `optimized` moves every check pair by far more than fp32 allows."""

    def swap(d):
        d["answer_check"]["probabilities"]["optimized"] = [
            row[::-1] for row in d["answer_check"]["probabilities"]["optimized"]
        ]

    edit_manifest(bundle, swap)
    with pytest.raises(AnswerMismatch, match=r"optimized answers the export's check pairs differently here"):
        PairClassifier.load(bundle, variant="optimized", threads=1)
    with caplog.at_level(logging.WARNING, logger="pairbert.runtime.predictor"):
        clf = PairClassifier.load(bundle, threads=1)  # auto times every candidate: optimized is refused
    assert clf.variant != "optimized" and clf.choice["how"] == "measured"
    assert "optimized skipped (optimized answers the export's check pairs differently" in caplog.text
    clf.close()
    with PairClassifier.load(bundle, threads=1) as again:  # remembered: this CPU answers so every time
        assert again.variant == clf.variant and again.choice["how"] == "measured (cached)"
    with PairClassifier.load(bundle, variant="fp32", threads=1) as clf:  # the others still load
        assert len(clf.predict([("who wrote hamlet?", "shakespeare.")])) == 1


def test_a_bundle_without_answers_loads_unchecked(bundle):
    """Bundles written before the check have no `answer_check`; a variant without answers is not checked."""
    edit_manifest(bundle, lambda d: d.pop("answer_check"))
    assert read_manifest(bundle).answer_check == {}
    with PairClassifier.load(bundle, variant="optimized", threads=1) as clf:
        assert len(clf.predict([("who wrote hamlet?", "shakespeare.")])) == 1


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.pop("probabilities"), "must be an object with exactly 'feed' and 'probabilities'"),
        (lambda c: c["feed"].pop(next(iter(c["feed"]))), "'feed' must give exactly the graph's inputs"),
        (lambda c: c["feed"][next(iter(c["feed"]))].append([1]), "must be a non-empty rectangular list"),
        (lambda c: c["feed"][next(iter(c["feed"]))][0].__setitem__(0, 1.5), "lists of int"),
        (lambda c: c["probabilities"].update(nosuch=c["probabilities"]["fp32"]), "map variants of this"),
        (lambda c: c["probabilities"]["fp32"][0].__setitem__(0, 7.0), r"numbers in \[0, 1\]"),
        (lambda c: c["probabilities"]["fp32"].pop(), r"must be \d+ rows of 2 numbers"),
    ],
)
def test_a_malformed_answer_check_is_refused_naming_the_field(bundle, change, message):
    edit_manifest(bundle, lambda d: change(d["answer_check"]))
    with pytest.raises(BundleError, match=f"field 'answer_check'.*{message}"):
        read_manifest(bundle)


def test_check_ids_outside_the_tokenizer_are_refused_before_any_backend_reads_them(bundle):
    def out_of_vocabulary(d):
        ids = next(k for k in d["answer_check"]["feed"] if k.endswith("input_ids"))
        d["answer_check"]["feed"][ids][0][1] = 10**9

    edit_manifest(bundle, out_of_vocabulary)
    with pytest.raises(BundleError, match=r"field 'answer_check': feed\.\w+input_ids has values outside"):
        PairClassifier.load(bundle, variant="fp32", threads=1)


@pytest.mark.parametrize("shift, refused", [(0.005, False), (0.02, True)])
def test_fp32_graphs_may_move_by_a_hundredth_and_no_more(bundle, shift, refused):
    """The recorded answers of `optimized` moved by `shift` (as another machine's rounding would move them):
    within the fp32 tolerance it loads, beyond it is refused."""

    def move(d):
        rows = d["answer_check"]["probabilities"]["optimized"]
        d["answer_check"]["probabilities"]["optimized"] = [
            [min(1.0, r[0] + shift), max(0.0, r[1] - shift)] if r[0] < 0.5 else [r[0] - shift, r[1] + shift]
            for r in rows
        ]

    edit_manifest(bundle, move)
    if refused:
        with pytest.raises(AnswerMismatch, match=r"max \|Δprob\| 0\.02\d, allowed 0\.01 for fp32"):
            PairClassifier.load(bundle, variant="optimized", threads=1)
    else:
        PairClassifier.load(bundle, variant="optimized", threads=1).close()


def test_a_refused_variant_leaves_no_session_or_private_copy(bundle, tmp_path, monkeypatch):
    import tempfile

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))

    def swap(d):
        d["answer_check"]["probabilities"]["fp32"] = [
            r[::-1] for r in d["answer_check"]["probabilities"]["fp32"]
        ]

    edit_manifest(bundle, swap)
    for _ in range(2):
        with pytest.raises(AnswerMismatch):
            PairClassifier.load(bundle, variant="fp32", threads=1)
    assert list(temp.iterdir()) == []


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: [rows.extend(rows[:1] * 7) for rows in c["feed"].values()], "may hold 8 pairs of"),
        (lambda c: [row.extend([0] * 600) for rows in c["feed"].values() for row in rows], "tokens at most"),
        (
            lambda c: [row.append(0) for row in c["feed"]["qa_input_ids"]],
            "those of one order the same length",
        ),
    ],
)
def test_the_check_batch_is_bounded(bundle, change, message):
    """A manifest cannot make every load (and every candidate `auto` times) run a large batch."""

    def grow(d):
        change(d["answer_check"])
        for rows in d["answer_check"]["probabilities"].values():
            rows.extend(rows[:1] * (len(d["answer_check"]["feed"]["qa_input_ids"]) - len(rows)))

    edit_manifest(bundle, grow)
    with pytest.raises(BundleError, match=f"field 'answer_check'.*{message}"):
        read_manifest(bundle)
