"""The checkpoint folder: everything needed to rebuild the model and its exact tokenization.

    config.json, model.safetensors    save_pretrained of the model (config holds the BERT config)
    tokenizer.json                    the tokenizer the model was trained with
    pairbert.json                     max_length, labels, training settings, epoch, metrics
    trainer_state.pt                  optimizer + scheduler (only in the resumable `last` checkpoint)

Writes are atomic: a folder is written under a temporary name, then renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from pairbert.runtime.errors import PairbertError
from pairbert.runtime.tokenization import PairEncoder

from .model import DualOrderBertForPairClassification

SETTINGS_FILE = "pairbert.json"
TRAINER_STATE_FILE = "trainer_state.pt"
TOKENIZER_FILE = "tokenizer.json"
LABELS = ("no_match", "match")


class CheckpointError(PairbertError, ValueError):
    pass


@dataclass
class Checkpoint:
    model: DualOrderBertForPairClassification
    encoder: PairEncoder
    settings: dict
    path: Path


def save_checkpoint(
    target: Path,
    model: DualOrderBertForPairClassification,
    tokenizer_file: Path,
    settings: dict,
    trainer_state: dict | None = None,
) -> Path:
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    hf_logging.disable_progress_bar()
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}-{time.monotonic_ns()}"
    model.save_pretrained(tmp, safe_serialization=True)
    shutil.copyfile(tokenizer_file, tmp / TOKENIZER_FILE)
    (tmp / SETTINGS_FILE).write_text(json.dumps({"labels": list(LABELS), **settings}, indent=2))
    if trainer_state is not None:
        torch.save(trainer_state, tmp / TRAINER_STATE_FILE)
    old = target.parent / f".old-{target.name}"
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def find_checkpoint(path: Path) -> Path:
    """A checkpoint folder, or where an interrupted swap left it."""
    path = Path(path)
    if (path / SETTINGS_FILE).is_file():
        return path
    old = path.parent / f".old-{path.name}"
    if (old / SETTINGS_FILE).is_file():
        return old
    raise CheckpointError(f"{path}: not a pairbert checkpoint (no {SETTINGS_FILE})")


def load_checkpoint(path: Path, attn_implementation: str | None = None) -> Checkpoint:
    path = find_checkpoint(Path(path))
    settings = json.loads((path / SETTINGS_FILE).read_text())
    if not (path / TOKENIZER_FILE).is_file():
        raise CheckpointError(f"{path}: {TOKENIZER_FILE} missing")
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = DualOrderBertForPairClassification.from_pretrained(path, **kwargs)
    if attn_implementation:
        model.set_attention(attn_implementation)
    model.eval()
    encoder = PairEncoder.from_file(path / TOKENIZER_FILE, settings.get("max_length", 128))
    return Checkpoint(model, encoder, settings, path)


def load_trainer_state(path: Path) -> dict:
    file = Path(path) / TRAINER_STATE_FILE
    if not file.is_file():
        raise CheckpointError(f"{path}: no {TRAINER_STATE_FILE}; only the `last` checkpoint can resume")
    return torch.load(file, map_location="cpu", weights_only=False)
