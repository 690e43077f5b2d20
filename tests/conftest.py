"""Fixtures: a tiny WordPiece tokenizer and tiny random dual-order BERTs, built in seconds, no downloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

WORDS = (
    "what is the capital of france paris a spider has eight legs how many who wrote hamlet shakespeare "
    "banana potassium ocean pacific largest rich in are does do you i it and to be not yes no this that "
    "question answer good bad fast slow cat dog red blue green city river mountain water fire earth"
).split()


def build_tokenizer(path: Path) -> Path:
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = sorted(set(WORDS))
    chars = sorted(set("".join(WORDS)) | set("0123456789?.,!'"))
    vocab = {tok: i for i, tok in enumerate(specials + pieces + chars + ["##" + c for c in chars])}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=None, clean_text=True,
                                                handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece()
    tok.save(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory) -> Path:
    return build_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")


@pytest.fixture(scope="session")
def smoke_file() -> Path:
    return Path(__file__).resolve().parents[1] / "training" / "data" / "smoke.jsonl"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
