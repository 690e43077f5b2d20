"""Train a tiny random dual-order BERT for a few steps and export it: a real bundle in seconds, for CI."""

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import build_tokenizer, varied_pairs, write_jsonl  # noqa: E402

from pairbert.export.bundle_writer import export_bundle  # noqa: E402
from pairbert.training.loop import SMOKE, TrainConfig, train  # noqa: E402

out = Path(sys.argv[1])
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    tok = build_tokenizer(tmp / "tokenizer.json")
    val = write_jsonl(tmp / "val.jsonl", varied_pairs())
    train(TrainConfig(output_dir=str(tmp / "run"), source="random:tiny", tokenizer=str(tok), train_file=str(SMOKE),
                      validation_file=str(val), epochs=40, batch_size=5, learning_rate=3e-3, warmup_ratio=0.0,
                      progress=False))
    export_bundle(tmp / "run" / "last", out)
    shutil.copytree(tmp / "run" / "last", out.parent / "checkpoint")
