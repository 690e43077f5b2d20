"""Two-order pair encoding from a `tokenizer.json`, with dynamic padding.

This is the single definition of how a pair becomes model inputs. Training uses it too, so the ids,
masks and type ids the runtime feeds the graph are the ones the model was trained on:

    branch QA: [CLS] question [SEP] answer [SEP]   (type ids 0 … 0 1 … 1)
    branch AQ: [CLS] answer [SEP] question [SEP]

Truncation is longest-first to `max_length`; padding is to the longest pair in the batch, never to
`max_length`.

What is fed (`feed`, recorded in a bundle's manifest): "pair" feeds each order whole. "first-segment" feeds
each order only up to its first [SEP] (QA: `[CLS] question [SEP]`, AQ: `[CLS] answer [SEP]`), both orders
padded to one common length: for the "towers" pairing, whose branches attend only within their first segment,
the logits are the same as with the whole pair (the cut tokens were computed and then masked out), for about
half the work. The pair is truncated as a pair first either way, so the segments are the ones it was trained
on.

Memory is bounded by the token budget, whatever the text lengths. The tokenizer's own longest-first
truncation of two long texts builds "overflow" pieces that nobody uses, and their number grows with the
product of the lengths (8,000 words on both sides took 2.75 GB). So a pair whose text is longer than
`8 × max_length` characters takes another path with the same result: each long text is counted in chunks cut
before whitespace (no truncation, no overflow), the longest-first rule picks how many tokens of each side
survive from the exact counts, and only a prefix of each text holding that many tokens is encoded (chunks
of about 8 × max_length characters, so the overflow pieces that truncating the prefix still makes, and that
the pair template combines with each other, stay a few dozen).

Chunks are bounded too (at most 2 × 8 × max_length characters), whatever the text: a chunk ends before the
first ASCII whitespace within 8 × max_length characters after its nominal end, where WordPiece, byte-level
BPE and Metaspace tokenizers split anyway. Text without ASCII whitespace (CJK, URLs, base64) is cut, for a
BERT tokenizer (BertNormalizer + BertPreTokenizer), before the first character in that window that BERT
always splits at: a CJK ideograph (BERT's `_is_chinese_char` ranges, which its normalizer pads with spaces)
or punctuation (ASCII, CJK and fullwidth; its pre-tokenizer isolates each), so the tokens are unchanged.
Failing both, the chunk is cut hard at the window's end. That happens only inside a stretch of 8 ×
max_length characters with no split at all, which WordPiece reads as one word longer than its
max_input_chars_per_word, i.e. one [UNK]: the hard cut counts it as two, so that side's count may be one
token too high per hard cut, and longest-first may then keep slightly fewer tokens of the other side. Only
such pathological text is affected; without the cut it cost memory proportional to the stretch (a
1M-character CJK text took 750 MB and 13 s).
"""

from __future__ import annotations

import copy
import functools
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from .errors import PairbertError, first_line

