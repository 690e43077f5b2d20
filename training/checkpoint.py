"""The checkpoint folder: everything needed to rebuild the model and its exact tokenization.

    config.json, model.safetensors    save_pretrained of the model (config holds the BERT config)
    tokenizer.json                    the tokenizer the model was trained with
    pairbert.json                     max_length, labels, training settings, epoch, metrics
    trainer_state.pt                  optimizer + scheduler state dicts (only in the resumable `last`)
    trainer_state.json                epoch, step, best accuracy, history (beside trainer_state.pt)

Writes are atomic and crash-safe: a folder is written under a temporary name, then swapped into place by
runtime.atomic_dir (a kill at any point leaves a complete checkpoint findable; the next writer recovers).
trainer_state.pt holds tensors, numbers and strings only and is read with `weights_only=True`: a checkpoint
copied from elsewhere cannot run code on `--resume`.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from pairbert.builtin_data import local
from pairbert.runtime import atomic_dir
from pairbert.runtime.contract import label_names_problem
from pairbert.runtime.errors import PairbertError, first_line
from pairbert.runtime.tokenization import PairEncoder

from .model import DualOrderBertForPairClassification

SETTINGS_FILE = "pairbert.json"
TRAINER_STATE_FILE = "trainer_state.pt"
TRAINER_PROGRESS_FILE = "trainer_state.json"
PROGRESS_KEYS = ("history", "best_accuracy", "epoch", "step")
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
LABELS = ("no_match", "match")


class CheckpointError(PairbertError, ValueError):
    pass


@dataclass
class Checkpoint:
    model: DualOrderBertForPairClassification
    encoder: PairEncoder
    settings: dict
    path: Path

    def recorded_file(self, name: str) -> str | None:
        """The path of the file the run recorded as `name` ("train_file", "validation_file") on this
        machine, or None."""
        value = self.settings.get("train_config", {}).get(name)
        return str(local(value)) if isinstance(value, str) else None


def save_checkpoint(
    target: Path,
    model: DualOrderBertForPairClassification,
    tokenizer_file: Path,
    settings: dict,
    trainer_state: dict | None = None,
) -> Path:
    target = Path(target)
    require_finite(model, target)
    hf_logging.disable_progress_bar()
    tmp = atomic_dir.temp_dir(target)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        shutil.copyfile(tokenizer_file, tmp / TOKENIZER_FILE)
        (tmp / SETTINGS_FILE).write_text(json.dumps({"labels": list(LABELS), **settings}, indent=2))
        if trainer_state is not None:
            tensors = {k: v for k, v in trainer_state.items() if k not in PROGRESS_KEYS}
            torch.save(tensors, tmp / TRAINER_STATE_FILE)
            progress = {k: trainer_state[k] for k in PROGRESS_KEYS if k in trainer_state}
            (tmp / TRAINER_PROGRESS_FILE).write_text(json.dumps(progress, indent=2))
        atomic_dir.swap_into_place(tmp, target, SETTINGS_FILE, "pairbert checkpoint")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def check_output_dir(out: Path) -> None:
    """Before training starts: `best/` and `last/` in `out` may be replaced only if they are checkpoints (or
    absent, or empty), never a user's folders that happen to have those names."""
    for name in ("best", "last"):
        atomic_dir.check_replaceable(Path(out) / name, SETTINGS_FILE, "pairbert checkpoint")


def require_finite(model: torch.nn.Module, target: Path | str = "checkpoint") -> None:
    """Refuse to save NaN/inf weights: a diverged model must never become `best/` or `last/`."""
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise CheckpointError(
                f"{target}: parameter {name} has non-finite values (training diverged); not saved"
            )


def find_checkpoint(path: Path) -> Path:
    """A checkpoint folder, or where an interrupted swap left it complete (never renames anything)."""
    path = Path(path)
    found = atomic_dir.locate(path)
    if (found / SETTINGS_FILE).is_file():
        return found
    if not found.exists():
        raise CheckpointError(f"{path}: no such checkpoint folder")
    if not found.is_dir():
        raise CheckpointError(f"{path}: is a file, not a checkpoint folder")
    raise CheckpointError(f"{path}: not a pairbert checkpoint (no {SETTINGS_FILE})")


