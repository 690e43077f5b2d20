"""The `pairbert` command: train, evaluate, export, predict, bench, serve, bench-serve.

Each subcommand imports what it needs when it runs, so `pairbert predict` works in a torch-free install
and `pairbert --help` is instant.

Exit codes: 0 success; 1 a data or runtime error (a bad file, field or bundle, a failed parity gate,
a device that cannot run), printed as one line without a traceback; 2 a usage error (an unknown flag, a
bad value, a missing or conflicting option), with the usage line; 130 interrupted (Ctrl-C); 143 predict
terminated by SIGTERM (its rows kept as on Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import pairbert
from pairbert.runtime.errors import PairbertError
from pairbert.runtime.sessions import BACKENDS
from pairbert.runtime.variants import VARIANTS
from pairbert.signals import sigterm_raises

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
EPILOG = """exit codes:
  0    success
  1    data or runtime error (bad file, field or bundle, failed parity gate, device that cannot run)
  2    usage error (unknown flag, bad value, missing or conflicting option)
  130  interrupted (Ctrl-C)
  143  terminated (SIGTERM; predict keeps its rows as it does on Ctrl-C)"""
SERVE_EPILOG = """exit codes:
  0    stopped by SIGTERM or Ctrl-C (a graceful stop: requests in flight are answered first)
  1    runtime error (bad bundle, device that cannot run, port taken)
  2    usage error (unknown flag, bad value, missing or conflicting option)"""
DEVICES = ("auto", "cpu", "cuda")
# `pairbert train` flag (argparse dest) → TrainConfig field. tests/test_cli.py checks that every
# TrainConfig field is either here or in TRAIN_CONFIG_NOT_ON_CLI, and that the flags' defaults equal the
# dataclass's (train/validation default to None here: without --train both mean the built-in split, as in
# TrainConfig; with --train and no --validation, there is no validation).
TRAIN_OPTIONS = {
    "output_dir": "output_dir",
    "source": "source",
    "tokenizer": "tokenizer",
    "train": "train_file",
    "validation": "validation_file",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "learning_rate",
    "head_lr": "head_learning_rate",
    "weight_decay": "weight_decay",
    "warmup_ratio": "warmup_ratio",
    "max_grad_norm": "max_grad_norm",
    "max_length": "max_length",
    "seed": "seed",
    "device": "device",
    "resume": "resume",
    "override": "resume_override",
    "pairing": "pairing",
    "pooling": "pooling",
    "distill": "distill",
    "teacher_negatives": "teacher_negatives",
    "patience": "patience",
    "single_order": "single_order",
    "contrastive": "contrastive",
    "freeze_embeddings": "freeze_embeddings",
    "contrastive_negatives": "contrastive_negatives",
    "contrastive_symmetric": "contrastive_symmetric",
}
TRAIN_CONFIG_NOT_ON_CLI = {"progress", "stop_after_epochs", "plot"}  # --quiet; tests; --no-plot


class Terminated(KeyboardInterrupt):
    """SIGTERM (a job runner, `timeout`) during predict: unwound like Ctrl-C, so the rows written so far are
    kept in OUTPUT.partial and the message says so, instead of a temporary file left behind."""


class UserError(PairbertError):
    """A usage error found after parsing (e.g. conflicting options): exit code 2, one line."""


_UNSET = object()


def _explicit_train_options(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """The `train` options the command line set (abbreviations included), as argparse dests."""
    argv = sys.argv[1:] if argv is None else list(argv)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    probe = argparse.Namespace(**{a.dest: _UNSET for a in sub._actions})
    sub.parse_known_args(argv[argv.index("train") + 1 :] if "train" in argv else [], probe)
    return {k for k, v in vars(probe).items() if v is not _UNSET}


def _check_train_args(args: argparse.Namespace, restored: frozenset = frozenset()) -> None:
    """The train options' values (and those `restored` from a checkpoint to resume, whose files are not
    checked: resuming reads the checkpoint's own tokenizer)."""
    import math
    from pathlib import Path

    def positive(name: str, value) -> None:
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UserError(f"{name} must be a positive finite number, got {value}")

    positive("--lr", args.lr)
    positive("--head-lr", args.head_lr)
    positive("--max-grad-norm", args.max_grad_norm)
    if not (math.isfinite(args.distill) and 0 <= args.distill <= 1):
        raise UserError(f"--distill must be in [0, 1], got {args.distill}")
    if args.contrastive is not None and not (math.isfinite(args.contrastive) and args.contrastive >= 0):
        raise UserError(f"--contrastive must be a finite number ≥ 0, got {args.contrastive}")
    if args.teacher_negatives < 0:
        raise UserError(f"--teacher-negatives must be 0 or more, got {args.teacher_negatives}")
    if not (math.isfinite(args.weight_decay) and args.weight_decay >= 0):
        raise UserError(f"--weight-decay must be a finite number ≥ 0, got {args.weight_decay}")
    if not (math.isfinite(args.warmup_ratio) and 0 <= args.warmup_ratio <= 1):
        raise UserError(f"--warmup-ratio must be in [0, 1], got {args.warmup_ratio}")
    cross_only = args.pooling not in ("auto", "mean") or args.single_order  # options of the cross pairing
    # auto is towers for a source with a baseline (the default minilm)
    if cross_only and not args.resume and args.pairing != "cross":
        if args.pairing == "towers" or _has_baseline(args.source):
            also = " (auto picks towers for a pretrained sentence encoder: pass --pairing cross)"
            also = also if args.pairing == "auto" else ""
            if args.pooling not in ("auto", "mean"):
                raise UserError(
                    f"--pooling {args.pooling} does not apply to the towers pairing, which mean-pools{also}"
                )
            raise UserError(f"--single-order does not apply to the towers pairing, one branch a side{also}")
    if not 8 <= args.max_length <= 8192:
        raise UserError(f"--max-length must be in [8, 8192], got {args.max_length}")
    out = Path(args.output_dir)
    blocked = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise UserError(f"--output-dir {out}: {blocked} is a file, not a folder")
    if args.tokenizer is not None and "tokenizer" not in restored and not Path(args.tokenizer).is_file():
        raise UserError(f"--tokenizer {args.tokenizer}: no such file")
    if not args.resume:
        positions = _model_positions(args.source)
        if positions is not None and args.max_length > positions:
            raise UserError(
                f"--max-length {args.max_length} exceeds the {positions} positions of --source {args.source}"
            )


