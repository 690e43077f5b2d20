"""The `pairbert` command. Each subcommand imports what it needs when it runs, so `pairbert predict`
works in a torch-free install and `pairbert --help` is instant."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from pairbert.runtime.errors import PairbertError


class UserError(PairbertError):
    """An error the user can fix; printed as one line, no traceback."""


def _train(args: argparse.Namespace) -> None:
    from pairbert.training.loop import TrainConfig, train

    cfg = TrainConfig(
        output_dir=args.output_dir, source=args.source, tokenizer=args.tokenizer, train_file=args.train,
        validation_file=args.validation, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.lr, head_learning_rate=args.head_lr, weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio,
        max_length=args.max_length, seed=args.seed, device=args.device, progress=not args.quiet,
        resume=args.resume, pooling=args.pooling, patience=args.patience, distill=args.distill,
        teacher_negatives=args.teacher_negatives, plot=not args.no_plot, single_order=args.single_order,
        pairing=args.pairing,
    )
    result = train(cfg)
    last = result["history"][-1] if result["history"] else {}
    print(json.dumps({"output_dir": result["output_dir"], "best_val_accuracy": result["best_val_accuracy"],
                      "epochs_run": len(result["history"]), "elapsed_s": last.get("elapsed_s")}))


def _evaluate(args: argparse.Namespace) -> None:
    from pathlib import Path

    from pairbert.runtime.pair_files import read_pairs
    from pairbert.training.checkpoint import load_checkpoint
    from pairbert.training.loop import evaluate
    from pairbert.training.metrics import format_confusion

    ckpt = load_checkpoint(args.checkpoint)
    pairs = read_pairs(args.data, require_label=True)
    m = evaluate(ckpt.model, ckpt.encoder, pairs, batch_size=args.batch_size)
    if args.baseline_train and Path(args.baseline_train).resolve() == Path(args.data).resolve():
        raise UserError("--baseline-train must not be the evaluated file: the threshold would see its labels")
    report = {**m, "data": args.data, "baseline": None}  # the model's metrics at the top level
    if not args.no_baseline:
        report["baseline"] = _baseline_report(ckpt, pairs, args.baseline_train)
    if args.json:
        print(json.dumps(report))
        return
    print(f"model     pairs: {m['count']}  accuracy: {m['accuracy']:.4f}  f1: {m['f1']:.4f}  loss: {m['loss']:.4f}")
    print(format_confusion(m["confusion_matrix"]))
    b = report["baseline"]
    if b is None:
        return
    if "skipped" in b:
        print(f"baseline  skipped: {b['skipped']}")
        return
    print(f"baseline  pairs: {b['count']}  accuracy: {b['accuracy']:.4f}  f1: {b['f1']:.4f}  "
          f"(zero-shot cosine of {b['source']!r} mean-pooled embeddings ≥ {b['threshold']:.4f}, "
          f"threshold tuned on {b['tuned_on']})")
    print(format_confusion(b["confusion_matrix"]))
    print(f"training gained {100 * (m['accuracy'] - b['accuracy']):+.1f} accuracy points over the baseline")


def _baseline_report(ckpt, pairs, train_file: str | None) -> dict:
    """The zero-shot baseline of the checkpoint's weight source, tuned on its training split (or
    `train_file`), applied to `pairs`. A source without one (random init) is reported as skipped."""
    from pathlib import Path

    from pairbert.training.baseline import baseline_for, evaluate_baseline
    from pairbert.training.weights import WeightSourceError

    recipe = ckpt.settings.get("train_config", {})
    source = recipe.get("source")
    train_file = train_file or recipe.get("train_file")
    if not source or not train_file:
        return {"skipped": "the checkpoint records no weight source or training file; pass --baseline-train"}
    if not Path(train_file).is_file():
        return {"skipped": f"training file {train_file} not found; pass --baseline-train"}
    try:
        embedder, fit = baseline_for(source, train_file, ckpt.settings.get("max_length", 128))
    except WeightSourceError as exc:
        return {"skipped": str(exc)}
    return evaluate_baseline(embedder, fit, pairs)


def _export(args: argparse.Namespace) -> None:
    from pairbert.export.bundle_writer import ExportSettings, export_bundle
    from pairbert.export.precision import Int8Options

    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    settings = ExportSettings(
        variants=variants, validation_file=args.validation, force=args.force,
        int8=Int8Options(weight_type=args.int8_weight_type, per_channel=not args.int8_per_tensor,
                         reduce_range=args.int8_reduce_range, ffn_output_fp32=not args.int8_quantize_ffn_output),
        external_data=True if args.external_data else None,
    )
    export_bundle(args.checkpoint, args.out, settings)


def _predict(args: argparse.Namespace) -> None:
    from pairbert.runtime.pair_files import iter_pairs
    from pairbert.runtime.predictor import PairClassifier

    if (args.question is None) != (args.answer is None):
        raise UserError("give both -q and -a, or --input")
    if (args.question is None) == (args.input is None):
        raise UserError("give either -q/-a or --input")
    clf = PairClassifier.load(args.bundle, variant=args.variant, device=args.device, threads=args.threads,
                              allow_fallback=args.allow_fallback)
    logging.getLogger(__name__).info("variant %s on %s", clf.variant, clf.provider)
    names = clf.label_names
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        def emit(batch) -> None:
            result = clf.predict([(p.question, p.answer) for p in batch], batch_size=args.batch_size)
            for pair, label, prob in zip(batch, result.labels, result.match_probability):
                row = {"question": pair.question, "answer": pair.answer, "label": int(label),
                       "label_name": names[int(label)], "probability": round(float(prob), 6)}
                if pair.label is not None:
                    row["true_label"] = pair.label
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()

        if args.question is not None:
            from pairbert.runtime.pair_files import Pair

            emit([Pair(args.question, args.answer)])
            return
        batch = []
        # Streams: reads and writes one chunk at a time; a malformed line stops with its line number,
        # after everything before it was written.
        try:
            for pair in iter_pairs(args.input, fmt=args.format):
                batch.append(pair)
                if len(batch) >= args.chunk:
                    emit(batch)
                    batch = []
        finally:
            if batch:
                emit(batch)
    finally:
        if out is not sys.stdout:
            out.close()


def _bench(args: argparse.Namespace) -> None:
    from pathlib import Path

    from pairbert.benchmarks.suite import BenchmarkError, run_suite

    out = Path(args.out)
    print(f"benchmarking {args.bundle} ({'quick' if args.quick else 'full'}) → {out}", flush=True)
    report = run_suite(Path(args.bundle), Path(args.checkpoint) if args.checkpoint else None, out, args.quick,
                       args.threads)
    print((out / "results.md").read_text())
    if report["problems"]:
        raise BenchmarkError("; ".join(report["problems"]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pairbert", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train the dual-order BERT pair classifier")
    t.add_argument("--output-dir", default="runs/default")
    t.add_argument("--source", default="minilm",
                   help='"minilm" (packaged, default), a local BERT folder, a hub name, or "random:NAME"')
    t.add_argument("--tokenizer", help="tokenizer.json (default: the source's own)")
    t.add_argument("--train", default=None, help="training pairs (.csv/.tsv/.jsonl; default: built-in data)")
    t.add_argument("--validation", default=None, help="validation pairs (default: built-in validation split)")
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=2e-5, help="learning rate of the two encoders")
    t.add_argument("--head-lr", type=float, default=None,
                   help="learning rate of the head and both poolers (default: 1e-3 for towers, --lr for cross)")
    t.add_argument("--weight-decay", type=float, default=0.01)
    t.add_argument("--warmup-ratio", type=float, default=0.1)
    t.add_argument("--max-length", type=int, default=128)
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    t.add_argument("--pooling", default="auto", choices=["auto", "cls", "mean", "cls+mean"],
                   help="how each branch is pooled (recorded in the checkpoint); auto: mean for towers, "
                        "the notebook's [CLS] pooler for cross")
    t.add_argument("--pairing", default="auto", choices=["auto", "cross", "towers"],
                   help="cross: each branch reads the whole pair; towers: the QA branch encodes the question, "
                        "the AQ branch the answer, head initialised from the zero-shot baseline; auto: towers "
                        "when the source has a baseline (pretrained), cross for a random init")
    t.add_argument("--patience", type=int, default=None,
                   help="stop after this many epochs without a better validation accuracy")
    t.add_argument("--distill", type=float, default=0.5,
                   help="weight of the zero-shot bi-encoder teacher's soft targets in the loss (0 to 1; "
                        "skipped for a random init, which has no teacher)")
    t.add_argument("--teacher-negatives", type=int, default=0,
                   help="extra pairs per training question: other questions' answers, labelled 0")
    t.add_argument("--no-plot", action="store_true", help="no training_curve.png")
    t.add_argument("--single-order", action="store_true",
                   help="ablation: train the QA branch only (measures what the second order buys; not exportable)")
    t.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="accuracy, F1 and confusion matrix of a checkpoint on labeled pairs")
    e.add_argument("checkpoint")
    e.add_argument("--data", required=True)
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--baseline-train", help="pairs that tune the zero-shot baseline's threshold "
                   "(default: the checkpoint's training file; never the evaluated data)")
    e.add_argument("--no-baseline", action="store_true", help="skip the zero-shot baseline")
    e.add_argument("--json", action="store_true", help="print model and baseline metrics as JSON")
    e.set_defaults(func=_evaluate)

    x = sub.add_parser("export", help="checkpoint → one ONNX graph per variant, parity-gated, as a bundle folder")
    x.add_argument("checkpoint")
    x.add_argument("--out", required=True, help="bundle folder to write (replaced atomically)")
    x.add_argument("--variants", default="fp32,optimized,int8,fp16")
    x.add_argument("--validation", help="pairs for the parity gate (default: the checkpoint's validation split)")
    x.add_argument("--force", action="store_true", help="write variants that fail the parity gate, marked failed")
    x.add_argument("--int8-weight-type", default="QInt8", choices=["QInt8", "QUInt8"])
    x.add_argument("--int8-per-tensor", action="store_true", help="per-tensor weight scales (default: per channel)")
    x.add_argument("--int8-quantize-ffn-output", action="store_true",
                   help="quantize the FFN output MatMuls too (faster, less accurate; default keeps them fp32)")
    x.add_argument("--int8-reduce-range", action="store_true")
    x.add_argument("--external-data", action="store_true", help="weights in a separate .data file (automatic past 2 GB)")
    x.set_defaults(func=_export)

    p = sub.add_parser("predict", help="classify pairs with a bundle (torch-free); JSONL out")
    p.add_argument("bundle")
    p.add_argument("-q", "--question")
    p.add_argument("-a", "--answer")
    p.add_argument("--input", help="pairs file (.csv/.tsv/.jsonl) or - for JSONL on standard input")
    p.add_argument("--format", choices=["csv", "tsv", "jsonl"], help="input format (default: from extension)")
    p.add_argument("--output", help="write JSONL here instead of standard output")
    p.add_argument("--variant", default="auto")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--allow-fallback", action="store_true", help="run on the CPU if CUDA cannot")
    p.add_argument("--threads", type=int)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--chunk", type=int, default=512, help="pairs read before predicting and writing")
    p.set_defaults(func=_predict)

    b = sub.add_parser("bench", help="torch vs ONNX Runtime: latency, throughput, footprint, accuracy")
    b.add_argument("bundle")
    b.add_argument("--checkpoint", help="torch checkpoint (default: the one the bundle was exported from)")
    b.add_argument("--out", default="runs/bench")
    b.add_argument("--quick", action="store_true", help="smoke run under 2 minutes (CI)")
    b.add_argument("--threads", type=int, help="threads for every contestant (default: physical cores)")
    b.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command == "train":
        from pairbert.builtin_data import BUILTIN_TRAIN, BUILTIN_VALIDATION

        if args.train is None:
            args.train = str(BUILTIN_TRAIN)
            args.validation = args.validation or str(BUILTIN_VALIDATION)
    try:
        args.func(args)
    except PairbertError as exc:
        print(f"pairbert {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `pairbert predict ... | head`
        return 0
    return 0
