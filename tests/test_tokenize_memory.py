"""`tokenize` keeps only each pair's ids and type ids (a tokenizers Encoding of a cut pair holds every
overflow piece, ~1 MB for two 1,000-character texts), and works through a call a bounded slice at a time,
with the same tokens whatever the slices."""

from __future__ import annotations

import pytest
from helpers import WORDS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pairbert.runtime import tokenization
from pairbert.runtime.tokenization import FEEDS, PairEncoder, Tokens

TEXT = st.lists(st.sampled_from(sorted(WORDS) + ["?", "42", "x" * 30]), max_size=60).map(" ".join)


def _kept(encodings) -> list[tuple[list[int], list[int]]]:
    return [(e.ids, e.type_ids) for e in encodings]


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    pairs=st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=12),
    slice_chars=st.integers(1, 300),
    feed=st.sampled_from(FEEDS),
)
def test_slicing_a_call_changes_no_token(tiny_tokenizer, pairs, slice_chars, feed):
    encoder = PairEncoder.from_file(tiny_tokenizer, 16, feed=feed)
    questions, answers = [q for q, _ in pairs], [a for _, a in pairs]
    whole = encoder.tokenize(questions, answers)  # one slice: these pairs are far under SLICE_CHARS
    whole_lengths = encoder.lengths(questions, answers)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tokenization, "SLICE_CHARS", slice_chars)
        sliced = encoder.tokenize(questions, answers)
        assert encoder.lengths(questions, answers) == whole_lengths
    assert _kept(sliced[0]) == _kept(whole[0]) and _kept(sliced[1]) == _kept(whole[1])


def test_slices_cover_the_call_within_both_bounds(tiny_tokenizer, monkeypatch):
    monkeypatch.setattr(tokenization, "SLICE_CHARS", 1000)
    monkeypatch.setattr(tokenization, "SLICE_PAIRS", 7)
    encoder = PairEncoder.from_file(tiny_tokenizer, 16)
    cap = 2 * 8 * 16  # a pair counts at most 2 × 8 × max_length characters a side
    questions = ["cat"] * 20 + ["cat " * 100] * 9 + ["dog " * 1000] * 3 + ["a"] * 5
    answers = ["dog"] * 20 + ["a"] * 9 + ["cat " * 1000] * 3 + ["b"] * 5
    slices = list(encoder._slices(questions, answers))
    assert slices[0][0] == 0 and slices[-1][1] == len(questions)
    assert all(a[1] == b[0] for a, b in zip(slices, slices[1:], strict=False))  # contiguous, in order
    for start, stop in slices:
        chars = sum(min(len(questions[i]), cap) + min(len(answers[i]), cap) for i in range(start, stop))
        assert stop - start <= 7
        assert chars <= 1000 or stop - start == 1  # a pair over the budget alone is a slice of its own
    assert [stop - start for start, stop in slices][:2] == [7, 7]  # short pairs: by count
    assert len(slices) > len(questions) / 7  # the long pairs: by characters


def test_tokenize_hands_out_ids_and_type_ids_only(tiny_tokenizer):
    encoder = PairEncoder.from_file(tiny_tokenizer, 16, feed="first-segment")
    question, answer = " ".join(sorted(WORDS)[:40]), " ".join(sorted(WORDS)[-40:])
    assert encoder.tokenizer.encode(question, answer).overflowing  # what an Encoding would have held
    for order in encoder.tokenize([question, "cat"], [answer, "dog"]):
        for tokens in order:
            assert type(tokens) is Tokens and not hasattr(tokens, "overflowing")
            assert isinstance(tokens.ids, list) and len(tokens) == len(tokens.ids) == len(tokens.type_ids)
