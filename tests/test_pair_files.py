"""Pair files: every format reads, every malformed case names file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pairbert.runtime.pair_files import PairFileError, read_pairs

DATA = Path(__file__).resolve().parents[1] / "training" / "data"


def test_three_formats_read_the_same(tmp_path):
    rows = [("What, really?", 'He said "yes"', 1), ("q2", "a2\twith tab", 0), ("q3", "a3", None)]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("".join(json.dumps({"question": q, "answer": a, "label": y}) + "\n" for q, a, y in rows))
    import csv

    for name, delim in (("p.csv", ","), ("p.tsv", "\t")):
        with open(tmp_path / name, "w", newline="") as f:
            w = csv.writer(f, delimiter=delim)
            w.writerow(["question", "answer", "label"])
            w.writerows([(q, a, "" if y is None else y) for q, a, y in rows])
    for name in ("p.jsonl", "p.csv", "p.tsv"):
        got = [(p.question, p.answer, p.label) for p in read_pairs(tmp_path / name)]
        assert got == rows, name


@pytest.mark.parametrize(
    "name, text, line, field",
    [
        ("bad.jsonl", '{"question": "q", "answer": "a", "label": 1}\n{"question": "q"\n', 2, None),
        ("bad.jsonl", '{"question": "q", "answer": "a", "label": 3}\n', 1, "label"),
        ("bad.jsonl", '{"question": 5, "answer": "a"}\n', 1, "question"),
        ("bad.jsonl", '{"question": "q"}\n', 1, "answer"),
        ("bad.jsonl", '["q", "a"]\n', 1, None),
        ("bad.jsonl", '{"question": "   ", "answer": "a"}\n', 1, "question"),
        ("bad.csv", "question,answer,label\nq,a,1\nq,a,yes\n", 3, "label"),
        ("bad.csv", "question,answer,label\nq,a,1,extra\n", 2, None),
        ("bad.csv", "question,label\nq,1\n", 1, "answer"),
        ("bad.tsv", "question\tanswer\tlabel\nq\t\t1\n", 2, "answer"),
        ("bad.jsonl", '{"question": "q", "answer": "a", "label": true}\n', 1, "label"),
        ("bad.csv", "question,answer,answer\nq,a,b\n", 1, "answer"),
        (
            "bad.jsonl",
            '{"question": "q", "answer": "a"}\n{"question": "q", "answer": "a", "answer": "b"}\n',
            2,
            "answer",
        ),
        ("bad.tsv", "label\tquestion\tanswer\tlabel\n1\tq\ta\t0\n", 1, "label"),
        (
            "deep.jsonl",
            '{"question": "q", "answer": "a"}\n{"x": ' + "[" * 100_000 + "]" * 100_000 + "}\n",
            2,
            None,
        ),
        ("bigint.jsonl", '{"question": "q", "answer": "a", "label": ' + "1" * 5000 + "}\n", 1, None),
        # a quote opened and never closed: the line it opened on, not the end of the file
        ("open.csv", 'question,answer\nq1,a1\nq2,"a2\nq3,a3\nq4,a4\n', 3, None),
        ("open.tsv", 'question\tanswer\nWhat does "LOL" mean?\t"LOL" means laughing out loud\n', 2, None),
    ],
)
def test_malformed_rows_name_file_line_field(tmp_path, name, text, line, field):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(PairFileError) as info:
        read_pairs(path)
    err = info.value
    assert err.line == line and err.field == field
    assert str(path) in str(err) and f"line {line}" in str(err)
    assert "\t" not in str(err)  # a raw tab in a one-line message reads as spaces


def test_an_open_quote_is_named_where_it_opened_even_past_the_field_limit(tmp_path):
    path = tmp_path / "open.csv"
    with path.open("w") as f:
        f.write('question,answer\nq,"oops\n')
        f.write("q2,a2\n" * 1_500_000)  # 9 MB of rows swallowed into the open field
    with pytest.raises(PairFileError, match=r"line 2: a field longer than .* a quote never closed\?"):
        read_pairs(path)


def test_a_label_written_as_a_float_reads_the_same_in_every_format(tmp_path):
    """pandas writes 1.0 / 0.0 in a label column that held a NaN: JSONL read them, CSV refused them."""
    (tmp_path / "a.csv").write_text("question,answer,label\nq,a,1.0\nq,b,0.0\nq,c,\n")
    (tmp_path / "a.jsonl").write_text(
        '{"question": "q", "answer": "a", "label": 1.0}\n{"question": "q", "answer": "b", "label": 0.0}\n'
        '{"question": "q", "answer": "c"}\n'
    )
    for name in ("a.csv", "a.jsonl"):
        assert [p.label for p in read_pairs(tmp_path / name)] == [1, 0, None], name
    (tmp_path / "b.csv").write_text("question,answer,label\nq,a,0.5\n")
    with pytest.raises(PairFileError, match="expected 0 or 1"):
        read_pairs(tmp_path / "b.csv")


def test_repeated_keys_outside_the_pair_fields_are_fine_in_jsonl(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"question": "q", "answer": "a", "src": 1, "src": 2, "meta": {"t": 1, "t": 2}}\n')
    assert [(p.question, p.answer) for p in read_pairs(path)] == [("q", "a")]


def test_repeated_unused_columns_are_fine(tmp_path):
    path = tmp_path / "trailing.csv"
    path.write_text("question,answer,,\nq,a,,\n")  # a spreadsheet's trailing commas
    assert [(p.question, p.answer) for p in read_pairs(path)] == [("q", "a")]


@pytest.mark.parametrize("name", ["bad.jsonl", "bad.csv"])
def test_invalid_utf8_is_named_by_its_line(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".csv"):
        path.write_bytes(b"\xef\xbb\xbfquestion,answer\r\nq,a\r\ncaf\xe9,a\r\n")  # BOM, CRLF
    else:
        path.write_bytes(b'{"question": "q", "answer": "a"}\r\n{"question": "caf\xe9", "answer": "a"}\n')
    line = 3 if name.endswith(".csv") else 2
    with pytest.raises(PairFileError, match=rf"{name}, line {line}: not UTF-8 text \(invalid") as info:
        read_pairs(path)
    assert info.value.line == line


def test_labels_required_for_training(tmp_path):
    path = tmp_path / "unlabeled.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n')
    assert read_pairs(path)[0].label is None
    with pytest.raises(PairFileError, match="line 1, field 'label'"):
        read_pairs(path, require_label=True)


def test_file_level_errors(tmp_path):
    with pytest.raises(PairFileError, match="cannot open"):
        read_pairs(tmp_path / "missing.jsonl")
    (tmp_path / "x.txt").write_text("q")
    with pytest.raises(PairFileError, match="extension"):
        read_pairs(tmp_path / "x.txt")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(PairFileError, match="no pairs"):
        read_pairs(tmp_path / "empty.jsonl")
    (tmp_path / "latin.csv").write_bytes(b"question,answer\ncaf\xe9,a\n")
    with pytest.raises(PairFileError, match="not UTF-8"):
        read_pairs(tmp_path / "latin.csv")


def test_builtin_dataset_is_what_the_builder_writes():
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_builtin", DATA / "build_builtin.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    train, validation = mod.builtin_split()  # what main() writes
    assert (DATA / "train.jsonl").read_text() == mod.render(train)
    assert (DATA / "validation.jsonl").read_text() == mod.render(validation)
    rows = train + validation
    assert len(rows) >= 500
    assert 0.45 <= sum(r["label"] for r in rows) / len(rows) <= 0.55
    kinds = {r["kind"] for r in rows}
    assert kinds == {"positive", "easy_negative", "hard_negative"}
    assert not {r["qid"] for r in train} & {r["qid"] for r in validation}
    assert len({r["topic"] for r in rows}) >= 20
    assert len(read_pairs(DATA / "smoke.jsonl", require_label=True)) == 5


@pytest.mark.parametrize("end", ["\r", "\r\n", "\n"])
def test_every_line_end_reads_the_same_and_names_lines(tmp_path, end):
    """Old Mac / Excel "CSV (Macintosh)" files end lines with a bare \\r; a quoted CSV field keeps its own."""
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_bytes(end.join(["question,answer,label", 'q1,"a, one",1', "q2,a2,0", ""]).encode())
    jsonl = tmp_path / "pairs.jsonl"
    rows = [
        {"question": "q1", "answer": "a, one", "label": 1},
        {"question": "q2", "answer": "a2", "label": 0},
    ]
    jsonl.write_bytes(end.join([json.dumps(r) for r in rows] + [""]).encode())
    for path in (csv_file, jsonl):
        pairs = read_pairs(path, require_label=True)
        assert [(p.question, p.answer, p.label) for p in pairs] == [("q1", "a, one", 1), ("q2", "a2", 0)]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(end.join([json.dumps(rows[0]), json.dumps(rows[1]), '{"question": 5}', ""]).encode())
    with pytest.raises(PairFileError, match="bad.jsonl, line 3"):
        read_pairs(bad, require_label=True)
    quoted = tmp_path / "quoted.csv"
    quoted.write_bytes(("question,answer,label\r\n" + 'q1,"two\r\nlines",1\r\n').encode())
    assert read_pairs(quoted)[0].answer == "two\r\nlines"


def test_the_builder_writes_the_training_split_without_the_train_only_bank(tmp_path, capsys):
    """The lever the README measures: the same bank split, without the train-only casual questions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_builtin", DATA / "build_builtin.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    before = {p: p.read_bytes() for p in (DATA / "train.jsonl", DATA / "validation.jsonl")}
    mod.main(["--train-without-extra", str(tmp_path / "train.jsonl")])
    assert {p: p.read_bytes() for p in before} == before  # the shipped files are left alone
    without = read_pairs(tmp_path / "train.jsonl", require_label=True)
    shipped = read_pairs(DATA / "train.jsonl", require_label=True)
    extra = {r["question"] for r in mod.load_bank(mod.EXTRA_BANK)}
    assert len(without) < len(shipped) and not {p.question for p in without} & extra
    assert {(p.question, p.answer) for p in without} < {(p.question, p.answer) for p in shipped}
    assert f"{len(without)} pairs" in capsys.readouterr().out
