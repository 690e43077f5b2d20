"""Carry what the GPU check needs to a device machine that has no network, in calls of at most 64 MiB.

    python -m pairbert.benchmarks.gpu_carry pack CHECKPOINT WHEEL... --out .gpu-carry [--chunk-mib 60]
    python -m pairbert.benchmarks.gpu_carry unpack .gpu-carry --out .gpu-check   (on the device)

`pack` writes the checkpoint with its float32 weights stored as float16 (half the bytes; `unpack` turns
them back into float32, so the device trains nothing and exports/compares one fixed set of weights) and
any wheels (onnxruntime-gpu is ~255 MB), cut into parts, into numbered folders b1, b2, … of at most
`chunk_mib` each, with a SHA256SUMS of the whole files. Carry one folder per device call on one warm
machine (the device keeps ignored paths between calls); `unpack` joins the parts and checks every sum.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

MIB = 2**20


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _half_checkpoint(checkpoint: Path, staging: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(checkpoint, staging, ignore=shutil.ignore_patterns("*.safetensors", "optimizer*", "*.pt"))
    for f in checkpoint.glob("*.safetensors"):
        tensors = load_file(str(f))
        half = {k: v.half() if v.dtype == torch.float32 else v for k, v in tensors.items()}
        save_file(half, str(staging / f.name), metadata={"pairbert_carry": "float32 stored as float16"})


def _cut(files: list[Path], staging: Path, out: Path, limit: int) -> int:
    """Write each file as parts NAME.part000, … into b1, b2, …, each folder holding at most `limit` bytes."""
    folder, used = 1, 0
    for path in files:
        left, index = path.stat().st_size, 0
        with open(path, "rb") as f:
            while index == 0 or left:
                if used >= limit:
                    folder, used = folder + 1, 0
                block = f.read(min(limit - used, left))
                part = out / f"b{folder}" / f"{path.relative_to(staging)}.part{index:03d}"
                part.parent.mkdir(parents=True, exist_ok=True)
                part.write_bytes(block)
                used, left, index = used + len(block), left - len(block), index + 1
    return folder


def pack(checkpoint: Path, wheels: list[Path], out: Path, chunk_mib: int = 60) -> dict:
    """Stage the files, then cut them into parts filling folders b1, b2, … of at most chunk_mib."""
    staging = out / "staging"
    shutil.rmtree(out, ignore_errors=True)
    _half_checkpoint(checkpoint, staging / "checkpoint")
    (staging / "wheels").mkdir()
    for wheel in wheels:
        shutil.copyfile(wheel, staging / "wheels" / wheel.name)
    files = sorted(p for p in staging.rglob("*") if p.is_file())
    sums = {str(p.relative_to(staging)): _sha256(p) for p in files}
    folders = _cut(files, staging, out, chunk_mib * MIB)
    (out / f"b{folders}" / "SHA256SUMS.json").write_text(json.dumps(sums, indent=1))
    shutil.rmtree(staging)
    sizes = {
        f"b{i}": sum(p.stat().st_size for p in (out / f"b{i}").rglob("*") if p.is_file())
        for i in range(1, folders + 1)
    }
    return {"folders": folders, "files": len(sums), "mib": {k: round(v / MIB, 1) for k, v in sizes.items()}}


def unpack(carry: Path, out: Path) -> dict:
    """Join every file's parts (from all folders b*), check the sums, store the weights as float32 again."""
    sums_files = sorted(carry.glob("b*/SHA256SUMS.json"))
    if not sums_files:
        raise SystemExit(f"{carry}: no b*/SHA256SUMS.json (carry the last folder too)")
    sums = json.loads(sums_files[-1].read_text())
    parts: dict[str, list[Path]] = {}
    for part in carry.glob("b*/**/*.part*"):
        folder = carry / part.relative_to(carry).parts[0]
        parts.setdefault(str(part.relative_to(folder)).rsplit(".part", 1)[0], []).append(part)
    missing = sorted(set(sums) - set(parts))
    if missing:
        raise SystemExit(f"{carry}: no parts of {missing} (was every folder carried?)")
    for name, digest in sums.items():
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as f:
            for part in sorted(parts[name], key=lambda p: int(p.name.rsplit(".part", 1)[1])):
                f.write(part.read_bytes())
        if _sha256(target) != digest:
            raise SystemExit(f"{target}: sha256 mismatch (a part is missing or truncated)")
    _full_precision(out / "checkpoint")
    return {"files": len(sums), "out": str(out)}


def _full_precision(checkpoint: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    for f in checkpoint.glob("*.safetensors"):
        tensors = load_file(str(f))
        save_file(
            {k: v.float() if v.dtype == torch.float16 else v for k, v in tensors.items()},
            str(f),
            metadata={"format": "pt"},
        )


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        prog="python -m pairbert.benchmarks.gpu_carry",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("wheels", type=Path, nargs="*")
    p.add_argument("--out", type=Path, default=Path(".gpu-carry"))
    p.add_argument("--chunk-mib", type=int, default=60)
    u = sub.add_parser("unpack")
    u.add_argument("carry", type=Path)
    u.add_argument("--out", type=Path, default=Path(".gpu-check"))
    args = ap.parse_args(argv)
    if args.command == "pack":
        return pack(args.checkpoint, args.wheels, args.out, args.chunk_mib)
    return unpack(args.carry, args.out)


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
