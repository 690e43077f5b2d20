"""The towers' cut feed tokenizes each text once on its own where the pair would not be truncated: the fed
tokens must be exactly those of encoding every pair in both orders, whatever the lengths and truncation."""

from __future__ import annotations

import pytest
from helpers import WORDS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer
from tokenizers.processors import TemplateProcessing

from pairbert.runtime.tokenization import PairEncoder

TEXT = st.lists(st.sampled_from(sorted(WORDS) + ["?", "42", "ünï", "x" * 30]), max_size=40).map(" ".join)


def _fed(encoder: PairEncoder, encodings) -> list[tuple[list[int], list[int]]]:
    return [(e.ids[: encoder.kept_length(e)], e.type_ids[: encoder.kept_length(e)]) for e in encodings]


def _both_ways(tokenizer_path, max_length: int) -> tuple[PairEncoder, PairEncoder]:
    fast = PairEncoder.from_file(tokenizer_path, max_length, feed="first-segment")
    pairs = PairEncoder.from_file(tokenizer_path, max_length, feed="first-segment")
    pairs._singles_are_first_segments = False  # the pair path for every pair (what the fast one must equal)
    return fast, pairs


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    pairs=st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=6), max_length=st.sampled_from([8, 9, 16, 40])
)
def test_texts_encoded_alone_feed_what_pairs_feed(tiny_tokenizer, pairs, max_length):
    fast, slow = _both_ways(tiny_tokenizer, max_length)
    questions, answers = [q for q, _ in pairs], [a for _, a in pairs]
    got, want = fast.tokenize(questions, answers), slow.tokenize(questions, answers)
    for order in (0, 1):
        assert _fed(fast, got[order]) == _fed(slow, want[order])
    assert fast.collate(*got).keys() == slow.collate(*want).keys()
    for name, value in fast.collate(*got).items():
        assert (value == slow.collate(*want)[name]).all()


@pytest.mark.parametrize("max_length", [8, 16])
def test_pairs_at_the_truncation_boundary(tiny_tokenizer, max_length):
    """Pairs whose tokens fill max_length exactly take the texts alone; one token more and truncation cuts
    the pair, so it is encoded as a pair: both feed what encoding pairs feeds."""
    fast, slow = _both_ways(tiny_tokenizer, max_length)
    word = "cat"  # one token of the tiny vocabulary, short enough for the singles (SINGLES_CHARS_PER_TOKEN)
    assert len(fast.tokenizer.encode(word, add_special_tokens=False).ids) == 1
    budget = max_length - 3  # [CLS] q [SEP] a [SEP]
    for extra in (0, 1, 2):
        for q_words in range(budget + extra + 1):
            q, a = " ".join([word] * q_words), " ".join([word] * (budget + extra - q_words))
            got, want = fast.tokenize([q], [a]), slow.tokenize([q], [a])
            assert _fed(fast, got[0]) == _fed(slow, want[0]) and _fed(fast, got[1]) == _fed(slow, want[1])
            fits = extra == 0
            assert (got[0][0].type_ids.count(1) == 0) == fits  # texts alone only where nothing is cut


class _Counting:
    """A tokenizer that records its encode / encode_batch calls (with the batch size) and is otherwise the
    real one."""

    def __init__(self, real: Tokenizer):
        self._real, self.calls = real, []

    def encode(self, *args, **kwargs):
        self.calls.append("encode")
        return self._real.encode(*args, **kwargs)

    def encode_batch(self, inputs, *args, **kwargs):
        self.calls.append(f"encode_batch[{len(inputs)}]")
        return self._real.encode_batch(inputs, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._real, name)