ORDERS = ("qa", "aq")
FEEDS = ("pair", "first-segment")
PAIRING_FEEDS = {"cross": "pair", "towers": "first-segment"}  # what each model pairing needs fed
FEATURES = ("input_ids", "attention_mask", "token_type_ids")
MIN_MAX_LENGTH, MAX_MAX_LENGTH = 8, 8192
CHARS_PER_TOKEN_BUDGET = 8  # texts up to 8 × max_length characters take the tokenizer's own pair path
# The cut feed encodes a pair's texts alone unless the pair has more characters than this many a token of the
# budget (then truncation almost surely cuts it, and it is encoded as a pair at once): English runs ~4-5
# characters a token with MiniLM's WordPiece, so a pair over 6 a token rarely fits (either way, same ids).
SINGLES_CHARS_PER_TOKEN = 6
# `tokenize` works through a call this much at a time: a tokenizers `Encoding` of a pair that truncation cuts
# holds every overflow piece (~1 MB for two 1,000-character texts), so only one slice's encodings live at once
# (2,000 such pairs peaked at +2.8 GB kept whole, +217 MB sliced: benchmarks/tokenizing_memory.py; smaller
# slices cost the tokenizer more time on cut pairs: fewer pairs for its threads per call). A pair
# counts at most 2 × 8 × max_length characters (the long path bounds the rest); a slice holds at most
# SLICE_PAIRS pairs however short.
SLICE_CHARS, SLICE_PAIRS = 131_072, 1024
_CUT = re.compile(r"[ \t\n\r]")
# BERT's _is_chinese_char ranges: BertNormalizer(handle_chinese_chars) pads each with spaces.
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),  # HF tokenizers' range (Google's BERT: 0x2B820)
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def _bert_split_class(cjk: bool) -> str:
    """A regex character class of what BERT always splits at and no BERT normalizer removes: CJK
    ideographs, ASCII punctuation (BERT's rule: every non-alphanumeric printable), and the punctuation
    (category P*) of the general, CJK and fullwidth punctuation blocks."""
    import unicodedata

    chars = [chr(c) for c in (*range(33, 48), *range(58, 65), *range(91, 97), *range(123, 127))]
    for lo, hi in ((0x2000, 0x206F), (0x3000, 0x303F), (0xFE30, 0xFE4F), (0xFF00, 0xFFEF)):
        chars += [chr(c) for c in range(lo, hi + 1) if unicodedata.category(chr(c)).startswith("P")]
    ranges = "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in _CJK_RANGES)
    return "[" + "".join(re.escape(c) for c in chars) + (ranges if cjk else "") + "]"


_BERT_CUTS = {cjk: re.compile(_bert_split_class(cjk)) for cjk in (False, True)}
_SAFE_NORMALIZERS = {"BertNormalizer", "Lowercase", "StripAccents", "NFC", "NFD", "NFKC", "NFKD"}


def _members(component: dict | None) -> list[dict]:
    """A tokenizer.json normalizer or pre-tokenizer as the list of its parts (a Sequence's members)."""
    if not component:
        return []
    if component.get("type") == "Sequence":
        return [
            m
            for part in component.get("normalizers") or component.get("pretokenizers") or []
            for m in _members(part)
        ]
    return [component]


def split_cut(tokenizer: Tokenizer) -> re.Pattern | None:
    """What long text without whitespace may be cut before, keeping its tokens (see the module notes):
    BERT's punctuation (and CJK ideographs where its normalizer pads them) for a tokenizer that
    pre-tokenizes like BERT and normalizes nothing away; None for any other tokenizer."""
    import json

    config = json.loads(tokenizer.to_str())
    normalizers = _members(config.get("normalizer"))
    if not any(p.get("type") == "BertPreTokenizer" for p in _members(config.get("pre_tokenizer"))):
        return None
    if any(n.get("type") not in _SAFE_NORMALIZERS for n in normalizers):
        return None
    cjk = any(n.get("type") == "BertNormalizer" and n.get("handle_chinese_chars") for n in normalizers)
    return _BERT_CUTS[cjk]


class TokenizerError(PairbertError, ValueError):
    """A tokenizer file or setting that cannot be used."""


def input_name(order: str, feature: str) -> str:
    return f"{order}_{feature}"


def longest_first(n1: int, n2: int, budget: int) -> tuple[int, int]:
    """How many tokens of each side `tokenizers`' longest-first truncation keeps (its rule, exactly: the
    shorter side keeps what it can; when both must shrink, each gets half and the longer side the odd one)."""
    if n1 + n2 <= budget:
        return n1, n2
    swap = n1 > n2
    if swap:
        n1, n2 = n2, n1
    n2 = n1 if n1 > budget else max(n1, budget - n1)
    if n1 + n2 > budget:
        n1 = budget // 2
        n2 = n1 + budget % 2
    return (n2, n1) if swap else (n1, n2)


def check_max_length(max_length: object) -> int:
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)):
        raise TokenizerError(f"max_length must be an int, got {type(max_length).__name__} {max_length!r}")
    if not MIN_MAX_LENGTH <= max_length <= MAX_MAX_LENGTH:
        raise TokenizerError(f"max_length must be in [{MIN_MAX_LENGTH}, {MAX_MAX_LENGTH}], got {max_length}")
    return int(max_length)


