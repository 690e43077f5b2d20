"""Where the built-in pair files live, found without importing pairbert.training (which needs torch), so
the CLI, export, benchmarks and torch-free tools all point at the same files."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def data_dir() -> Path:
    """The installed `pairbert.training` package's data/ folder (its spec, not an import: no torch)."""
    spec = importlib.util.find_spec("pairbert.training")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("pairbert.training is not installed; the built-in data ships with it")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


DATA_DIR = data_dir()
BUILTIN_TRAIN = DATA_DIR / "train.jsonl"
BUILTIN_VALIDATION = DATA_DIR / "validation.jsonl"
SMOKE = DATA_DIR / "smoke.jsonl"