def test_short_pairs_are_encoded_once_a_text_and_cut_ones_as_pairs(tiny_tokenizer):
    """A pair that fits: its texts alone. One that truncation cuts: its texts alone first (few characters, so
    it might fit), then as a pair in both orders. One of many characters: as a pair at once."""
    from pairbert.runtime.tokenization import SINGLES_CHARS_PER_TOKEN

    fast, slow = _both_ways(tiny_tokenizer, 12)
    assert fast._singles_are_first_segments  # (its probe encodes: checked before counting)
    fast.tokenizer = counting = _Counting(fast.tokenizer)
    questions = ["what is the capital", "is a cat a dog", "what is the capital of france"]
    answers = ["paris", "no a cat is a cat", "paris is the capital of france, " * 3]
    assert (
        len(questions[2] + answers[2]) > SINGLES_CHARS_PER_TOKEN * (12 - 3) >= len(questions[1] + answers[1])
    )
    got, want = fast.tokenize(questions, answers), slow.tokenize(questions, answers)
    assert _fed(fast, got[0]) == _fed(slow, want[0]) and _fed(fast, got[1]) == _fed(slow, want[1])
    assert [e.type_ids.count(1) == 0 for e in got[0]] == [True, False, False]  # alone, pair, pair
    assert counting.calls == ["encode_batch[4]", "encode_batch[2]", "encode_batch[2]"]
    counting.calls.clear()
    fast.tokenize(questions[:1], answers[:1])  # one pair: two plain encodes, no thread-pool hand-off
    assert counting.calls == ["encode", "encode"]


def test_a_vocabulary_the_probe_cannot_encode_takes_the_pair_path(tmp_path):
    """A vocabulary without the probe's characters and without [UNK]: the probe says no (it does not raise),
    and texts the vocabulary can encode are encoded as pairs, as before."""
    from tokenizers.models import WordPiece

    vocab = {t: i for i, t in enumerate(["[PAD]", "[CLS]", "[SEP]", "what", "is", "paris", "a", "b"])}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = __import__("tokenizers").pre_tokenizers.BertPreTokenizer()
    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 1), ("[SEP]", 2)],
    )
    encoder = PairEncoder(tok, 16, feed="first-segment")
    assert not encoder._singles_are_first_segments
    qa, aq = encoder.tokenize(["what is"], ["paris"])
    assert qa[0].ids[: encoder.kept_length(qa[0])] == [1, 3, 4, 2]
    assert aq[0].ids[: encoder.kept_length(aq[0])] == [1, 5, 2]
    # without "a" or "b" either, the towers' feed is refused with a one-line error, not tokenizers' Exception
    from pairbert.runtime.tokenization import TokenizerError

    bare = Tokenizer(
        WordPiece({t: i for i, t in enumerate(["[PAD]", "[CLS]", "[SEP]", "what"])}, unk_token="[UNK]")
    )
    bare.post_processor = tok.post_processor
    with pytest.raises(TokenizerError, match=r"cannot encode the pair \('a', 'b'\)"):
        PairEncoder(bare, 16, feed="first-segment")


def test_a_template_whose_single_encoding_is_not_the_first_segment_encodes_pairs(tiny_tokenizer):
    """Where a text alone does not encode like the first segment of a pair (here no [CLS] alone), every pair
    is encoded as a pair: the fed tokens stay those the model was trained on."""
    odd = Tokenizer.from_file(str(tiny_tokenizer))
    cls, sep = (odd.token_to_id(t) for t in ("[CLS]", "[SEP]"))
    odd.post_processor = TemplateProcessing(
        single="$A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    encoder = PairEncoder(odd, 32, feed="first-segment")
    assert not encoder._singles_are_first_segments
    qa, aq = encoder.tokenize(["what is the capital"], ["paris"])
    assert qa[0].ids[0] == cls and aq[0].ids[0] == cls
    assert PairEncoder.from_file(tiny_tokenizer, 32, feed="first-segment")._singles_are_first_segments


@pytest.mark.parametrize("feed", ["pair", "first-segment"])
def test_only_the_cut_feed_encodes_texts_alone(tiny_tokenizer, feed):
    """The whole-pair feed (cross pairing) still encodes pairs: its second segment is fed too."""
    encoder = PairEncoder.from_file(tiny_tokenizer, 32, feed=feed)
    qa, _ = encoder.tokenize(["what is the capital"], ["paris"])
    assert (len(set(qa[0].type_ids)) == 2) == (feed == "pair")
