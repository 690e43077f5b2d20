"""Property tests (hypothesis, bounded and derandomized so CI is deterministic): whatever the predictor API
and the pair-file readers are handed, they answer or raise their own error (PredictorError, PairFileError),
never another exception; long texts tokenize exactly like the tokenizer's own truncation of the full texts."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers import WORDS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pairbert.runtime import PairClassifier, PredictorError
from pairbert.runtime.pair_files import PairFileError, read_pairs
from pairbert.runtime.tokenization import PairEncoder

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

any_char = st.characters(blacklist_categories=())  # surrogates included
words = st.lists(st.sampled_from(WORDS + ["?", "!", "\n", " "]), max_size=30).map(" ".join)
texts = st.one_of(st.text(any_char, max_size=60), words)
junk = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=True),
    st.binary(max_size=4),
    st.booleans(),
    st.lists(st.text(max_size=3), max_size=3),
)
pair = st.one_of(st.tuples(texts, texts), st.lists(texts, max_size=3), st.tuples(texts, junk), junk)
batch_size = st.one_of(st.integers(-2, 40), st.sampled_from([np.int64(3), np.int32(1), 2.0, True, None, "8"]))


@pytest.fixture(scope="module")
def clf(tiny_bundle):
    return PairClassifier.load(tiny_bundle, variant="fp32")


def _valid(p) -> bool:
    def ok(t):
        if not isinstance(t, str):
            return False
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True

    return isinstance(p, (tuple, list)) and len(p) == 2 and ok(p[0]) and ok(p[1])


def _valid_size(b) -> bool:
    return isinstance(b, (int, np.integer)) and not isinstance(b, bool) and b >= 1


@FUZZ
@given(pairs=st.one_of(st.lists(pair, max_size=6), junk, st.text(max_size=5)), size=batch_size)
def test_predict_answers_or_raises_predictor_error(clf, pairs, size):
    expect_ok = isinstance(pairs, list) and all(_valid(p) for p in pairs) and _valid_size(size)
    try:
        result = clf.predict(pairs, batch_size=size)
    except PredictorError:
        assert not expect_ok
        return
    assert expect_ok
    assert len(result) == len(pairs) and result.probabilities.shape == (len(pairs), 2)
    assert np.isfinite(result.probabilities).all()
    assert np.allclose(result.probabilities.sum(-1), 1.0, atol=1e-5)
    assert (result.labels == result.probabilities.argmax(-1)).all()
    if pairs:  # the same answer one by one: results never depend on the company a pair keeps
        first = clf.predict([pairs[0]]).probabilities[0]
        assert np.abs(first - result.probabilities[0]).max() <= 1e-5


@FUZZ
@given(
    questions=st.one_of(st.lists(texts, max_size=4), junk),
    answers=st.one_of(st.lists(texts, max_size=4), junk),
)
def test_predict_qa_answers_or_raises_predictor_error(clf, questions, answers):
    try:
        result = clf.predict_qa(questions, answers)
    except PredictorError:
        return
    assert len(result) == len(questions) == len(answers)


json_junk = st.one_of(
    st.none(),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.lists(st.text(max_size=3), max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)
json_value = st.one_of(texts, json_junk, st.integers(0, 1), st.sampled_from(["0", "1", "", " "]))
row = st.dictionaries(st.sampled_from(["question", "answer", "label", "other"]), json_value, max_size=4)


def _jsonl(rows, extra: bytes) -> bytes:
    lines = [json.dumps(r, ensure_ascii=True) for r in rows]
    return ("\n".join(lines) + "\n").encode() + extra


def _delimited(rows, delimiter: str) -> bytes:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter)
    for r in rows:
        writer.writerow(r)
    return buf.getvalue().encode("utf-8", "surrogatepass")


cells = st.lists(
    st.lists(st.one_of(texts, st.sampled_from(["question", "answer", "label", "0", "1"])), max_size=4),
    max_size=6,
)


@FUZZ
@given(
    kind=st.sampled_from(["jsonl", "csv", "tsv", "raw-jsonl", "raw-csv"]),
    rows=st.lists(row, max_size=5),
    table=cells,
    raw=st.binary(max_size=200),
    require_label=st.booleans(),
    bom=st.booleans(),
)
def test_pair_readers_read_or_raise_pair_file_error(kind, rows, table, raw, require_label, bom):
    if kind == "jsonl":
        data, suffix = _jsonl(rows, raw[:8]), ".jsonl"
    elif kind in ("csv", "tsv"):
        header = [["question", "answer", "label"]] if table and rows else []
        data, suffix = _delimited(header + table, "," if kind == "csv" else "\t"), "." + kind
    else:
        data, suffix = raw, ".jsonl" if kind == "raw-jsonl" else ".csv"
    if bom:
        data = b"\xef\xbb\xbf" + data
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"pairs{suffix}"
        path.write_bytes(data)
        try:
            pairs = read_pairs(path, require_label=require_label)
        except PairFileError as exc:
            assert str(path) in str(exc)
            return
    assert pairs
    for p in pairs:
        assert (
            isinstance(p.question, str)
            and p.question.strip()
            and isinstance(p.answer, str)
            and p.answer.strip()
        )
        p.question.encode("utf-8"), p.answer.encode("utf-8")  # valid Unicode
        assert p.label in ((0, 1) if require_label else (None, 0, 1)) and p.line >= 1


long_text = st.builds(
    lambda words, n: (" ".join(words) + " ") * n,
    st.lists(st.sampled_from(WORDS + ["!", "?", "\n", "é", "x" * 30]), min_size=1, max_size=12),
    st.integers(1, 60),
)


@FUZZ
@given(max_length=st.integers(8, 24), first=st.one_of(texts, long_text), second=st.one_of(texts, long_text))
def test_long_texts_tokenize_like_the_full_texts(tiny_tokenizer, max_length, first, second):
    from tokenizers import Tokenizer

    for t in (first, second):
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:
            return  # the predictor refuses these before tokenizing
    encoder = PairEncoder.from_file(tiny_tokenizer, max_length)
    reference = Tokenizer.from_file(str(tiny_tokenizer))
    reference.enable_truncation(max_length, strategy="longest_first")
    qa, aq = encoder.tokenize([first], [second])
    assert qa[0].ids == reference.encode(first, second).ids
    assert aq[0].ids == reference.encode(second, first).ids
    assert qa[0].type_ids == reference.encode(first, second).type_ids
