"""Long texts without ASCII whitespace (CJK, URLs, base64-like runs): the chunked long path cuts them into
bounded chunks and still encodes each pair exactly like the tokenizer's own truncation of the full texts."""

from __future__ import annotations

import random

import pytest
from helpers import WORDS
from tokenizers import Tokenizer, normalizers, pre_tokenizers

from pairbert.runtime.tokenization import CHARS_PER_TOKEN_BUDGET, PairEncoder, _TokenCount, split_cut

CJK = "中文字是的一不了人我在有他这为之大来以个国到说们时地也子就道要出下天而" + "\u3400\U00020000\uf900"
CJK_PUNCT = "。，、！？「」『』（）：；《》【】…—～"
KANA = "これはひらがなカタカナです"
URL_PARTS = ["https://", "example.com/", "path?", "q=", "&x=", "%20", "#frag", "_", "-", "~", "abc", "123"]


def _cjk(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(CJK + CJK_PUNCT + KANA) for _ in range(n))


def _urls(rng: random.Random, n: int) -> str:
    parts: list[str] = []
    while sum(map(len, parts)) < n:
        parts.append(rng.choice(URL_PARTS + WORDS))
    return "".join(parts)


def _base64ish(rng: random.Random, n: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(rng.choice(alphabet + "+/") for _ in range(n))


def _mixed(rng: random.Random, n: int) -> str:
    out: list[str] = []
    while sum(map(len, out)) < n:
        kind = rng.random()
        if kind < 0.5:
            out.append(_cjk(rng, rng.randint(1, 300)))
        elif kind < 0.8:
            out.append(rng.choice(WORDS) + rng.choice(["", " ", "\n", "é", "！"]))
        else:
            out.append(_urls(rng, rng.randint(1, 200)))
    return "".join(out)


MAKERS = {"cjk": _cjk, "urls": _urls, "base64ish": _base64ish, "mixed": _mixed}


def _reference(tiny_tokenizer, max_length: int) -> Tokenizer:
    reference = Tokenizer.from_file(str(tiny_tokenizer))
    reference.enable_truncation(max_length, strategy="longest_first")
    return reference


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("max_length", [8, 13, 24])
def test_long_texts_without_whitespace_encode_like_the_full_texts(tiny_tokenizer, kind, max_length):
    rng = random.Random(f"{kind}-{max_length}")
    long_chars = CHARS_PER_TOKEN_BUDGET * max_length
    encoder = PairEncoder.from_file(tiny_tokenizer, max_length)
    reference = _reference(tiny_tokenizer, max_length)
    make = MAKERS[kind]
    # The reference (the tokenizer's own truncation) grows with the product of the lengths: keep it small.
    firsts = [
        make(rng, 12 * long_chars),
        make(rng, 3 * long_chars),
        "what is this?",
        make(rng, 20 * long_chars),
    ]
    seconds = [make(rng, 3 * long_chars), "who wrote hamlet", make(rng, 16 * long_chars), _cjk(rng, 9)]
    assert all(len(f) > long_chars or len(s) > long_chars for f, s in zip(firsts, seconds, strict=True))
    qa, aq = encoder.tokenize(firsts, seconds)
    for i, (f, s) in enumerate(zip(firsts, seconds, strict=True)):
        for got, (a, b) in ((qa[i], (f, s)), (aq[i], (s, f))):
            want = reference.encode(a, b)
            assert got.ids == want.ids, (kind, max_length, i)
            assert got.type_ids == want.type_ids, (kind, max_length, i)


class _Recording:
    """The real counting tokenizer, recording the length of every chunk it is handed."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer, self.chunks = tokenizer, []

    def encode_batch(self, texts, **kwargs):
        self.chunks += [len(t) for t in texts]
        return self.tokenizer.encode_batch(texts, **kwargs)

    def encode(self, *args, **kwargs):
        return self.tokenizer.encode(*args, **kwargs)


@pytest.mark.parametrize(
    "text, usual",
    [
        ("中" * 50_000, {1}),  # cut before an ideograph, right at the nominal end (in steps)
        ("中文。" * 20_000, {1}),
        ("a/" * 30_000, {1, 1 + 1 / 128}),  # cut before ASCII punctuation, at most a character later
        ("x" * 60_000, {2}),  # no split anywhere: a hard cut at the window's end
    ],
)
def test_chunks_of_text_without_whitespace_are_bounded(tiny_tokenizer, text, usual):
    max_length = 16
    step = CHARS_PER_TOKEN_BUDGET * max_length
    encoder = PairEncoder.from_file(tiny_tokenizer, max_length)
    encoder.tokenize(["q"], ["word " * step])  # makes the counting tokenizer
    recording = _Recording(encoder._counter)
    encoder._counter = recording
    count = _TokenCount(encoder, text)
    while not count.done:
        count.advance()
    chunks = recording.chunks
    assert sum(chunks) == len(text) and max(chunks) <= 2 * step
    assert all(c / step in usual for c in chunks[:-1])  # all but the text's rest at its end


def test_only_bert_like_tokenizers_are_cut_at_punctuation_and_ideographs(tiny_tokenizer):
    tokenizer = Tokenizer.from_file(str(tiny_tokenizer))
    cut = split_cut(tokenizer)
    assert cut is not None and cut.match("中") and cut.match("。") and cut.match("/") and cut.match("！")
    assert not cut.match("x") and not cut.match("ａ") and not cut.match("こ") and not cut.match(" ")
    tokenizer.normalizer = normalizers.BertNormalizer(handle_chinese_chars=False)
    cut = split_cut(tokenizer)
    assert cut is not None and cut.match("/") and not cut.match("中")
    tokenizer.normalizer = normalizers.Replace("/", "")  # removes a punctuation character: cuts are unsafe
    assert split_cut(tokenizer) is None
    tokenizer.normalizer = normalizers.BertNormalizer()
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    assert split_cut(tokenizer) is None
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.BertPreTokenizer()]
    )
    assert split_cut(tokenizer) is not None


def test_the_ideographs_cut_at_are_the_ones_the_normalizer_pads():
    """Cuts go before what HF tokenizers' BertNormalizer pads as an ideograph, no more and no less (its
    ranges differ from Google's BERT at U+2B820–U+2B91F): checked code point by code point."""
    from tokenizers import normalizers

    from pairbert.runtime.tokenization import _BERT_CUTS

    pads = normalizers.BertNormalizer(handle_chinese_chars=True, lowercase=False, clean_text=False)
    blocks = [(0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2FFFF)]  # no punctuation
    wrong = [
        hex(c)
        for lo, hi in blocks
        for c in range(lo, hi + 1)
        if (pads.normalize_str(chr(c)) != chr(c)) != bool(_BERT_CUTS[True].fullmatch(chr(c)))
    ]
    assert wrong == []


@pytest.mark.parametrize("query", ["word " * 4_000, "中" * 20_000, "x" * 20_000])
def test_a_long_query_in_many_pairs_is_counted_once_and_only_as_far_as_needed(tiny_tokenizer, query):
    """rank() pairs one query with every text: the query's characters are tokenized once per order, not once
    per pair (1,024 texts with a 20,000-character query took minutes), and a count stops at the chunk that
    settles the cut; the encodings are those of each pair on its own."""
    max_length = 16
    encoder = PairEncoder.from_file(tiny_tokenizer, max_length)
    texts = [f"answer {i}" for i in range(40)]
    alone = [encoder.tokenize([query], [t]) for t in texts]  # each pair on its own: nothing shared
    recording = _Recording(encoder._counter)
    encoder._counter = recording
    qa, aq = encoder.tokenize([query] * len(texts), texts)
    for i, (qa1, aq1) in enumerate(alone):
        assert (qa[i].ids, qa[i].type_ids, aq[i].ids, aq[i].type_ids) == (
            qa1[0].ids,
            qa1[0].type_ids,
            aq1[0].ids,
            aq1[0].type_ids,
        )
    query_chars = sum(recording.chunks) - 2 * sum(map(len, texts))  # both orders count every text once
    assert query_chars <= 2 * len(query)  # once per order, whatever the number of pairs
    step = CHARS_PER_TOKEN_BUDGET * max_length
    if query.startswith(("word", "中")):  # ≥ max_length tokens in the first chunk: one chunk per order
        assert query_chars <= 2 * 2 * step