def read_settings(path: Path) -> dict:
    file = Path(path) / SETTINGS_FILE
    try:
        settings = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON or UTF-8, a huge integer
        raise CheckpointError(f"{file}: unreadable ({exc})") from None
    if not isinstance(settings, dict):
        raise CheckpointError(f"{file}: expected a JSON object")
    return settings


def length_problem(max_length: object, model) -> str | None:
    """Why `max_length` cannot be fed to `model` (more tokens than its position table), or None."""
    positions = model.qa_encoder.config.max_position_embeddings
    if isinstance(max_length, int) and not isinstance(max_length, bool) and max_length > positions:
        return f"max_length {max_length} exceeds the model's {positions} positions"
    return None


def vocab_problem(encoder: PairEncoder, model) -> str | None:
    """Why `encoder`'s ids cannot be fed to `model` (ids past its embedding table), or None: they would fail
    deep in torch, or read garbage in a graph."""
    table = model.qa_encoder.embeddings.word_embeddings.num_embeddings
    if encoder.id_bound > table:
        return f"gives token ids up to {encoder.id_bound - 1}, past the model's {table} embeddings"
    return None


def load_checkpoint(path: Path, attn_implementation: str | None = None) -> Checkpoint:
    path = find_checkpoint(Path(path))
    settings = read_settings(path)
    if not (path / TOKENIZER_FILE).is_file():
        raise CheckpointError(f"{path}: {TOKENIZER_FILE} missing")
    model = _load_model(path, attn_implementation)
    labels = settings.get("labels", list(LABELS))
    width = model.classifier.out_features
    problem = label_names_problem(labels, width, "the model's head has")
    if "labels" not in settings and problem:
        problem = (
            f"no field 'labels' (a {len(LABELS)}-label head is assumed) but the model's head has {width}"
        )
    if problem:
        raise CheckpointError(f"{path / SETTINGS_FILE}: {problem}")
    if attn_implementation:
        model.set_attention(attn_implementation)
    model.eval()
    broken = next(
        (n for n, t in model.state_dict().items() if t.is_floating_point() and not t.isfinite().all()), None
    )
    if broken is not None:  # it would answer NaN for every pair (export's parity gate said only "[shapes]")
        raise CheckpointError(f"{path / WEIGHTS_FILE}: {broken} holds NaN or infinite values")
    problem = length_problem(settings.get("max_length", 128), model)
    if problem:
        raise CheckpointError(f"{path / SETTINGS_FILE}: {problem}")
    encoder = PairEncoder.from_file(path / TOKENIZER_FILE, settings.get("max_length", 128))
    problem = vocab_problem(encoder, model)
    if problem:
        raise CheckpointError(f"{path / TOKENIZER_FILE}: {problem} (a tokenizer from another model?)")
    encoder = encoder.for_pairing(model.config.pairing)
    return Checkpoint(model, encoder, settings, path)