def _check_stored_types(restored: dict, last: Path) -> None:
    """Each setting a checkpoint restores has its TrainConfig field's type (a tampered or foreign
    pairbert.json would otherwise fail as a traceback, or not at all)."""
    import typing

    from pairbert.training.checkpoint import CheckpointError
    from pairbert.training.loop import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    for dest, value in restored.items():
        field = TRAIN_OPTIONS[dest]
        kinds = typing.get_args(hints[field]) or (hints[field],)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        fits = any(
            value is None
            if kind is type(None)
            else (kind is float and number)
            or (isinstance(value, kind) and (kind is bool or not isinstance(value, bool)))
            for kind in kinds
        )
        if not fits or (isinstance(value, int) and dest in POSITIVE_INTS and value < 1):
            raise CheckpointError(
                f"{last / 'pairbert.json'}: train_config.{field} is {value!r}, which no run records "
                "(a damaged or hand-edited checkpoint)"
            )


POSITIVE_INTS = ("epochs", "batch_size", "patience")


def _has_baseline(source: str) -> bool:
    """Whether `auto` pairs this source as towers: a pretrained one (a random init has no baseline)."""
    from pairbert.training.weights import resolve_source

    try:
        return resolve_source(source)[1] is None
    except Exception:  # a bad source is reported by training itself, in its own words
        return False


def _model_positions(source: str) -> int | None:
    """max_position_embeddings of a source (None when it cannot be told without loading it)."""
    from pathlib import Path

    from pairbert.training.weights import resolve_source

    location, random_config = resolve_source(source)
    if random_config is not None:
        return random_config.max_position_embeddings
    config = Path(location) / "config.json" if isinstance(location, Path) else None
    if config is None or not config.is_file():
        return None
    try:
        return int(json.loads(config.read_text()).get("max_position_embeddings"))
    except (ValueError, TypeError):
        return None


def _train(args: argparse.Namespace) -> None:
    from pathlib import Path

    from pairbert.training.checkpoint import RUN_SETTINGS
    from pairbert.training.loop import TrainConfig, train

    _check_train_args(args)
    values = {field: getattr(args, dest) for dest, field in TRAIN_OPTIONS.items()}
    if args.resume:  # the run's settings come from its checkpoint; a differing option given is an error there
        from pairbert.training.checkpoint import stored_train_config

        stored = stored_train_config(Path(args.output_dir) / "last")
        explicit = getattr(args, "explicit", set(TRAIN_OPTIONS))
        restored = {
            d: stored[f]
            for d, f in TRAIN_OPTIONS.items()
            if d not in explicit and f in stored and f in RUN_SETTINGS
        }
        _check_stored_types(restored, Path(args.output_dir) / "last")
        for dest, value in restored.items():
            setattr(args, dest, value)
        _check_train_args(args, frozenset(restored))  # stored values too: a batch size of -3 looped forever
        values.update({TRAIN_OPTIONS[d]: v for d, v in restored.items()})
    cfg = TrainConfig(**values, progress=not args.quiet, plot=not args.no_plot)
    result = train(cfg)
    last = result["history"][-1] if result["history"] else {}
    print(
        json.dumps(
            {
                "output_dir": result["output_dir"],
                "best_val_accuracy": result["best_val_accuracy"],
                "epochs_run": len(result["history"]),
                "elapsed_s": last.get("elapsed_s"),
            }
        )
    )


def _evaluate(args: argparse.Namespace) -> None:
    from pathlib import Path

    from pairbert.runtime.pair_files import read_pairs
    from pairbert.training.checkpoint import load_checkpoint
    from pairbert.training.loop import evaluate
    from pairbert.training.metrics import format_confusion

    if args.baseline_train and not args.no_baseline and not Path(args.baseline_train).is_file():
        raise UserError(f"--baseline-train {args.baseline_train}: no such file")
    if args.baseline_train and not args.no_baseline and _same_file(args.baseline_train, args.data):
        raise UserError(
            "--baseline-train must not be the evaluated file (or a copy of it): the threshold would see "
            "its labels"
        )
    pairs = read_pairs(args.data, require_label=True)  # a bad data file fails before the model loads
    ckpt = load_checkpoint(args.checkpoint)
    m = evaluate(ckpt.model, ckpt.encoder, pairs, batch_size=args.batch_size)
    report = {**m, "data": args.data, "baseline": None}  # the model's metrics at the top level
    if not args.no_baseline:
        report["baseline"] = _baseline_report(ckpt, pairs, args.baseline_train, args.data)
    if args.json:
        print(json.dumps(report))
        return
    print(
        f"model     pairs: {m['count']}  accuracy: {m['accuracy']:.4f}  f1: {m['f1']:.4f}  "
        f"loss: {m['loss']:.4f}"
    )
    print(format_confusion(m["confusion_matrix"]))
    b = report["baseline"]
    if b is None:
        return
    if "skipped" in b:
        print(f"baseline  skipped: {b['skipped']}")
        return
    print(
        f"baseline  pairs: {b['count']}  accuracy: {b['accuracy']:.4f}  f1: {b['f1']:.4f}  "
        f"(zero-shot cosine of {b['source']!r} mean-pooled embeddings ≥ {b['threshold']:.4f}, "
        f"threshold tuned on {b['tuned_on']})"
    )
    print(format_confusion(b["confusion_matrix"]))
    print(f"training gained {100 * (m['accuracy'] - b['accuracy']):+.1f} accuracy points over the baseline")