def check_feed(feed: object) -> str:
    if feed not in FEEDS:
        raise TokenizerError(f"feed must be one of {FEEDS}, got {feed!r:.60}")
    return feed


def first_segment_length(encoding) -> int:
    """Tokens of the first segment ([CLS] first [SEP] for BERT's pair template): those of type id 0, which
    all lead the encoding wherever the cut feed is allowed (`PairEncoder.cuttable`)."""
    return encoding.type_ids.count(0)


class Tokens:
    """One order's tokens of one pair, as `PairEncoder.tokenize` hands them out: its ids and type ids (lists,
    as an `Encoding` has them), nothing else. An `Encoding` also holds token strings, offsets and, when
    truncation cut the pair, every overflow piece: ~1 MB for two 1,000-character texts, ~12 kB as Tokens."""

    __slots__ = ("ids", "type_ids")

    def __init__(self, ids: list[int], type_ids: list[int]):
        self.ids, self.type_ids = ids, type_ids

    @classmethod
    def of(cls, encoding: Encoding) -> Tokens:
        return cls(encoding.ids, encoding.type_ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"Tokens(ids={self.ids}, type_ids={self.type_ids})"


class PairEncoder:
    """Tokenizes pairs in both orders and pads them into the graph's inputs. `feed`: what each order gets
    (whole pairs, or the first segment only); `apart`: each order padded to its own longest member (graphs
    whose orders have their own sequence axes, runtime/contract.py) instead of both to one length."""

    def __init__(self, tokenizer: Tokenizer, max_length: int = 128, feed: str = "pair", apart: bool = False):
        self.max_length = check_max_length(max_length)
        self.feed = check_feed(feed)
        self.apart = bool(apart)
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_length, strategy="longest_first")
        pad_id = tokenizer.token_to_id("[PAD]")
        self.pad_id = 0 if pad_id is None else pad_id
        self._budget = self.max_length - tokenizer.num_special_tokens_to_add(is_pair=True)
        self._single_specials = tokenizer.num_special_tokens_to_add(is_pair=False)
        self._long_chars = CHARS_PER_TOKEN_BUDGET * self.max_length
        self._counter = None  # a copy without truncation, made on the first long text
        self._split_cut = None  # what text without whitespace may be cut before (split_cut), with it
        self._check_cut()

    @functools.cached_property
    def id_bound(self) -> int:
        """One past the largest id the tokenizer gives (not its token count: a vocabulary may have gaps)."""
        return max(self.tokenizer.get_vocab(with_added_tokens=True).values()) + 1

    def _check_cut(self) -> None:
        if self.feed != "pair" and not self.cuttable():
            raise TokenizerError(
                "feed 'first-segment' needs a pair template whose type ids are 0 up to the end of the first "
                "segment and non-zero after it (BERT's [CLS] A [SEP] B:1 [SEP]:1); this one is not"
            )

    def cuttable(self) -> bool:
        """Whether cutting after the first segment keeps exactly the tokens a towers branch reads (those of
        type id 0): the pair template's type ids must be 0 … 0 then non-zero only."""
        try:
            types = self.tokenizer.encode("a", "b").type_ids
        except Exception as exc:  # tokenizers' bare Exception: a vocabulary without "a" or "b" and no [UNK]
            raise TokenizerError(
                f"the tokenizer cannot encode the pair ('a', 'b') ({first_line(exc)})"
            ) from None
        first = types.count(0)
        return first > 0 and not any(types[:first])

    def for_pairing(self, pairing: str) -> PairEncoder:
        """This encoder with the feed a model pairing needs: the towers' cut feed where the template allows
        it (whole pairs otherwise: the same results, more work), whole pairs for the cross pairing."""
        feed = PAIRING_FEEDS[pairing]
        return self.with_feed(feed if feed == "pair" or self.cuttable() else "pair")

    def with_feed(self, feed: str) -> PairEncoder:
        """The same tokenizer and settings with another feed."""
        encoder = copy.copy(self)
        encoder.feed = check_feed(feed)
        encoder._check_cut()
        return encoder

    def with_apart(self, apart: bool) -> PairEncoder:
        """The same tokenizer and settings, each order padded to its own length (True) or both to one."""
        encoder = copy.copy(self)
        encoder.apart = bool(apart)
        return encoder

    @classmethod
    def from_file(
        cls, path: str | Path, max_length: int = 128, feed: str = "pair", apart: bool = False
    ) -> PairEncoder:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenizerError(f"{path}: cannot read the tokenizer file ({exc})") from None
        return cls.from_str(text, max_length, where=str(path), feed=feed, apart=apart)

    @classmethod
    def from_str(
        cls,
        text: str | bytes,
        max_length: int = 128,
        where: str = "tokenizer",
        feed: str = "pair",
        apart: bool = False,
    ) -> PairEncoder:
        """From the text of a tokenizer.json (a bundle hands over the bytes it verified)."""
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TokenizerError(f"{where}: not UTF-8 ({exc.reason})") from None
        try:
            tokenizer = Tokenizer.from_str(text)
        except Exception as exc:  # tokenizers raises a bare Exception for anything it cannot parse
            raise TokenizerError(f"{where}: not a tokenizers tokenizer.json ({first_line(exc)})") from None
        return cls(tokenizer, max_length, feed, apart)

    def encode(self, questions: Sequence[str], answers: Sequence[str]) -> dict[str, np.ndarray]:
        """Encode pairs in both orders; returns int64 arrays named like the graph inputs."""
        return self.collate(*self.tokenize(questions, answers))

    def tokenize(self, questions: Sequence[str], answers: Sequence[str]) -> tuple[list, list]:
        """Unpadded `Tokens` of each pair in both orders (QA list, AQ list), to be read up to `kept_length`:
        for the cut feed a pair's tokens may be its text's own (`_tokenize_singles`), so hand them only to
        a predictor of the same feed. Memory: the Tokens, and one slice's encodings at once (SLICE_CHARS)."""
        questions, answers = list(questions), list(answers)  # indexed by position below
        if len(questions) != len(answers):
            raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
        singles = self.feed == "first-segment" and self._singles_are_first_segments
        texts = self._long_texts(questions, answers)  # a long text repeated across slices is counted once
        qa: list[Tokens] = []
        aq: list[Tokens] = []
        try:
            for start, stop in self._slices(questions, answers):
                q, a = questions[start:stop], answers[start:stop]
                got = self._tokenize_singles(q, a, texts) if singles else self._tokenize_pairs(q, a, texts)
                qa += map(Tokens.of, got[0])
                aq += map(Tokens.of, got[1])
            return qa, aq
        except Exception as exc:
            if type(exc) is not Exception:  # ours or Python's (MemoryError, a bug): not the tokenizer's
                raise
            # tokenizers raises a bare Exception (e.g. a vocabulary without [UNK])
            raise TokenizerError(f"the tokenizer cannot encode these texts ({first_line(exc)})") from None

    def _slices(self, questions: list[str], answers: list[str]):
        """(start, stop) of consecutive slices of at most SLICE_PAIRS pairs and about SLICE_CHARS characters
        (at least one pair each), each pair counted at most 2 × 8 × max_length characters."""
        cap = 2 * self._long_chars
        start, chars = 0, 0
        for i, (q, a) in enumerate(zip(questions, answers, strict=True)):
            size = min(len(q), cap) + min(len(a), cap)
            if i > start and (chars + size > SLICE_CHARS or i - start >= SLICE_PAIRS):
                yield start, i
                start, chars = i, 0
            chars += size
        if start < len(questions):
            yield start, len(questions)

    def _tokenize_pairs(self, questions: Sequence[str], answers: Sequence[str], texts: _LongTexts) -> tuple:
        qa = self._encode_order(questions, answers, texts)  # the long-text work shared by both orders
        return qa, self._encode_order(answers, questions, texts)

    def _tokenize_singles(self, questions: Sequence[str], answers: Sequence[str], texts: _LongTexts) -> tuple:
        """The cut feed's encodings from each text encoded once on its own: a pair that fits max_length
        untruncated has its first segment in either order equal to its text's own encoding (checked for the
        template: `_singles_are_first_segments`), so only pairs that truncation cuts are encoded as pairs:
        half the tokenizer's work of encoding every pair in both orders. A pair of more characters than
        SINGLES_CHARS_PER_TOKEN a token of the budget would almost surely be cut (its texts encoded twice):
        it goes to the pair path at once. Either path feeds the same ids; the rule only saves time."""
        n = len(questions)
        limit = SINGLES_CHARS_PER_TOKEN * self._budget
        short: list[int] = []
        cut: list[int] = []  # pairs truncation cuts: of many characters (likely), or found so below
        for i in range(n):
            (cut if len(questions[i]) + len(answers[i]) > limit else short).append(i)
        if len(short) == 1:  # skip encode_batch's thread-pool hand-off
            encoded = [self.tokenizer.encode(questions[short[0]]), self.tokenizer.encode(answers[short[0]])]
        else:
            encoded = self.tokenizer.encode_batch([questions[i] for i in short] + [answers[i] for i in short])
        qa: list = [None] * n
        aq: list = [None] * n
        for j, i in enumerate(short):
            q, a = encoded[j], encoded[len(short) + j]
            if len(q) + len(a) - 2 * self._single_specials <= self._budget:
                qa[i], aq[i] = q, a
            else:  # longest-first truncation of the pair cuts it (a text cut alone is cut the same way)
                cut.append(i)
        if cut:
            cut.sort()
            cut_qa, cut_aq = self._tokenize_pairs(
                [questions[i] for i in cut], [answers[i] for i in cut], texts
            )
            for j, i in enumerate(cut):
                qa[i], aq[i] = cut_qa[j], cut_aq[j]
        return qa, aq

    @functools.cached_property
    def _singles_are_first_segments(self) -> bool:
        """Whether a text encoded alone gives the tokens and type ids of its first segment in an uncut pair
        (BERT's templates: [CLS] A [SEP] and [CLS] A [SEP] B:1 [SEP]:1), in both orders."""
        probes = ("a?", "b")  # a pair that fits the smallest max_length (MIN_MAX_LENGTH) uncut
        for first, second in (probes, probes[::-1]):
            try:
                pair, alone = self.tokenizer.encode(first, second), self.tokenizer.encode(first)
                bare = self.tokenizer.encode(first, add_special_tokens=False)
            except Exception:  # a vocabulary without these characters (and no [UNK]): pairs, as before
                return False
            n = first_segment_length(pair)
            if not bare.ids or (pair.ids[:n], pair.type_ids[:n]) != (alone.ids, alone.type_ids):
                return False  # (a probe that encodes to nothing would check the special tokens only)
        return True

    def lengths(self, questions: Sequence[str], answers: Sequence[str]) -> list[int]:
        """Token count of each pair (same in both orders)."""
        questions, answers = list(questions), list(answers)
        texts = self._long_texts(questions, answers)
        return [
            len(e.ids)
            for start, stop in self._slices(questions, answers)
            for e in self._encode_order(questions[start:stop], answers[start:stop], texts)
        ]

    def kept_length(self, encoding) -> int:
        """Tokens of one order's encoding this encoder feeds (all of them, or the first segment)."""
        return len(encoding.ids) if self.feed == "pair" else first_segment_length(encoding)

    def fed_length(self, qa, aq) -> int:
        """Tokens fed for one pair's encodings (before padding): what a batch's cost grows with."""
        return max(self.kept_length(qa), self.kept_length(aq))

    def branch_lengths(self, qa, aq) -> tuple[int, int]:
        """What each branch computes on for one pair fed alone (QA, AQ): each order's own tokens with
        `apart`, else both at the longer one's (for counting the work done)."""
        kept = self.kept_length(qa), self.kept_length(aq)
        return kept if self.apart else (max(kept), max(kept))

    def fed_lengths(self, questions: Sequence[str], answers: Sequence[str]) -> list[int]:
        """`fed_length` of each pair, for length bucketing."""
        return [self.fed_length(a, b) for a, b in zip(*self.tokenize(questions, answers), strict=True)]

    def _long_pairs(self, firsts: Sequence[str], seconds: Sequence[str]) -> list[int]:
        """Indices of the pairs that take the long path (either text over 8 × max_length characters)."""
        limit = self._long_chars
        pairs = enumerate(zip(firsts, seconds, strict=True))
        return [i for i, (f, s) in pairs if len(f) > limit or len(s) > limit]

    def _long_texts(self, questions: Sequence[str], answers: Sequence[str]) -> _LongTexts:
        """The long-text work of one call, for both orders (a text's count and prefix do not depend on its
        side): a long text in many pairs (rank's query) is counted and cut once; others are not kept."""
        seen = Counter(t for i in self._long_pairs(questions, answers) for t in (questions[i], answers[i]))
        return _LongTexts(self, {t for t, n in seen.items() if n > 1})

    def _encode_order(self, firsts: Sequence[str], seconds: Sequence[str], texts: _LongTexts) -> list:
        long = self._long_pairs(firsts, seconds)
        if not long:
            if len(firsts) == 1:  # a single pair: skip encode_batch's thread-pool hand-off
                return [self.tokenizer.encode(firsts[0], seconds[0])]
            return self.tokenizer.encode_batch(list(zip(firsts, seconds, strict=True)))
        out = [None] * len(firsts)
        short = sorted(set(range(len(firsts))) - set(long))
        if short:
            encoded = self.tokenizer.encode_batch([(firsts[i], seconds[i]) for i in short])
            for i, enc in zip(short, encoded, strict=True):
                out[i] = enc
        for i in long:
            out[i] = self._encode_long(firsts[i], seconds[i], texts)
        return out

    def _encode_long(self, first: str, second: str, texts: _LongTexts):
        """The pair encoding of the full texts, built from bounded prefixes (see the module notes)."""
        if self._counter is None:  # set up whole before it is published: a server's threads share the encoder
            counter = Tokenizer.from_str(self.tokenizer.to_str())
            counter.no_truncation()
            counter.no_padding()
            self._split_cut = split_cut(self.tokenizer)
            self._counter = counter
        a, b = texts.count(first), texts.count(second)
        half = self._budget // 2
        while not (a.done and b.done):
            if self._budget % 2 == 0 and a.total > half and b.total > half:
                break  # both sides shrink to budget/2 whichever is longer
            if a.done and b.total > a.total or b.done and a.total > b.total:
                break  # which side is longer is known; the longer one's exact length does not matter
            (a if b.done or (not a.done and a.total <= b.total) else b).advance()
        k1, k2 = longest_first(a.total, b.total, self._budget)
        e1, e2 = texts.prefix_encoding(a), texts.prefix_encoding(b)
        e1.truncate(k1)
        e2.truncate(k2)
        return self.tokenizer.post_process(e1, e2, add_special_tokens=True)

    def collate(self, qa: Sequence, aq: Sequence) -> dict[str, np.ndarray]:
        """Pad a batch of encodings, each cut to what this encoder feeds, to its longest member: each order
        to its own longest with `apart`, else both orders to one length."""
        qa_n, aq_n = [self.kept_length(e) for e in qa], [self.kept_length(e) for e in aq]
        qa_len, aq_len = max(qa_n), max(aq_n)
        if not self.apart:
            qa_len = aq_len = max(qa_len, aq_len)
        return {**self._pad("qa", qa, qa_n, qa_len), **self._pad("aq", aq, aq_n, aq_len)}

    def _pad(self, order: str, encodings, kept: list[int], longest: int) -> dict[str, np.ndarray]:
        ids = np.full((len(encodings), longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), longest), dtype=np.int64)
        types = np.zeros((len(encodings), longest), dtype=np.int64)
        for row, (enc, n) in enumerate(zip(encodings, kept, strict=True)):
            ids[row, :n] = enc.ids[:n]
            mask[row, :n] = 1
            types[row, :n] = enc.type_ids[:n]
        return {
            input_name(order, "input_ids"): ids,
            input_name(order, "attention_mask"): mask,
            input_name(order, "token_type_ids"): types,
        }


