"""The pairs each benchmark runs: fixed-length pairs for batch-1 latency, the built-in mix for throughput."""

from __future__ import annotations

import random

from pairbert.builtin_data import DATA_DIR as DATA
from pairbert.runtime.pair_files import Pair, read_pairs
from pairbert.runtime.tokenization import PairEncoder

LATENCY_TARGETS = {"short": 16, "medium": 64, "long": 128}

FILLER = (
    "The answer depends on the season the place and the person asking but most guides agree on a few "
    "simple rules that keep things safe cheap and easy for a beginner to follow at home every day"
).split()


def builtin_pairs() -> list[Pair]:
    return read_pairs(DATA / "train.jsonl", require_label=True) + validation_pairs()


def validation_pairs() -> list[Pair]:
    return read_pairs(DATA / "validation.jsonl", require_label=True)


def sized_pair(encoder: PairEncoder, target: int) -> tuple[str, str, int]:
    """A real question with an answer grown word by word until the pair is `target` tokens (or truncated)."""
    question = "How long should I boil an egg for a soft yolk?"
    words: list[str] = []
    i = 0
    while True:
        answer = " ".join(words) or "Six."
        n = encoder.lengths([question], [answer])[0]
        if n >= target or n >= encoder.max_length:
            return question, answer, n
        words.append(FILLER[i % len(FILLER)])
        i += 1


def sized_batch(encoder: PairEncoder, target: int, n: int) -> tuple[list[tuple[str, str]], int]:
    """`n` pairs of `sized_pair`'s lengths whose questions all differ: each is the question's words in another
    order (the same tokens, so the same lengths under any tokenizer). pairbert feeds a question shared by
    many pairs once (README, *One question, fed once*); n copies of one pair would measure that instead of n
    pairs' work, which every contestant here does."""
    question, answer, tokens = sized_pair(encoder, target)
    words = question.rstrip("?").split()
    rng = random.Random(0)
    questions = [question]
    while len(questions) < n:  # the first and last words stay: only whole inner words move
        candidate = " ".join(words[:1] + rng.sample(words[1:-1], len(words) - 2) + words[-1:]) + "?"
        if candidate not in questions:
            questions.append(candidate)
    pairs = [(q, answer) for q in questions]
    qa, aq = encoder.tokenize(questions, [answer] * n)
    fed = {encoder.branch_lengths(x, y) for x, y in zip(qa, aq, strict=True)}
    distinct = {tuple(x.ids[: encoder.kept_length(x)]) for x in qa}
    if len(fed) != 1 or len(distinct) != n:
        raise ValueError(
            "the reordered questions are not all distinct at one token count under this tokenizer"
        )
    return pairs, tokens


def mixed_job(n: int = 1000) -> list[tuple[str, str]]:
    """The built-in pairs cycled to n: a realistic spread of lengths."""
    rows = builtin_pairs()
    return [(rows[i % len(rows)].question, rows[i % len(rows)].answer) for i in range(n)]
