"""Train a tiny random dual-order BERT for a few steps and export it: a real bundle in seconds, for CI."""

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers import build_tokenizer, int8_gate_may_miss_here, train_tiny_checkpoint  # noqa: E402

from pairbert.builtin_data import SMOKE  # noqa: E402
from pairbert.export.bundle_writer import ExportSettings, export_bundle  # noqa: E402

out = Path(sys.argv[1])
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    checkpoint = train_tiny_checkpoint(tmp, build_tokenizer(tmp / "tokenizer.json"), SMOKE)
    # skip_failed: openvino-int8 may miss its gate for this tiny random model on an AMX Xeon (1 of 60
    # labels flipped); the runtime check below needs a bundle, not that variant. Any other miss is an error.
    manifest = export_bundle(checkpoint, out, ExportSettings(skip_failed=True))
    missing = set(ExportSettings().variants) - set(manifest.variants)
    if missing - ({"openvino-int8"} if int8_gate_may_miss_here() else set()):
        sys.exit(f"the tiny bundle lacks {sorted(missing)}: they missed their gates")
    shutil.copytree(checkpoint, out.parent / "checkpoint")
