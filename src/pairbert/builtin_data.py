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

BUILTIN_PREFIX = "builtin:"


def portable(path: str | Path | None) -> str | None:
    """How a run records a data file: a built-in file by name ("builtin:train.jsonl": found again wherever
    pairbert is installed), any other as its absolute path (resume, evaluate and export may run from another
    folder than training did)."""
    if path is None or str(path).startswith(BUILTIN_PREFIX):
        return None if path is None else str(path)
    resolved = Path(path).resolve()
    if resolved.parent == DATA_DIR.resolve() and resolved.suffix == ".jsonl":
        return BUILTIN_PREFIX + resolved.name
    return str(resolved)


def local(recorded: str | Path) -> Path:
    """The file a recorded path (`portable`, or a path as older runs recorded it) names on this machine."""
    text = str(recorded)
    return DATA_DIR / text[len(BUILTIN_PREFIX) :] if text.startswith(BUILTIN_PREFIX) else Path(text)
