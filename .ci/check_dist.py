"""Assert the wheel and the sdist hold every module of every stage and the built-in data.

python .ci/check_dist.py DIST_DIR
"""

import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("training", "export", "runtime", "serving", "benchmarks")
DATA = (
    "training/data/train.jsonl",
    "training/data/validation.jsonl",
    "training/data/smoke.jsonl",
    "training/data/qa_bank.tsv",
    "serving/ray_config.yaml",
)

modules = {str(p.relative_to(ROOT)) for stage in STAGES for p in (ROOT / stage).rglob("*.py")}
expected_in_wheel = {f"pairbert/{m}" for m in modules} | {f"pairbert/{d}" for d in DATA}
expected_in_wheel |= {f"pairbert/{p.name}" for p in (ROOT / "src/pairbert").glob("*.py")}
expected_in_sdist = modules | set(DATA)

dist = Path(sys.argv[1])
(wheel,) = dist.glob("pairbert-*.whl")
(sdist,) = dist.glob("pairbert-*.tar.gz")
in_wheel = set(zipfile.ZipFile(wheel).namelist())
with tarfile.open(sdist) as tar:
    in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
missing = sorted(expected_in_wheel - in_wheel) + sorted(expected_in_sdist - in_sdist)
if missing:
    sys.exit(f"missing from the distributions: {missing}")
print(
    f"dist: {wheel.name} ({len(in_wheel)} files) and {sdist.name} hold every stage's "
    f"{len(expected_in_sdist) - len(DATA)} modules and the built-in data"
)
