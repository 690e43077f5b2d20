"""The bundle folder a service copies: ONNX file(s), tokenizer.json, manifest.json.

The manifest is described here in code (frozen dataclasses) and checked on load: its format version, and
the sha256 of every file a predictor is about to use.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .contract import GraphContract
from .errors import PairbertError

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"


class BundleError(PairbertError, ValueError):
    """A bundle that cannot be used as it is: missing, tampered with, or of another format."""


@dataclass(frozen=True)
class VariantInfo:
    name: str
    file: str
    precision: str  # "fp32", "int8", "fp16"
    size_bytes: int
    sha256: str
    intended_device: str  # "cpu", "cuda", "any"
    parity: dict = field(default_factory=dict)  # figures from the export-time parity gate
    passed_parity: bool = True
    validated_on: str = "cpu"  # where the parity gate ran; "none" when it could not run
    fused_ops: dict = field(default_factory=dict)
    external_data: tuple[str, ...] = ()  # extra weight files (models over 2 GB)
    external_sha256: tuple[str, ...] = ()
    notes: str = ""


@dataclass(frozen=True)
class Manifest:
    format_version: int
    labels: tuple[str, ...]
    max_length: int
    contract: GraphContract
    variants: dict[str, VariantInfo]
    tokenizer_file: str = TOKENIZER_FILE
    tokenizer_sha256: str = ""
    versions: dict = field(default_factory=dict)
    source_checkpoint: str = ""
    source_weights_sha256: str = (
        ""  # of the checkpoint's weights: a benchmark checks it compares the same model
    )
    created: str = ""

    def to_json(self) -> str:
        d = asdict(self)
        d["contract"] = self.contract.to_dict()
        d["labels"] = list(self.labels)
        return json.dumps(d, indent=2)

    @classmethod
    def from_dict(cls, d: dict, where: str = "manifest") -> Manifest:
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleError(
                f"{where}: format_version {version!r}, this pairbert reads version {FORMAT_VERSION}; "
                "re-export the bundle with a matching pairbert"
            )
        try:
            variants = {}
            for name, v in d["variants"].items():
                v = dict(v)
                v["external_data"] = tuple(v.get("external_data", ()))
                v["external_sha256"] = tuple(v.get("external_sha256", ()))
                variants[name] = VariantInfo(**v)
            return cls(
                format_version=version,
                labels=tuple(d["labels"]),
                max_length=int(d["max_length"]),
                contract=GraphContract.from_dict(d["contract"]),
                variants=variants,
                tokenizer_file=d.get("tokenizer_file", TOKENIZER_FILE),
                tokenizer_sha256=d.get("tokenizer_sha256", ""),
                versions=d.get("versions", {}),
                source_checkpoint=d.get("source_checkpoint", ""),
                source_weights_sha256=d.get("source_weights_sha256", ""),
                created=d.get("created", ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{where}: malformed manifest ({type(exc).__name__}: {exc})") from None


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(checkpoint_dir: Path) -> str:
    """One digest over a checkpoint's *.safetensors files (sorted by name); "" when it has none."""
    files = sorted(Path(checkpoint_dir).glob("*.safetensors"))
    if not files:
        return ""
    return hashlib.sha256("".join(f"{f.name}:{sha256_file(f)}\n" for f in files).encode()).hexdigest()


def read_manifest(bundle_dir: str | Path) -> Manifest:
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_FILE
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir}: no such bundle folder")
    if not path.is_file():
        raise BundleError(f"{bundle_dir}: no {MANIFEST_FILE}; not a pairbert bundle")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object")
    return Manifest.from_dict(data, where=str(path))


def verify_file(bundle_dir: Path, name: str, expected_sha256: str) -> Path:
    path = Path(bundle_dir) / name
    if not path.is_file():
        raise BundleError(f"{path}: listed in the manifest but missing")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise BundleError(
            f"{path}: checksum mismatch (manifest {expected_sha256[:12]}…, file {actual[:12]}…); "
            "the file was changed or corrupted after export"
        )
    return path


def require_variant(bundle_dir: Path, manifest: Manifest, variant: str) -> VariantInfo:
    if variant not in manifest.variants:
        raise BundleError(
            f"{bundle_dir}: variant {variant!r} not in this bundle (it has: {', '.join(manifest.variants)})"
        )
    return manifest.variants[variant]


def verify_variant(bundle_dir: Path, manifest: Manifest, variant: str) -> Path:
    info = require_variant(bundle_dir, manifest, variant)
    for extra, digest in zip(info.external_data, info.external_sha256, strict=True):
        verify_file(bundle_dir, extra, digest)
    return verify_file(bundle_dir, info.file, info.sha256)