def chunk_end(text: str, limit: int, window: int, split: re.Pattern | None) -> int:
    """Where a chunk whose nominal end is `limit` ends: before the first ASCII whitespace in the `window`
    characters from `limit`, else before the first `split` character there, else hard at the window's end
    (the module notes say what a hard cut may change); the text's end if that comes first."""
    stop = limit + window
    if stop >= len(text):
        found = _CUT.search(text, limit) if limit < len(text) else None
        return found.start() if found else len(text)
    found = _CUT.search(text, limit, stop)
    if found is None and split is not None:
        found = split.search(text, limit, stop)
    return found.start() if found else stop


class _LongTexts:
    """One tokenize call's long-text work, by text: a text that comes in many pairs (the query of a rank
    over 1,024 texts) is counted and its prefix encoded once, not once per pair. Sharing a _TokenCount is
    safe: _encode_long's result does not depend on how far past its stopping point a count has gone."""

    def __init__(self, encoder: PairEncoder, repeated: set[str]):
        self.encoder, self.repeated = encoder, repeated  # only these are kept (memory: ~50 kB a prefix)
        self.counts: dict[str, _TokenCount] = {}
        self.prefixes: dict[str, Encoding] = {}  # by text: a count's prefix is fixed once it is made

    def count(self, text: str) -> _TokenCount:
        if text not in self.repeated:
            return _TokenCount(self.encoder, text)
        if text not in self.counts:
            self.counts[text] = _TokenCount(self.encoder, text)
        return self.counts[text]

    def prefix_encoding(self, count: _TokenCount) -> Encoding:
        """The encoding of the count's prefix, a copy of its own: the caller truncates it in place."""
        text = count.text
        if text not in self.repeated:
            return self.encoder._counter.encode(count.prefix(), add_special_tokens=False)
        if text not in self.prefixes:
            self.prefixes[text] = self.encoder._counter.encode(count.prefix(), add_special_tokens=False)
        return Encoding.merge([self.prefixes[text]], growing_offsets=False)


