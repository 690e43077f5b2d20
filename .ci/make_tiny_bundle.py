"""Train a tiny random dual-order BERT for a few steps and export it: a real bundle in seconds, for CI."""

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers import build_tokenizer, train_tiny_checkpoint  # noqa: E402

from pairbert.builtin_data import SMOKE  # noqa: E402
from pairbert.export.bundle_writer import export_bundle  # noqa: E402

out = Path(sys.argv[1])
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    checkpoint = train_tiny_checkpoint(tmp, build_tokenizer(tmp / "tokenizer.json"), SMOKE)
    export_bundle(checkpoint, out)
    shutil.copytree(checkpoint, out.parent / "checkpoint")
