"""Build the built-in dataset (train/validation JSONL) from qa_bank.tsv, deterministically.

    python training/data/build_builtin.py

Each bank row gives one positive pair. Negatives, one per question, alternate between an *easy* one (the
answer to a question from another topic) and a *hard* one (the answer to another question on the same
topic). The split is by question (20 % held out), so validation questions are never seen in training.
qa_bank_extra.tsv adds casual-register questions to TRAIN only (their negatives come from that bank), from
separate random streams, so validation is exactly the split of qa_bank.tsv. It also writes the held-out file
(heldout/, never used for choices) and the casual_chat dev proxy (dev/, used for choices); neither ships in
the wheel. A test checks that the committed files are what this script writes.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 13
VALIDATION_FRACTION = 0.2
EXTRA_BANK = HERE / "qa_bank_extra.tsv"  # train-only questions (casual register), see build(train_only=)


def load_bank(path: Path = HERE / "qa_bank.tsv") -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def build(
    bank: list[dict],
    seed: int = SEED,
    extra_train_negatives: bool = False,
    train_only: list[dict] | None = None,
) -> tuple[list[dict], list[dict]]:
    """(train, validation). `extra_train_negatives`: every training question also gets a negative of the
    other kind (so one hard and one easy). `train_only`: a second bank whose questions all go to train, with
    negatives drawn from that bank. Both use separate random streams: validation is unchanged by them."""
    rng = random.Random(seed)
    by_topic = _by_topic(bank)
    rows = []
    for i, row in enumerate(bank):  # one positive, then one negative: hard for even rows, easy for odd
        rows += [_positive(row, i), _negative(bank, by_topic, i, i % 2 == 0, rng)]
    qids = list(range(len(bank)))
    rng.shuffle(qids)
    held_out = set(qids[: round(len(bank) * VALIDATION_FRACTION)])
    train = [r for r in rows if r["qid"] not in held_out]
    validation = [r for r in rows if r["qid"] in held_out]
    rng.shuffle(train)
    rng.shuffle(validation)
    if extra_train_negatives:
        extra_rng = random.Random(seed + 1)
        train += [_negative(bank, by_topic, i, i % 2 == 1, extra_rng) for i in sorted(set(qids) - held_out)]
    if train_only:
        train += train_only_rows(train_only, len(bank), extra_train_negatives, random.Random(seed + 2))
    if extra_train_negatives or train_only:
        random.Random(seed + 3).shuffle(train)
    return train, validation


def train_only_rows(bank: list[dict], qid_offset: int, both: bool, rng: random.Random) -> list[dict]:
    """A positive and a negative (both kinds when `both`) per question of a train-only bank."""
    by_topic = _by_topic(bank)
    rows = []
    for i, row in enumerate(bank):
        rows.append(_positive(row, qid_offset + i))
        for hard in (True, False) if both else (i % 2 == 0,):
            rows.append({**_negative(bank, by_topic, i, hard, rng), "qid": qid_offset + i})
    return rows


def _by_topic(bank: list[dict]) -> dict[str, list[int]]:
    by_topic: dict[str, list[int]] = {}
    for i, row in enumerate(bank):
        by_topic.setdefault(row["topic"], []).append(i)
    return by_topic


def _positive(row: dict, qid: int) -> dict:
    return {
        "question": row["question"],
        "answer": row["answer"],
        "label": 1,
        "kind": "positive",
        "topic": row["topic"],
        "qid": qid,
    }


def _negative(bank: list[dict], by_topic: dict, i: int, hard: bool, rng: random.Random) -> dict:
    row = bank[i]
    if hard:
        others, kind = [j for j in by_topic[row["topic"]] if j != i], "hard_negative"
    else:
        others, kind = [j for j in range(len(bank)) if bank[j]["topic"] != row["topic"]], "easy_negative"
    answer = bank[rng.choice(others)]["answer"]
    return {
        "question": row["question"],
        "answer": answer,
        "label": 0,
        "kind": kind,
        "topic": row["topic"],
        "qid": i,
    }


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


HELDOUT_BANK = HERE / "heldout" / "support_trivia_bank.tsv"
HELDOUT_FILE = HERE / "heldout" / "support_trivia.jsonl"


def build_heldout(bank: list[dict], seed: int = 7) -> list[dict]:
    """The second held-out file (customer-support and trivia phrasing): one positive per question, and one
    negative: its plausible-but-wrong answer where the bank gives one, else another question's answer.

    Written once before any tuning and never used for a choice: only for the figures reported.
    """
    rng = random.Random(seed)
    rows = []
    for i, row in enumerate(bank):
        rows.append({"question": row["question"], "answer": row["answer"], "label": 1, "kind": "positive"})
        if row["wrong"]:
            rows.append(
                {"question": row["question"], "answer": row["wrong"], "label": 0, "kind": "plausible_wrong"}
            )
        else:
            j = rng.choice([j for j in range(len(bank)) if j != i])
            rows.append(
                {"question": row["question"], "answer": bank[j]["answer"], "label": 0, "kind": "other_answer"}
            )
    rng.shuffle(rows)
    return rows


DEV_BANK = HERE / "dev" / "casual_chat_bank.tsv"
DEV_FILE = HERE / "dev" / "casual_chat.jsonl"


def build_dev(bank: list[dict], seed: int = 11) -> list[dict]:
    """The development proxy for the team's hidden set: everyday questions in casual register with casual
    true answers, one positive and one negative per question, the negative being ANOTHER question's answer
    from the same file. Unlike the held-out file, it may be used for choices (recipe, levers).
    """
    rng = random.Random(seed)
    rows = []
    for i, row in enumerate(bank):
        rows.append({"question": row["question"], "answer": row["answer"], "label": 1, "kind": "positive"})
        j = rng.choice([j for j in range(len(bank)) if j != i])
        rows.append(
            {"question": row["question"], "answer": bank[j]["answer"], "label": 0, "kind": "other_answer"}
        )
    rng.shuffle(rows)
    return rows


def builtin_split() -> tuple[list[dict], list[dict]]:
    """The shipped (train, validation): the bank's split plus the train-only casual bank."""
    return build(load_bank(), train_only=load_bank(EXTRA_BANK))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Rebuild the built-in data files from the banks.")
    parser.add_argument(
        "--train-without-extra",
        metavar="FILE",
        help="only write the training split without the train-only casual bank to FILE (validation is the "
        "same): the lever `python -m pairbert.training.levers default --train FILE` measures (README)",
    )
    args = parser.parse_args(argv)
    if args.train_without_extra:
        train, _ = build(load_bank())
        Path(args.train_without_extra).write_text(render(train), encoding="utf-8")
        print(f"{args.train_without_extra}: {len(train)} pairs")
        return
    train, validation = builtin_split()
    (HERE / "train.jsonl").write_text(render(train), encoding="utf-8")
    (HERE / "validation.jsonl").write_text(render(validation), encoding="utf-8")
    heldout = build_heldout(load_bank(HELDOUT_BANK))
    HELDOUT_FILE.write_text(render(heldout), encoding="utf-8")
    dev = build_dev(load_bank(DEV_BANK))
    DEV_FILE.write_text(render(dev), encoding="utf-8")
    sizes = {"train": train, "validation": validation, "held-out": heldout, "dev": dev}
    print(", ".join(f"{name}: {len(rows)} pairs" for name, rows in sizes.items()))


if __name__ == "__main__":
    main()
