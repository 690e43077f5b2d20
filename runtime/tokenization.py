"""Two-order pair encoding from a `tokenizer.json`, with dynamic padding.

This is the single definition of how a pair becomes model inputs. Training uses it too, so the ids,
masks and type ids the runtime feeds the graph are the ones the model was trained on:

    branch QA: [CLS] question [SEP] answer [SEP]   (type ids 0 … 0 1 … 1)
    branch AQ: [CLS] answer [SEP] question [SEP]

Truncation is longest-first to `max_length`; padding is to the longest pair in the batch, never to
`max_length`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

ORDERS = ("qa", "aq")
FEATURES = ("input_ids", "attention_mask", "token_type_ids")


def input_name(order: str, feature: str) -> str:
    return f"{order}_{feature}"


class PairEncoder:
    def __init__(self, tokenizer: Tokenizer, max_length: int = 128):
        if max_length < 8:
            raise ValueError(f"max_length must be at least 8, got {max_length}")
        self.max_length = max_length
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_length, strategy="longest_first")
        pad_id = tokenizer.token_to_id("[PAD]")
        self.pad_id = 0 if pad_id is None else pad_id

    @classmethod
    def from_file(cls, path: str | Path, max_length: int = 128) -> PairEncoder:
        return cls(Tokenizer.from_file(str(path)), max_length)

    def encode(self, questions: Sequence[str], answers: Sequence[str]) -> dict[str, np.ndarray]:
        """Encode pairs in both orders; returns int64 arrays named like the graph inputs."""
        return self.collate(*self.tokenize(questions, answers))

    def tokenize(self, questions: Sequence[str], answers: Sequence[str]) -> tuple[list, list]:
        """Unpadded encodings of each pair in both orders (QA list, AQ list)."""
        if len(questions) != len(answers):
            raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
        if len(questions) == 1:  # a single pair: skip encode_batch's thread-pool hand-off
            q, a = questions[0], answers[0]
            return [self.tokenizer.encode(q, a)], [self.tokenizer.encode(a, q)]
        qa = self.tokenizer.encode_batch(list(zip(questions, answers, strict=True)))
        aq = self.tokenizer.encode_batch(list(zip(answers, questions, strict=True)))
        return qa, aq

    def collate(self, qa: Sequence, aq: Sequence) -> dict[str, np.ndarray]:
        """Pad a batch of encodings to its longest member."""
        return {**self._pad("qa", qa), **self._pad("aq", aq)}

    def lengths(self, questions: Sequence[str], answers: Sequence[str]) -> list[int]:
        """Token count of each pair (same in both orders), for length bucketing."""
        return [len(e.ids) for e in self.tokenizer.encode_batch(list(zip(questions, answers, strict=True)))]

    def _pad(self, order: str, encodings) -> dict[str, np.ndarray]:
        longest = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), longest), dtype=np.int64)
        types = np.zeros((len(encodings), longest), dtype=np.int64)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = 1
            types[row, :n] = enc.type_ids
        return {
            input_name(order, "input_ids"): ids,
            input_name(order, "attention_mask"): mask,
            input_name(order, "token_type_ids"): types,
        }