def _same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same file, or files with the same bytes (a copy)."""
    a, b = Path(a), Path(b)
    try:
        if a.samefile(b):
            return True
        return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()
    except OSError:  # one is missing or unreadable: the readers say so
        return False


def _baseline_report(ckpt, pairs, train_file: str | None, data: str | None = None) -> dict:
    """The zero-shot baseline of the checkpoint's weight source, tuned on its training split (or
    `train_file`), applied to `pairs` (read from `data`). A source without one (random init) is reported
    as skipped, as is one whose training split is the evaluated file itself."""
    from pairbert.training.baseline import baseline_for, evaluate_baseline
    from pairbert.training.weights import WeightSourceError

    recipe = ckpt.settings.get("train_config", {})
    source = recipe.get("source")
    train_file = train_file or ckpt.recorded_file("train_file")
    if not source or not train_file:
        return {"skipped": "the checkpoint records no weight source or training file; pass --baseline-train"}
    if not Path(train_file).is_file():
        return {"skipped": f"training file {train_file} not found; pass --baseline-train"}
    if data is not None and _same_file(train_file, data):
        return {
            "skipped": f"the evaluated file is the training split {train_file} the threshold is tuned on "
            "(it would see these labels); pass --baseline-train"
        }
    try:
        embedder, fit = baseline_for(source, train_file, ckpt.settings.get("max_length", 128))
    except WeightSourceError as exc:
        return {"skipped": str(exc)}
    return evaluate_baseline(embedder, fit, pairs)


def _export(args: argparse.Namespace) -> None:
    from pairbert.export.bundle_writer import ExportSettings, export_bundle
    from pairbert.export.precision import Int8Options

    int8_flags = [
        flag
        for flag, given in [
            ("--int8-weight-type", args.int8_weight_type is not None),
            ("--int8-per-tensor", args.int8_per_tensor),
            ("--[no-]int8-reduce-range", args.int8_reduce_range is not None),
            ("--int8-quantize-ffn-output", args.int8_quantize_ffn_output),
        ]
        if given
    ]
    if int8_flags and "int8" not in (args.variants or VARIANTS):
        raise UserError(
            f"{', '.join(int8_flags)}: int8 options, but --variants has no int8; add it or drop them"
        )
    from pairbert.runtime.variants import OPENVINO_VARIANTS

    if args.variants and set(OPENVINO_VARIANTS) & set(args.variants) and "fp32" not in args.variants:
        raise UserError("--variants: OpenVINO variants compile the fp32 graph, so fp32 must be listed too")
    if args.calibration is not None and "openvino-int8" not in (args.variants or VARIANTS):
        raise UserError("--calibration calibrates openvino-int8, but --variants has no openvino-int8")
    settings = ExportSettings(
        variants=args.variants or VARIANTS,
        # the default list, or --skip-failed: a bundle of every variant that passes
        skip_failed=args.variants is None or args.skip_failed,
        validation_file=args.validation,
        calibration_file=args.calibration,
        force=args.force,
        int8=Int8Options(
            weight_type=args.int8_weight_type or Int8Options.weight_type,
            per_channel=not args.int8_per_tensor,
            reduce_range=Int8Options.reduce_range
            if args.int8_reduce_range is None
            else args.int8_reduce_range,
            ffn_output_fp32=not args.int8_quantize_ffn_output,
        ),
        external_data=args.external_data,
    )
    export_bundle(args.checkpoint, args.out, settings)


def _predict(args: argparse.Namespace) -> None:
    from pairbert.runtime.pair_files import Pair, PairFileError, iter_pairs
    from pairbert.runtime.predictor import PairClassifier

    if (args.question is None) != (args.answer is None):
        raise UserError("give both -q and -a, or --input")
    if (args.question is None) == (args.input is None):
        raise UserError("give either -q/-a or --input")
    _check_output(args)
    if args.input is not None:  # open and read the first pair before any output exists
        reader = iter_pairs(args.input, fmt=args.format)
        first = next(reader, None)
        if first is None and args.input != "-":  # an empty stdin is an empty stream: no rows, exit 0
            raise PairFileError(args.input, None, None, "no pairs in file")
        pairs = iter(()) if first is None else _chain(first, reader)
    else:
        pairs = iter([Pair(args.question, args.answer)])
    clf = PairClassifier.load(
        args.bundle,
        variant=args.variant,
        device=args.device,
        threads=args.threads,
        allow_fallback=args.allow_fallback,
        backend=args.backend,
    )
    logging.getLogger(__name__).info("variant %s on %s", clf.variant, clf.provider)
    # SIGTERM unwinds only while rows are written: never while the output is renamed or kept as .partial
    with _Output(args.output) as out, sigterm_raises(lambda signum: Terminated()):
        for chunk in _chunks(pairs, args.chunk):
            out.write_rows(_rows(clf, chunk, args.batch_size))


def _chain(first, rest):
    yield first
    yield from rest


CHUNK_CHARS = 1 << 23  # characters of text per chunk (a chunk's memory grows with them, ~30 bytes each)


def _chunks(pairs, size: int, max_chars: int | None = None):
    """Lists of at most `size` pairs whose texts hold at most `max_chars` characters (CHUNK_CHARS; a single
    longer pair makes a chunk of its own), in input order. A malformed line (PairbertError) ends the stream
    after the pairs read before it were handed out, so they are still predicted and written."""
    max_chars = CHUNK_CHARS if max_chars is None else max_chars
    batch: list = []
    chars = 0
    try:
        for pair in pairs:
            n = len(pair.question) + len(pair.answer)
            if batch and chars + n > max_chars:
                yield batch
                batch, chars = [], 0
            batch.append(pair)
            chars += n
            if len(batch) >= size:
                yield batch
                batch, chars = [], 0
    except PairbertError:
        if batch:
            yield batch
        raise
    if batch:
        yield batch


def _rows(clf, batch, batch_size: int) -> list[str]:
    result = clf.predict([(p.question, p.answer) for p in batch], batch_size=batch_size)
    names = clf.label_names
    rows = []
    for pair, label, probs in zip(batch, result.labels, result.probabilities, strict=True):
        row = {
            "question": pair.question,
            "answer": pair.answer,
            "label": int(label),
            "label_name": names[int(label)],
            "match_probability": round(float(probs[-1]), 6),
            "probabilities": {n: round(float(p), 6) for n, p in zip(names, probs, strict=True)},
        }
        if pair.label is not None:
            row["true_label"] = pair.label
        rows.append(json.dumps(row, ensure_ascii=False) + "\n")
    return rows


def _check_output(args: argparse.Namespace) -> None:
    """Refuse an --output that would destroy the input or cannot be written, before anything is touched."""
    import os
    from pathlib import Path

    if not args.output:
        return
    out = Path(args.output)
    if out.is_dir():
        raise UserError(f"--output {out}: is a folder; give a file name")
    if out.parent.exists() and not out.parent.is_dir():
        raise UserError(f"--output {out}: {out.parent} is a file, not a folder")
    if not out.parent.is_dir():
        raise UserError(f"--output {out}: folder {out.parent} does not exist")
    partial = out.with_name(out.name + ".partial")  # where a failed run's rows go
    if args.input not in (None, "-"):
        for name, path in (("--output", out), ("--output's .partial file", partial)):
            same = path.exists() and Path(args.input).exists() and os.path.samefile(path, args.input)
            if same or path.resolve() == Path(args.input).resolve():
                raise UserError(f"{name} {path} is the --input file; write the predictions to another file")
    elif args.input == "-" and out.exists():  # `--input - --output F < F` would replace F while reading it
        try:
            stdin = os.fstat(0)
        except OSError:
            raise UserError("--input -: standard input is closed") from None
        target = out.stat()
        if (stdin.st_dev, stdin.st_ino) == (target.st_dev, target.st_ino):
            raise UserError(f"--output {out} is the file standard input reads; write to another file")


class OutputError(PairbertError):
    """The predictions could not be written (disk full, file too large, an I/O error): exit code 1."""


class _Output:
    """Standard output, or a file written under a temporary name beside it and renamed into place only when
    the run succeeds: an existing --output is never truncated by a failed run. On any failure (a bad line, a
    write error, Ctrl-C) the complete rows written so far are kept in OUTPUT.partial (a torn last row is cut
    off) and the message says so; with none, nothing is kept. Special files (/dev/null, a pipe) are written
    directly."""

    def __init__(self, path: str | None):
        import os
        from pathlib import Path

        self.target = Path(path) if path else None  # as the user named it (for messages)
        self.dest = Path(os.path.realpath(path)) if path else None  # what gets replaced: a link's target
        self.tmp = None
        self.written = 0  # complete rows
        self.good_bytes = 0  # bytes of those rows (the temporary file is cut back to them on failure)

    def __enter__(self) -> _Output:
        import os
        import tempfile
        from pathlib import Path

        if self.target is None:
            self.stream = sys.stdout
        elif self.target.exists() and not self.target.is_file():
            try:
                self.stream = open(self.target, "wb")
            except OSError as exc:
                raise OutputError(f"--output {self.target}: cannot open ({exc.strerror})") from None
        else:
            try:
                fd, name = tempfile.mkstemp(prefix=f".{self.dest.name}.", suffix=".tmp", dir=self.dest.parent)
            except OSError as exc:
                raise OutputError(  # the file system's refusal (exit 1), not a usage error
                    f"--output {self.target}: cannot write in {self.dest.parent} ({exc.strerror})"
                ) from None
            self.tmp = Path(name)
            _take_mode(fd, self.dest)
            self.stream = os.fdopen(fd, "wb")
        return self

    def write_rows(self, rows: list[str]) -> None:
        text = "".join(rows)
        data = text.encode("utf-8")  # UTF-8 whatever the locale says (PYTHONIOENCODING=ascii, LANG=C)
        stdout_bytes = getattr(sys.stdout, "buffer", None) if self.stream is sys.stdout else None
        try:
            if self.stream is sys.stdout and stdout_bytes is None:  # a text-only stand-in (tests, IDEs)
                self.stream.write(text)
            elif stdout_bytes is not None:
                sys.stdout.flush()
                stdout_bytes.write(data)
            else:
                self.stream.write(data)
            (stdout_bytes or self.stream).flush()
        except BrokenPipeError:  # the reader left (`| head`): not an error
            raise
        except OSError as exc:
            where = "standard output" if self.target is None else f"--output {self.target}"
            raise OutputError(f"{where}: cannot write ({exc.strerror or exc})") from None
        self.written += len(rows)
        self.good_bytes += len(data)

    def __exit__(self, kind, exc, tb) -> None:
        import os

        if self.stream is sys.stdout:
            return
        failed = None
        try:
            self.stream.close()
        except OSError as close_exc:  # what a failed write left in the buffer, or a deferred write error
            failed = OutputError(f"--output {self.target}: cannot write ({close_exc.strerror or close_exc})")
        if kind is None and failed is not None:
            kind, exc = OutputError, failed
        if self.tmp is None:
            if exc is failed and failed is not None:
                raise failed from None
            return
        if kind is None:
            os.replace(self.tmp, self.dest)
            return
        self._keep_partial(kind, exc)

    def _kept(self) -> str:
        return f"{self.target} left as it was" if self.target.exists() else f"{self.target} not written"

    def _keep_partial(self, kind, exc) -> None:
        """After a failure: the complete rows go to OUTPUT.partial (none: the temporary file is removed), and
        the error (or Ctrl-C's message) says where they are."""
        import os

        if self.written:
            partial = self.target.with_name(self.target.name + ".partial")
            try:
                os.truncate(self.tmp, self.good_bytes)  # a write error may have left half a row
                os.replace(self.tmp, partial)
                note = f"{self.written} predictions before it are in {partial}; {self._kept()}"
            except OSError as keep_exc:  # e.g. a folder named OUTPUT.partial: the rows stay where they are
                note = (
                    f"{self.written} predictions before it are in {self.tmp} (not moved to {partial}: "
                    f"{keep_exc.strerror}); {self._kept()}"
                )
        else:
            self.tmp.unlink(missing_ok=True)
            note = f"nothing predicted was kept; {self._kept()}"
        if issubclass(kind, KeyboardInterrupt):
            raise kind(note) from None  # KeyboardInterrupt, or Terminated (SIGTERM)
        if isinstance(exc, PairbertError):  # the same class (and so exit code) with where the rows went
            raise (UserError if isinstance(exc, UserError) else PairbertError)(f"{exc} ({note})") from None


def _take_mode(fd: int, dest) -> None:
    """The new file gets the permissions of the one it replaces (a private file stays private), else what
    the umask gives a new file; as root, its owner and group too."""
    import os
    import stat

    try:
        st = os.stat(dest)
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        os.fchmod(fd, 0o666 & ~mask)
        return
    try:  # best effort: a file system that refuses (NFS root_squash, CIFS) keeps the new file's own
        os.fchmod(fd, stat.S_IMODE(st.st_mode))
        if os.geteuid() == 0:
            os.fchown(fd, st.st_uid, st.st_gid)
    except OSError as exc:
        logging.getLogger(__name__).warning("--output %s: could not copy its permissions (%s)", dest, exc)


def _bench(args: argparse.Namespace) -> None:
    from pathlib import Path

    from pairbert.benchmarks.suite import BenchmarkError, run_suite

    out = Path(args.out)
    print(f"benchmarking {args.bundle} ({'quick' if args.quick else 'full'}) → {out}", flush=True)
    report = run_suite(
        Path(args.bundle), Path(args.checkpoint) if args.checkpoint else None, out, args.quick, args.threads
    )
    print((out / "results.md").read_text())
    if report["problems"]:
        raise BenchmarkError("; ".join(report["problems"]))


def variant_list(text: str) -> tuple[str, ...]:
    """--variants: a comma-separated subset of VARIANTS (argparse turns the ValueError into exit code 2)."""
    variants = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise argparse.ArgumentTypeError(f"{text!r}: choose a comma-separated subset of {','.join(VARIANTS)}")
    return variants


def _serve(args: argparse.Namespace) -> None:
    from pairbert.serving.settings import ServeSettings

    try:
        from pairbert.serving.server import serve
    except ImportError as exc:  # the [serve] extra is missing: say which to install, no traceback
        raise PairbertError(str(exc)) from None

    serve(
        ServeSettings(
            bundle=args.bundle,
            host=args.host,
            port=args.port,
            variant=args.variant,
            device=args.device,
            threads=args.threads,
            workers=args.workers,
            batching=not args.no_batching,
            max_wait_ms=args.max_wait_ms,
            max_batch_tokens=args.max_batch_tokens,
            max_batch_pairs=args.max_batch_pairs,
            max_queue_pairs=args.max_queue_pairs,
            max_request_pairs=args.max_request_pairs,
            max_text_chars=args.max_text_chars,
            max_connections=args.max_connections,
            header_timeout_s=args.header_timeout,
            body_timeout_s=args.body_timeout,
            graceful_shutdown_s=args.graceful_shutdown,
            warmup=not args.no_warmup,
        )
    )


def _bench_serve(args: argparse.Namespace) -> None:
    from pairbert.benchmarks.serve_load import LoadSettings, run_load_benchmark

    run_load_benchmark(
        LoadSettings(
            bundle=args.bundle,
            out=args.out,
            clients=args.clients,
            seconds=args.seconds,
            threads=args.threads,
            rss_requests=args.rss_requests,
        )
    )


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def thread_count(text: str) -> int:
    """An argparse type: a positive int no larger than what PairClassifier.load accepts here."""
    from pairbert.runtime.predictor import THREADS_PER_CPU, max_threads

    value = positive_int(text)
    if value > max_threads():
        raise argparse.ArgumentTypeError(
            f"at most {max_threads()} here ({THREADS_PER_CPU} per CPU this process may use), got {value}"
        )
    return value


thread_count.__name__ = "int"  # argparse's "invalid int value: 'x'" for text that is no number

WORKERS_PER_CPU = 2  # each worker loads the whole bundle and computes on its own cores: more only compete


def worker_count(text: str) -> int:
    """An argparse type: serve's worker processes, at most WORKERS_PER_CPU per CPU this process may use."""
    from pairbert.runtime.predictor import usable_cpus

    value = positive_int(text)
    limit = WORKERS_PER_CPU * usable_cpus()
    if value > limit:
        raise argparse.ArgumentTypeError(
            f"at most {limit} here ({WORKERS_PER_CPU} per CPU this process may use; each loads the bundle), "
            f"got {value}"
        )
    return value


worker_count.__name__ = "int"


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def port_number(text: str) -> int:
    """--port: 0 (pick a free port) to 65535."""
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 and 65535, got {value}")
    return value


def float_between(low: float, high: float):
    """An argparse type: a finite number in [low, high] (nan, inf and values outside are usage errors)."""
    import math

    def parse(text: str) -> float:
        value = float(text)
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"must be a number between {low:g} and {high:g}, got {text}")
        return value

    parse.__name__ = "number"  # argparse's "invalid number value: 'x'" for text that is no number
    return parse


