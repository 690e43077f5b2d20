"""Read question/answer(/label) pairs from CSV, TSV and JSONL files.

Lives in the runtime (not in training) because both sides need it and the runtime must stay torch-free.
Every malformed row raises `PairFileError` naming the file, the line and the field; nothing is skipped.
A line (JSONL) or a field (CSV/TSV) longer than MAX_LINE_CHARS is refused with its line number, so one huge
row cannot exhaust memory; a UTF-8 byte-order mark is accepted at the start of any format; texts must be
valid Unicode (a JSON "\\ud800" escape makes a lone surrogate, which is refused with its line and field), and
bytes that are not UTF-8 are refused with their line, worded the same for a file and for standard input.
A CSV/TSV header that names question, answer or label twice is refused (which one would be meant?), and so
is a JSONL row that gives one of them twice; other repeated columns or keys (e.g. the empty names of trailing
commas) are ignored.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import PairbertError, first_line

FIELDS = ("question", "answer")
LABEL_FIELD = "label"
FORMATS = ("csv", "tsv", "jsonl")
MAX_LINE_CHARS = 1 << 23  # 8,388,608 characters per JSONL line or CSV/TSV field
_CR_ONLY = re.compile(r"(?<=\r)(?!\n)")  # just after a \r that ends a line by itself
CSV_LINE_CHARS = 3 * MAX_LINE_CHARS  # a CSV/TSV line holds a question, an answer and a label


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
    if isinstance(value, str) and value.strip() in ("0", "1", "0.0", "1.0"):  # pandas writes 1.0 beside NaN
        return int(float(value.strip()))
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


def _lines(stream: BinaryIO, source: str, max_chars: int = MAX_LINE_CHARS) -> Iterator[tuple[int, str]]:
    """Numbered lines decoded one by one (so a bad byte is named by its line), each read with a length limit
    (a 50 MB line is refused, not loaded). Lines end at \\n, \\r\\n or a bare \\r
    (each line keeps its end, as the csv module wants)."""
    limit = 4 * max_chars + 8  # bytes: a longer line without its end holds more than max_chars characters
    line_no = 0
    while raw := stream.readline(limit):
        line_no += 1
        if len(raw) >= limit and not raw.endswith(b"\n"):
            raise PairFileError(source, line_no, None, f"line longer than {max_chars:,} characters; refused")
        if line_no == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PairFileError(
                source, line_no, None, f"not UTF-8 text ({exc.reason} at byte {exc.start + 1} of the line)"
            ) from None
        for piece in _CR_ONLY.split(text) if "\r" in text else (text,):  # old Mac / Excel "CSV (Macintosh)"
            if piece:
                if len(piece.rstrip("\r\n")) > max_chars:
                    raise PairFileError(
                        source, line_no, None, f"line longer than {max_chars:,} characters; refused"
                    )
                yield line_no, piece
                line_no += piece.endswith("\r")  # a bare \r ended this line: the next piece is another


class _Row(dict):
    """A JSON object as read, with the pair fields it gives more than once (`repeated`)."""

    repeated: tuple[str, ...] = ()


def _row(items: list[tuple[str, object]]) -> _Row:
    row = _Row(items)
    if len(row) < len(items):
        keys = [key for key, _ in items]
        row.repeated = tuple(f for f in (*FIELDS, LABEL_FIELD) if keys.count(f) > 1)
    return row


def _iter_jsonl(stream: BinaryIO, source: str, require_label: bool) -> Iterator[Pair]:
    for line_no, raw in _lines(stream, source):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw, object_pairs_hook=_row)
        except json.JSONDecodeError as exc:
            raise PairFileError(
                source, line_no, None, f"not valid JSON ({exc.msg} at column {exc.colno})"
            ) from None
        except RecursionError:
            raise PairFileError(source, line_no, None, "not valid JSON (nested too deeply)") from None
        except ValueError as exc:  # e.g. an integer of more digits than Python converts
            raise PairFileError(source, line_no, None, f"not valid JSON ({first_line(exc)})") from None
        if not isinstance(row, dict):
            raise PairFileError(source, line_no, None, f"expected a JSON object, got {type(row).__name__}")
        if row.repeated:
            raise PairFileError(
                source, line_no, row.repeated[0], "given twice in one row (which one is meant?)"
            )
        yield _make_pair(row, source, line_no, require_label)


def _iter_delimited(stream: BinaryIO, source: str, delimiter: str, require_label: bool) -> Iterator[Pair]:
    csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE_CHARS))
    lines = (text for _, text in _lines(stream, source, CSV_LINE_CHARS))
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise PairFileError(source, 1, None, f"unreadable header ({exc})") from None
    header = [h.strip() for h in header]
    for field in (*FIELDS, LABEL_FIELD):
        if header.count(field) > 1:
            raise PairFileError(source, 1, field, f"column appears {header.count(field)} times in the header")
    for field in FIELDS:
        if field not in header:
            raise PairFileError(source, 1, field, f"column missing from header {header}")
    while True:
        start = reader.line_num + 1  # the line the next row begins on (a quoted field may span lines)
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if reader.line_num > start:  # the row ran on past its first line: an open quote, most likely
                where = (
                    f" (it began on this line and ran on to line {reader.line_num}: a quote never closed?)"
                )
            else:
                where = ""
            if "field larger than field limit" in str(exc):
                raise PairFileError(
                    source,
                    start,
                    None,
                    f"a field longer than {MAX_LINE_CHARS:,} characters; refused{where}",
                ) from None
            problem = str(exc).replace("\t", "\\t")  # the TSV delimiter, shown as \t, not a raw tab
            raise PairFileError(source, start, None, f"malformed row ({problem}){where}") from None
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
        if sys.stdin is None:  # started with standard input closed (`<&-`)
            raise PairFileError("<stdin>", None, None, "standard input is closed")
        stream = getattr(sys.stdin, "buffer", None)
        if stream is None:  # a text stream standing in for stdin (tests, embedding)
            stream = io.BytesIO(sys.stdin.read().encode("utf-8", "surrogateescape"))
        yield from _iter_stream(stream, "<stdin>", detect_format("-", fmt), require_label)
        return
    source = str(path)
    fmt = detect_format(path, fmt)
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise PairFileError(source, None, None, f"cannot open ({exc.strerror})") from None
    with handle:
        try:
            yield from _iter_stream(handle, source, fmt, require_label)
        except OSError as exc:  # e.g. a folder given as the file, or a read error
            raise PairFileError(source, None, None, f"cannot read ({exc.strerror})") from None


def _iter_stream(stream, source: str, fmt: str, require_label: bool) -> Iterator[Pair]:
    if fmt == "jsonl":
        return _iter_jsonl(stream, source, require_label)
    return _iter_delimited(stream, source, "\t" if fmt == "tsv" else ",", require_label)


def read_pairs(path: str | Path, fmt: str | None = None, require_label: bool = False) -> list[Pair]:
    pairs = list(iter_pairs(path, fmt, require_label))
    if not pairs:
        raise PairFileError(str(path), None, None, "no pairs in file")
    return pairs
