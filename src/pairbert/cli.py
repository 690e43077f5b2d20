"""The `pairbert` command. Each subcommand imports what it needs when it runs, so `pairbert predict`
works in a torch-free install and `pairbert --help` is instant."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from pairbert.runtime.pair_files import PairFileError


class UserError(Exception):
    """An error the user can fix; printed as one line, no traceback."""


def _train(args: argparse.Namespace) -> None:
    from pairbert.training.loop import TrainConfig, train

    cfg = TrainConfig(
        output_dir=args.output_dir, source=args.source, tokenizer=args.tokenizer, train_file=args.train,
        validation_file=args.validation, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.lr, weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio,
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
    t.add_argument("--epochs", type=int, default=4)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=5e-5)
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

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


_EXTRA_COMMANDS: list = []


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command == "train":
        from pairbert.training.loop import BUILTIN_TRAIN, BUILTIN_VALIDATION

        if args.train is None:
            args.train = str(BUILTIN_TRAIN)
            args.validation = args.validation or str(BUILTIN_VALIDATION)
    try:
        args.func(args)
    except (UserError, PairFileError) as exc:
        print(f"pairbert {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # our own error types carry a user-facing message
        if type(exc).__name__ in _USER_FACING:
            print(f"pairbert {args.command}: error: {exc}", file=sys.stderr)
            return 2
        raise
    return 0


_USER_FACING = {"TrainingError", "CheckpointError", "WeightSourceError", "ExportError", "ParityError",
                "BundleError", "PredictorError"}