def count_list(text: str) -> tuple[int, ...]:
    """--clients: comma-separated positive integers."""
    try:
        counts = tuple(int(c) for c in text.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated positive integers, e.g. 1,8,32")
    return counts


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after every help text (unless the text already says what the default is, or the flag is
    a switch that is off); the description and epilog keep their line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False:
            return text
        return super()._get_help_string(action)


def _subparser(sub, name: str, help: str, epilog: str = EPILOG):
    parser = sub.add_parser(name, help=help, description=help, epilog=epilog, formatter_class=_Formatter)
    parser.set_defaults(usage_of=parser)  # a usage error found later prints this command's usage line
    # `pairbert predict -v ...` as well as `pairbert -v predict ...` (not given here: the top level's value)
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log at INFO level"
    )
    return parser


def _add_train(sub) -> None:  # long: one flat declaration per train flag, nothing to branch on
    t = _subparser(sub, "train", "train the dual-order BERT pair classifier")
    t.add_argument("--output-dir", default="runs/default", help="run folder: last/ (resumable) and best/")
    t.add_argument(
        "--source",
        default="minilm",
        help='"minilm" (packaged), a local BERT folder, a hub name, or "random:NAME"',
    )
    t.add_argument("--tokenizer", help="tokenizer.json (default: the source's own)")
    t.add_argument("--train", help="training pairs (.csv/.tsv/.jsonl; default: the built-in training split)")
    t.add_argument(
        "--validation",
        help="validation pairs (default: the built-in validation split without --train; with --train, none: "
        "then best/ is the last epoch)",
    )
    t.add_argument("--epochs", type=positive_int, default=2, help="passes over the training pairs")
    t.add_argument("--batch-size", type=positive_int, default=16, help="pairs per optimizer step")
    t.add_argument("--lr", type=float, default=2e-5, help="peak learning rate of the encoders (AdamW)")
    t.add_argument(
        "--head-lr",
        type=float,
        help="learning rate of the head and both poolers (default: 1e-3 for towers, --lr for cross)",
    )
    t.add_argument(
        "--weight-decay", type=float, default=0.01, help="AdamW weight decay (not on biases/LayerNorm)"
    )
    t.add_argument("--warmup-ratio", type=float, default=0.1, help="share of the steps spent warming up")
    t.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping norm")
    t.add_argument("--max-length", type=positive_int, default=128, help="tokens per encoded pair (truncated)")
    t.add_argument("--seed", type=int, default=42, help="seed of shuffling and initialisation")
    t.add_argument(
        "--device", default="auto", choices=DEVICES, help="where to train (auto: CUDA if torch sees it)"
    )
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUTPUT_DIR/last with the settings stored there (options given must match)",
    )
    t.add_argument(
        "--override",
        action="store_true",
        help="with --resume: use the options given even where they differ from the checkpoint's",
    )
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument(
        "--pairing",
        default="auto",
        choices=["auto", "cross", "towers"],
        help="cross: each branch reads the whole pair; towers: the QA branch encodes the question, the AQ "
        "branch the answer, the head starts as the zero-shot baseline; auto: towers when the source has a "
        "baseline (pretrained), cross for a random init",
    )
    t.add_argument(
        "--pooling",
        default="auto",
        choices=["auto", "cls", "mean", "cls+mean"],
        help="how each branch is pooled (recorded in the checkpoint); auto: mean for towers, the notebook's "
        "[CLS] pooler for cross",
    )
    t.add_argument(
        "--distill",
        type=float,
        default=0.5,
        help="weight of the zero-shot bi-encoder teacher's soft targets in the loss (0 to 1; skipped for a "
        "random init, which has no teacher)",
    )
    t.add_argument(
        "--teacher-negatives",
        type=int,
        default=0,
        help="extra pairs per training question: other questions' answers, labelled 0, teacher-scored",
    )
    t.add_argument(
        "--patience",
        type=positive_int,
        help="stop after this many epochs without a better validation accuracy",
    )
    t.add_argument(
        "--single-order",
        action="store_true",
        help="ablation: train the QA branch only (measures what the second order buys; not exportable)",
    )
    t.add_argument(
        "--contrastive",
        type=float,
        default=None,
        help="towers: weight of the in-batch loss (each question must pick its own answer among the batch's "
        "other answers) (default: 1.0 for towers, 0 for cross)",
    )
    t.add_argument(
        "--contrastive-negatives",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the in-batch loss also ranks each question's answer above the batch's negative pairs' "
        "answers, and a question's pairs share a batch (so its own wrong answer is among them) "
        "(default: off)",
    )
    t.add_argument(
        "--contrastive-symmetric",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the in-batch loss also makes each answer pick its own question (default: off)",
    )
    t.add_argument(
        "--freeze-embeddings",
        action="store_true",
        help="keep both encoders' embedding tables as the weight source has them",
    )
    t.add_argument("--no-plot", action="store_true", help="no training_curve.png")
    t.set_defaults(func=_train)


