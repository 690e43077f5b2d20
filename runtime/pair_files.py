"""Read question/answer(/label) pairs from CSV, TSV and JSONL files.

Lives in the runtime (not in training) because both sides need it and the runtime must stay torch-free.
Every malformed row raises `PairFileError` naming the file, the line and the field; nothing is skipped.
A line (JSONL) or a field (CSV/TSV) longer than MAX_LINE_CHARS is refused with its line number, so one huge
row cannot exhaust memory; a UTF-8 byte-order mark is accepted at the start of any format; texts must be
valid Unicode (a JSON "\\ud800" escape makes a lone surrogate, which is refused with its line and field).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import PairbertError

FIELDS = ("question", "answer")
LABEL_FIELD = "label"
FORMATS = ("csv", "tsv", "jsonl")
MAX_LINE_CHARS = 1 << 23  # 8,388,608 characters per JSONL line or CSV/TSV field


class PairFileError(PairbertError, ValueError):
    """A pair file that cannot be read as it is, with where and why."""

    def __init__(self, source: str, line: int | None, field: str | None, problem: str):
        self.source, self.line, self.field, self.problem = source, line, field, problem
        where = source if line is None else f"{source}, line {line}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Pair:
    question: str
    answer: str
    label: int | None = None  # None: unlabeled (prediction input)
    line: int = 0  # where it came from, for error messages downstream


def detect_format(path: str | Path, fmt: str | None = None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise PairFileError(str(path), None, None, f"unknown format {fmt!r}; expected one of {FORMATS}")
        return fmt
    suffix = Path(str(path)).suffix.lower().lstrip(".")
    if suffix in ("json", "jsonl", "ndjson"):
        return "jsonl"
    if suffix in FORMATS:
        return suffix
    raise PairFileError(
        str(path), None, None, "cannot tell the format from the extension; use .csv, .tsv or .jsonl"
    )


def _parse_label(value: object, source: str, line: int) -> int | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, bool):
        raise PairFileError(source, line, LABEL_FIELD, f"expected 0 or 1, got {value!r}")
    if isinstance(value, int) and value in (0, 1):
        return value
    if isinstance(value, float) and value in (0.0, 1.0):
        return int(value)
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value.strip())
    raise PairFileError(source, line, LABEL_FIELD, f"expected 0 or 1 (or empty for unlabeled), got {value!r}")


def _make_pair(row: dict, source: str, line: int, require_label: bool) -> Pair:
    texts = []
    for field in FIELDS:
        if field not in row or row[field] is None:
            raise PairFileError(source, line, field, "missing")
        value = row[field]
        if not isinstance(value, str):
            raise PairFileError(source, line, field, f"expected text, got {type(value).__name__}")
        if not value.strip():
            raise PairFileError(source, line, field, "empty")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise PairFileError(
                source, line, field, f"not valid Unicode ({exc.reason} at position {exc.start})"
            ) from None
        texts.append(value)
    label = _parse_label(row.get(LABEL_FIELD), source, line)
    if require_label and label is None:
        raise PairFileError(source, line, LABEL_FIELD, "missing (training and evaluation need labels)")
    return Pair(texts[0], texts[1], label, line)


def _lines(stream: io.TextIOBase, source: str) -> Iterator[tuple[int, str]]:
    """Numbered lines, each read with a length limit (a 50 MB line is refused, not loaded)."""
    line_no = 0
    while raw := stream.readline(MAX_LINE_CHARS + 2):
        line_no += 1
        if len(raw.rstrip("\r\n")) > MAX_LINE_CHARS:
            raise PairFileError(
                source, line_no, None, f"line longer than {MAX_LINE_CHARS:,} characters; refused"
            )
        yield line_no, raw.lstrip("\ufeff") if line_no == 1 else raw


def _iter_jsonl(stream: io.TextIOBase, source: str, require_label: bool) -> Iterator[Pair]:
    for line_no, raw in _lines(stream, source):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise PairFileError(
                source, line_no, None, f"not valid JSON ({exc.msg} at column {exc.colno})"
            ) from None
        if not isinstance(row, dict):
            raise PairFileError(source, line_no, None, f"expected a JSON object, got {type(row).__name__}")
        yield _make_pair(row, source, line_no, require_label)


def _iter_delimited(
    stream: io.TextIOBase, source: str, delimiter: str, require_label: bool
) -> Iterator[Pair]:
    csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE_CHARS))
    reader = csv.reader(stream, delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise PairFileError(source, 1, None, f"unreadable header ({exc})") from None
    header = [h.strip().lstrip("\ufeff") for h in header]
    for field in FIELDS:
        if field not in header:
            raise PairFileError(source, 1, field, f"column missing from header {header}")
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if "field larger than field limit" in str(exc):
                raise PairFileError(
                    source,
                    reader.line_num,
                    None,
                    f"a field longer than {MAX_LINE_CHARS:,} characters; refused",
                ) from None
            raise PairFileError(source, reader.line_num, None, f"malformed row ({exc})") from None
        line_no = reader.line_num
        if not values or all(not v.strip() for v in values):
            continue
        if len(values) != len(header):
            raise PairFileError(source, line_no, None, f"expected {len(header)} columns, got {len(values)}")
        yield _make_pair(dict(zip(header, values, strict=True)), source, line_no, require_label)


def iter_pairs(path: str | Path, fmt: str | None = None, require_label: bool = False) -> Iterator[Pair]:
    """Yield pairs one by one (streaming). `path` may be '-' for standard input (then give `fmt`)."""
    if str(path) == "-":
        fmt = fmt or "jsonl"
        stream, source = sys.stdin, "<stdin>"
        yield from _iter_stream(stream, source, detect_format("-", fmt), require_label)
        return
    source = str(path)
    fmt = detect_format(path, fmt)
    try:
        handle = open(path, encoding="utf-8", newline="")
    except OSError as exc:
        raise PairFileError(source, None, None, f"cannot open ({exc.strerror})") from None
    with handle:
        try:
            yield from _iter_stream(handle, source, fmt, require_label)
        except UnicodeDecodeError as exc:
            raise PairFileError(source, None, None, f"not UTF-8 text ({exc.reason})") from None


def _iter_stream(stream, source: str, fmt: str, require_label: bool) -> Iterator[Pair]:
    if fmt == "jsonl":
        return _iter_jsonl(stream, source, require_label)
    return _iter_delimited(stream, source, "\t" if fmt == "tsv" else ",", require_label)


def read_pairs(path: str | Path, fmt: str | None = None, require_label: bool = False) -> list[Pair]:
    pairs = list(iter_pairs(path, fmt, require_label))
    if not pairs:
        raise PairFileError(str(path), None, None, "no pairs in file")
    return pairs
