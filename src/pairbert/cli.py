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
        resume=args.resume,
    )
    result = train(cfg)
    last = result["history"][-1] if result["history"] else {}
    print(json.dumps({"output_dir": result["output_dir"], "best_val_accuracy": result["best_val_accuracy"],
                      "epochs_run": len(result["history"]), "elapsed_s": last.get("elapsed_s")}))


def _evaluate(args: argparse.Namespace) -> None:
    from pairbert.runtime.pair_files import read_pairs
    from pairbert.training.checkpoint import load_checkpoint
    from pairbert.training.loop import evaluate
    from pairbert.training.metrics import format_confusion

    ckpt = load_checkpoint(args.checkpoint)
    pairs = read_pairs(args.data, require_label=True)
    m = evaluate(ckpt.model, ckpt.encoder, pairs, batch_size=args.batch_size)
    print(f"pairs: {m['count']}  accuracy: {m['accuracy']:.4f}  f1: {m['f1']:.4f}  loss: {m['loss']:.4f}")
    print(format_confusion(m["confusion_matrix"]))


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


def _serve(args: argparse.Namespace) -> None:
    from pairbert.serving.settings import ServeSettings

    try:
        from pairbert.serving.server import serve
    except ImportError as exc:  # the [serve] extra is missing: say which to install, no traceback
        raise UserError(str(exc)) from None

    serve(ServeSettings(
        bundle=args.bundle, host=args.host, port=args.port, variant=args.variant, device=args.device,
        threads=args.threads, workers=args.workers, batching=not args.no_batching, max_wait_ms=args.max_wait_ms,
        max_batch_tokens=args.max_batch_tokens, max_batch_pairs=args.max_batch_pairs,
        max_queue_pairs=args.max_queue_pairs, max_request_pairs=args.max_request_pairs,
        max_text_chars=args.max_text_chars, warmup=not args.no_warmup,
    ))


def _bench_serve(args: argparse.Namespace) -> None:
    from pairbert.benchmarks.serve_load import LoadSettings, run_load_benchmark

    run_load_benchmark(LoadSettings(
        bundle=args.bundle, out=args.out, clients=tuple(int(c) for c in args.clients.split(",")),
        seconds=args.seconds, threads=args.threads, rss_requests=args.rss_requests,
    ))


def _add_serve_parsers(sub) -> None:
    from pairbert.serving.settings import ServeSettings as S  # noqa: N817 - defaults only (torch-free, light)

    s = sub.add_parser("serve", help="HTTP server with cross-request batching (needs pairbert[serve])")
    s.add_argument("bundle")
    s.add_argument("--host", default=S.host, help="address to listen on (default: loopback only)")
    s.add_argument("--port", type=int, default=S.port, help="0 picks a free port (printed)")
    s.add_argument("--variant", default="auto")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    s.add_argument("--threads", type=int, help="intra-op threads per worker (default: cores / workers)")
    s.add_argument("--workers", type=int, default=S.workers, help="worker processes; they split the cores")
    s.add_argument("--no-batching", action="store_true", help="run each request alone (a baseline)")
    s.add_argument("--max-wait-ms", type=float, default=S.max_wait_ms, help="longest a pair waits for others")
    s.add_argument("--max-batch-tokens", type=int, default=S.max_batch_tokens, help="tokens gathered per run")
    s.add_argument("--max-batch-pairs", type=int, default=S.max_batch_pairs, help="pairs gathered per run")
    s.add_argument("--max-queue-pairs", type=int, default=S.max_queue_pairs, help="queued pairs before 503")
    s.add_argument("--max-request-pairs", type=int, default=S.max_request_pairs, help="pairs per request before 413")
    s.add_argument("--max-text-chars", type=int, default=S.max_text_chars, help="characters per text before 413")
    s.add_argument("--no-warmup", action="store_true", help="ready as soon as the bundle is loaded")
    s.set_defaults(func=_serve)

    b = sub.add_parser("bench-serve", help="load benchmark of pairbert serve on loopback (1-128 clients)")
    b.add_argument("bundle")
    b.add_argument("--out", default="runs/bench-serve")
    b.add_argument("--clients", default="1,8,32,128", help="comma-separated concurrent client counts")
    b.add_argument("--seconds", type=float, default=10.0, help="duration of each measurement")
    b.add_argument("--threads", type=int, help="intra-op threads of server and in-process predictor")
    b.add_argument("--rss-requests", type=int, default=20_000, help="requests between the two RSS readings")
    b.set_defaults(func=_bench_serve)


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
    t.add_argument("--epochs", type=int, default=5)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=8e-5)
    t.add_argument("--head-lr", type=float, default=None,
                   help="learning rate of the head and both poolers (default: --lr)")
    t.add_argument("--weight-decay", type=float, default=0.01)
    t.add_argument("--warmup-ratio", type=float, default=0.1)
    t.add_argument("--max-length", type=int, default=128)
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    t.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="accuracy, F1 and confusion matrix of a checkpoint on labeled pairs")
    e.add_argument("checkpoint")
    e.add_argument("--data", required=True)
    e.add_argument("--batch-size", type=int, default=64)
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
    _add_serve_parsers(sub)
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