def _add_evaluate(sub) -> None:
    e = _subparser(sub, "evaluate", "accuracy, F1 and confusion matrix of a checkpoint on labeled pairs")
    e.add_argument("checkpoint", help="checkpoint folder (e.g. runs/default/best)")
    e.add_argument("--data", required=True, help="labeled pairs (.csv/.tsv/.jsonl)")
    e.add_argument("--batch-size", type=positive_int, default=64, help="pairs per forward pass")
    e.add_argument(
        "--json", action="store_true", help="print the model's metrics and the baseline's as one JSON object"
    )
    e.add_argument(
        "--baseline-train",
        help="pairs that tune the zero-shot baseline's threshold (default: the checkpoint's training file; "
        "never the evaluated data)",
    )
    e.add_argument("--no-baseline", action="store_true", help="skip the zero-shot baseline")
    e.set_defaults(func=_evaluate)


def _add_export(sub) -> None:
    x = _subparser(sub, "export", "checkpoint → one ONNX graph per variant, parity-gated, as a bundle folder")
    x.add_argument("checkpoint", help="checkpoint folder (e.g. runs/default/best)")
    x.add_argument("--out", required=True, help="bundle folder to write (replaced atomically)")
    x.add_argument(
        "--variants",
        type=variant_list,
        default=None,
        metavar="LIST",
        help=f"comma-separated subset of {','.join(VARIANTS)}; a CPU service needs only what it loads. "
        "Default: all of them, a variant that fails its gate left out with a warning (one named here that "
        "fails is an error, exit 1)",
    )
    x.add_argument(
        "--validation", help="pairs for the parity gate (default: the checkpoint's validation split)"
    )
    x.add_argument(
        "--calibration",
        help="pairs openvino-int8 is calibrated on (default: the checkpoint's training split; never the "
        "parity pairs)",
    )
    x.add_argument(
        "--force", action="store_true", help="write variants that fail the parity gate, marked failed"
    )
    x.add_argument(
        "--skip-failed",
        action="store_true",
        help="a variant named in --variants that fails its gate is left out with a warning, not an error",
    )
    x.add_argument(
        "--int8-weight-type", choices=["QInt8", "QUInt8"], help="int8 weight type (default: QInt8)"
    )
    x.add_argument(
        "--int8-per-tensor", action="store_true", help="per-tensor weight scales (default: per channel)"
    )
    x.add_argument(
        "--int8-quantize-ffn-output",
        action="store_true",
        help="quantize the FFN output MatMuls too (faster, less accurate; default keeps them fp32)",
    )
    x.add_argument(
        "--int8-reduce-range",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="7-bit int8 weights (default: on; 8-bit weights overflow on CPUs without VNNI, so their "
        "results would depend on the CPU)",
    )
    x.add_argument(
        "--external-data",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="each graph's weights in a .data file beside it, handed to the runtime as file contents instead "
        "of parsed out of the graph (faster cold start, less memory; default); --no-external-data: one file "
        "per variant (weights past 2 GB are external anyway)",
    )
    x.set_defaults(func=_export)