def _load_model(path: Path, attn_implementation: str | None) -> DualOrderBertForPairClassification:
    """The model from config.json + model.safetensors (never a pickle), refused unless every weight the
    config asks for is in the file and nothing else is: a missing tensor would otherwise stay randomly
    initialised, and export's parity gate compares against that same broken model."""
    config = path / CONFIG_FILE
    try:
        parsed = json.loads(config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{config}: missing") from None
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON or UTF-8, a huge integer
        raise CheckpointError(f"{config}: unreadable ({exc})") from None
    if not isinstance(parsed, dict):
        raise CheckpointError(f"{config}: expected a JSON object")
    if not (path / WEIGHTS_FILE).is_file():
        raise CheckpointError(
            f"{path}: {WEIGHTS_FILE} missing (pairbert reads weights only from safetensors)"
        )
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # its load report would precede our own one-line error
    hf_logging.disable_progress_bar()  # and its "Loading weights" bar every evaluate/export output
    try:
        model, info = DualOrderBertForPairClassification.from_pretrained(
            path, output_loading_info=True, use_safetensors=True, **kwargs
        )
    except Exception as exc:  # transformers and safetensors raise many types for a damaged folder
        raise CheckpointError(f"{path}: cannot load the model ({first_line(exc)})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    wrong = {
        kind: sorted(info.get(key) or ())
        for kind, key in (("missing", "missing_keys"), ("unexpected", "unexpected_keys"))
    }
    wrong = {kind: names for kind, names in wrong.items() if names}
    if wrong or info.get("mismatched_keys") or info.get("error_msgs"):
        detail = "; ".join(
            f"{kind} {', '.join(names[:3])}{' …' if len(names) > 3 else ''} ({len(names)})"
            for kind, names in wrong.items()
        )
        raise CheckpointError(
            f"{path / WEIGHTS_FILE}: does not hold the weights {CONFIG_FILE} describes "
            f"({detail or 'mismatched shapes'})"
        )
    return model


def load_trainer_state(path: Path) -> dict:
    """Optimizer and scheduler state (tensors only, loaded with weights_only=True) plus progress (JSON)."""
    file = Path(path) / TRAINER_STATE_FILE
    if not file.is_file():
        raise CheckpointError(f"{path}: no {TRAINER_STATE_FILE}; only the `last` checkpoint can resume")
    try:
        with warnings.catch_warnings():  # torch warns about legacy pickles before refusing them
            warnings.simplefilter("ignore")
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for anything but plain data; others for corrupt files
        # torch's message opens by advising to switch its weights-only loader off, the one thing never
        # to do here; what it refused (e.g. "unsupported GLOBAL posix.system") comes after it
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        if lines and lines[0].startswith("Weights only load failed"):
            lines = [line for line in lines[1:] if not line.startswith("Check the documentation")]
        first = lines[0] if lines else type(exc).__name__
        raise CheckpointError(
            f"{file}: refused to load (it holds more than tensors and plain data, or is corrupt: {first}); "
            "pairbert never unpickles code from a checkpoint"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: expected a dict of optimizer and scheduler state")
    progress_file = Path(path) / TRAINER_PROGRESS_FILE
    if progress_file.is_file():  # checkpoints written before the split keep progress inside the .pt
        try:
            state.update(json.loads(progress_file.read_text(encoding="utf-8")))
        except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, an integer past the digit limit
            raise CheckpointError(f"{progress_file}: unreadable ({exc})") from None
    missing = [k for k in ("optimizer", "scheduler", *PROGRESS_KEYS) if k not in state]
    if missing:
        raise CheckpointError(f"{path}: trainer state lacks {', '.join(missing)}")
    for key, ok in PROGRESS_CHECKS.items():
        if not ok(state[key]):
            raise CheckpointError(f"{path}: trainer state's {key} is {state[key]!r} (damaged or hand-edited)")
    return state


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


PROGRESS_CHECKS = {
    "epoch": _count,
    "step": _count,
    "best_accuracy": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "history": lambda v: isinstance(v, list) and all(isinstance(h, dict) for h in v),
}


# Settings that define a run: resuming with a different value would silently train another run.
RUN_SETTINGS = (
    "source",
    "tokenizer",
    "train_file",
    "validation_file",
    "epochs",
    "batch_size",
    "learning_rate",
    "head_learning_rate",
    "weight_decay",
    "warmup_ratio",
    "max_grad_norm",
    "max_length",
    "seed",
    "pooling",
    "pairing",
    "distill",
    "teacher_negatives",
    "patience",
    "single_order",
    "contrastive_negatives",
    "contrastive_symmetric",
    "contrastive",
    "freeze_embeddings",
)


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float)) and float(a) == float(b))


def stored_train_config(path: Path) -> dict:
    """The training settings a checkpoint was written with ({} when it predates recording them)."""
    found = find_checkpoint(Path(path))
    config = read_settings(found).get("train_config", {})
    if not isinstance(config, dict):  # resuming would silently fall back to the defaults
        raise CheckpointError(
            f"{found / SETTINGS_FILE}: train_config is {type(config).__name__}, not an object"
        )
    return config


def resume_differences(stored: dict, given: dict, names: tuple[str, ...] = RUN_SETTINGS) -> dict:
    """{name: (checkpoint's value, given value)} for each run setting that differs."""
    return {
        n: (stored[n], given.get(n))
        for n in names
        if n in stored and n in given and not _same(stored[n], given[n])
    }