class _TokenCount:
    """Counts a text's tokens chunk by chunk (chunks of 8 to 16 × max_length characters, see chunk_end), as
    far as asked: `total` is exact once `done`, a lower bound before. `prefix()` holds ≥ max_length tokens.
    Each advance takes twice the chunks of the one before (1, 2, 4, ... 16): a prefix usually lies in the
    first chunk, and which of two long texts is longer is usually known after one chunk each."""

    def __init__(self, encoder: PairEncoder, text: str):
        self.encoder, self.text = encoder, text
        self.pos, self.total, self.prefix_end = 0, 0, None
        self.chunks = 1
        self.advance()
        while not self.done and self.prefix_end is None:
            self.advance()

    @property
    def done(self) -> bool:
        return self.pos >= len(self.text)

    def prefix(self) -> str:
        return self.text[: self.prefix_end or len(self.text)]

    def advance(self) -> None:
        text, step = self.text, self.encoder._long_chars
        chunks, self.chunks = self.chunks, min(16, 2 * self.chunks)
        cuts = []
        while self.pos < len(text) and len(cuts) < chunks:
            end = chunk_end(text, self.pos + step, step, self.encoder._split_cut)
            cuts.append((self.pos, end))
            self.pos = end
        encodings = self.encoder._counter.encode_batch([text[i:j] for i, j in cuts], add_special_tokens=False)
        for (_, end), enc in zip(cuts, encodings, strict=True):
            self.total += len(enc.ids)
            if self.prefix_end is None and self.total >= self.encoder.max_length:
                self.prefix_end = end