def _add_predict(sub) -> None:
    p = _subparser(sub, "predict", "classify pairs with a bundle (torch-free); one JSON line per pair")
    p.description += (
        "\n\noutput fields: question, answer, label (index), label_name,\n"
        "  match_probability (P(the answer fits the question), whatever the label),\n"
        "  probabilities ({label_name: P}), true_label (when the input has one)"
    )
    p.add_argument("bundle", help="bundle folder written by `pairbert export`")
    p.add_argument("-q", "--question", help="one question (with -a; or --input)")
    p.add_argument("-a", "--answer", help="one answer (with -q)")
    p.add_argument(
        "--input",
        help="pairs file (.csv/.tsv/.jsonl; one without pairs is an error, exit 1) or - for JSONL on "
        "standard input (an empty one gives no output, exit 0) (or -q/-a)",
    )
    p.add_argument("--format", choices=["csv", "tsv", "jsonl"], help="input format (default: from extension)")
    p.add_argument(
        "--output",
        help="write JSONL here, replaced only when the run succeeds; after a failure or Ctrl-C the complete "
        "rows written so far are in OUTPUT.partial (default: standard output)",
    )
    _add_variant_and_device(
        p, "graph to run (auto: the fastest that passed parity for the device; openvino-int8 by name only)"
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", *BACKENDS),
        help="auto: what the variant needs (openvino needs pairbert[openvino])",
    )
    p.add_argument("--allow-fallback", action="store_true", help="run on the CPU if CUDA cannot")
    p.add_argument("--threads", type=thread_count, help="intra-op threads (default: the free physical cores)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="pairs per ONNX Runtime run")
    p.add_argument(
        "--chunk",
        type=positive_int,
        default=512,
        help="pairs read before predicting and writing (fewer once their texts reach 8,388,608 characters)",
    )
    p.set_defaults(func=_predict)


def _add_variant_and_device(parser, variant_help: str) -> None:
    """predict's and serve's --variant and --device: the same choices from the one list each."""
    parser.add_argument("--variant", default="auto", choices=("auto", *VARIANTS), help=variant_help)
    parser.add_argument("--device", default="auto", choices=DEVICES, help="auto: CUDA when it really runs")


def _add_bench(sub) -> None:
    b = _subparser(sub, "bench", "torch vs ONNX Runtime: latency, throughput, footprint, accuracy")
    b.add_argument("bundle", help="bundle folder written by `pairbert export`")
    b.add_argument("--checkpoint", help="torch checkpoint (default: the one the bundle was exported from)")
    b.add_argument("--out", default="runs/bench", help="folder for results.json, results.md and plots")
    b.add_argument("--quick", action="store_true", help="smoke run under 2 minutes (CI)")
    b.add_argument(
        "--threads", type=thread_count, help="threads for every contestant (default: physical cores)"
    )
    b.set_defaults(func=_bench)


def _add_serve(sub) -> None:
    from pairbert.serving.settings import ServeSettings as S  # noqa: N817 - defaults only (torch-free, light)

    s = _subparser(
        sub, "serve", "HTTP server with cross-request batching (needs pairbert[serve])", SERVE_EPILOG
    )
    s.add_argument("bundle", help="bundle folder written by `pairbert export`")
    s.add_argument("--host", default=S.host, help="address to listen on (loopback unless you say otherwise)")
    s.add_argument("--port", type=port_number, default=S.port, help="0 picks a free port (printed)")
    _add_variant_and_device(
        s, "variant to serve (auto: the fastest that passed parity; openvino-int8 by name only)"
    )
    s.add_argument("--threads", type=thread_count, help="threads per worker (default: cores / workers)")
    s.add_argument("--workers", type=worker_count, default=S.workers, help="processes; they split the cores")
    s.add_argument("--no-batching", action="store_true", help="run each request alone (a baseline)")
    s.add_argument(
        "--max-wait-ms",
        type=float_between(0, 10_000),
        default=S.max_wait_ms,
        help="longest a pair waits for others (0 to 10000)",
    )
    limits = {
        "--max-batch-tokens": (S.max_batch_tokens, "tokens gathered per run"),
        "--max-batch-pairs": (S.max_batch_pairs, "pairs gathered per run"),
        "--max-queue-pairs": (S.max_queue_pairs, "queued pairs before 503"),
        "--max-request-pairs": (S.max_request_pairs, "pairs (or rerank texts) per request before 413"),
        "--max-text-chars": (S.max_text_chars, "characters per text before 413"),
    }
    for flag, (default, text) in limits.items():
        s.add_argument(flag, type=positive_int, default=default, help=text)
    s.add_argument(
        "--max-connections",
        type=positive_int,
        default=S.max_connections,
        help="open connections per worker before uvicorn answers 503",
    )
    s.add_argument(
        "--header-timeout",
        type=float_between(0.001, 3600),
        default=S.header_timeout_s,
        help="seconds a client may take to send a request's line and headers before 408",
    )
    s.add_argument(
        "--body-timeout",
        type=float_between(0.001, 3600),
        default=S.body_timeout_s,
        help="seconds a client may take to send a request body before 408",
    )
    s.add_argument(
        "--graceful-shutdown",
        type=float_between(0.001, 3600),
        default=S.graceful_shutdown_s,
        help="seconds after SIGTERM before requests still running are cancelled (503)",
    )
    s.add_argument("--no-warmup", action="store_true", help="ready as soon as the bundle is loaded")
    s.set_defaults(func=_serve)


def _add_bench_serve(sub) -> None:
    b = _subparser(sub, "bench-serve", "load benchmark of pairbert serve on loopback (1-128 clients)")
    b.add_argument("bundle", help="bundle folder written by `pairbert export`")
    b.add_argument("--out", default="runs/bench-serve", help="folder for serve_load.json")
    b.add_argument(
        "--clients", type=count_list, default="1,8,32,128", help="comma-separated concurrent client counts"
    )
    b.add_argument(
        "--seconds", type=float_between(0.1, 86_400), default=10.0, help="duration of each measurement"
    )
    b.add_argument(
        "--threads",
        type=thread_count,
        help="threads of server and in-process predictor (default: the physical cores)",
    )
    b.add_argument(
        "--rss-requests",
        type=non_negative_int,
        default=20_000,
        help="requests between RSS readings (0: skip)",
    )
    b.set_defaults(func=_bench_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pairbert", description=__doc__, epilog=EPILOG, formatter_class=_Formatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {pairbert.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_train,
        _add_evaluate,
        _add_export,
        _add_predict,
        _add_bench,
        _add_serve,
        _add_bench_serve,
    ):
        add(sub)
    sub.metavar = "{" + ",".join(sub.choices) + "}"  # a missing command lists the commands, not "COMMAND"
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with 2 on a usage error
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.command == "train":
        from pairbert.builtin_data import BUILTIN_TRAIN, BUILTIN_VALIDATION

        args.explicit = _explicit_train_options(parser, argv)
        if args.train is None:
            args.train = str(BUILTIN_TRAIN)
            args.validation = args.validation or str(BUILTIN_VALIDATION)
    if sys.stdout is None:  # started with standard output closed (`>&-`, some daemons)
        if args.command in ("evaluate", "bench") or (args.command == "predict" and not args.output):
            print(f"pairbert {args.command}: error: standard output is closed", file=sys.stderr)
            return EXIT_ERROR
        sys.stdout = open(os.devnull, "w")  # only progress lines would have gone there
    try:
        args.func(args)
    except UserError as exc:
        getattr(args, "usage_of", parser).print_usage(sys.stderr)
        print(f"pairbert {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PairbertError as exc:
        print(f"pairbert {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # e.g. `pairbert predict ... | head`
        return EXIT_OK
    except OSError as exc:  # the system refused a path (too long, no permission): one line naming it
        from pairbert.runtime.errors import short_path

        where = f"{short_path(exc.filename)}: " if exc.filename else ""
        print(f"pairbert {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as exc:  # predict --output says where the rows written so far went
        note = f" ({exc})" if str(exc) else ""
        how = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"pairbert {args.command}: {how}{note}", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    return EXIT_OK
