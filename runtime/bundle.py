"""The bundle folder a service copies: ONNX file(s), tokenizer.json, manifest.json.

The manifest is described here in code (frozen dataclasses) and checked on load: its format version, every
field's type and range (one BundleError naming the field), its own checksum, and the sha256 of every file a
predictor is about to use. File names in the manifest are plain names inside the bundle folder (no folders,
no `..`, nothing absolute, no symbolic link out of the bundle).

Format 2 (this one) adds `manifest_sha256`: the sha256 of the manifest's canonical JSON (sorted keys, no
spaces, the field itself left out). Editing the manifest by hand (say, swapping the label names, which would
silently invert every answer) makes the bundle refuse to load. Format 1 bundles, written before manifests
were checksummed, are refused with a request to re-export: accepting an unchecked manifest would let anyone
bypass the check by deleting the field.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from . import atomic_dir
from .contract import GraphContract, TensorSpec, label_names_problem, orders_padded_apart
from .errors import PairbertError, first_line, short_path
from .tokenization import FEEDS, MAX_MAX_LENGTH, MIN_MAX_LENGTH, PairEncoder
from .variants import PRECISION

FORMAT_VERSION = 2
MAX_CHECK_ROWS = 8  # pairs the manifest's answer_check may hold (export writes 2): a bounded check at load
DIGEST_FIELD = "manifest_sha256"
MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
PRECISIONS = tuple(sorted(set(PRECISION.values())))
DEVICES = ("cpu", "cuda", "any")
_HEX64 = re.compile(r"[0-9a-f]{64}")
# Variant names are open (export's extra validators may add their own; the predictor only picks the ones it
# knows), but they are plain names: they appear in file names, logs and cache keys.
_VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


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
    external_data: tuple[str, ...] = ()  # the graph's weight file(s) beside it (export default)
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
    feed: str = "pair"  # what the runtime feeds each order (runtime/tokenization.py FEEDS)
    versions: dict = field(default_factory=dict)
    source_checkpoint: str = ""
    source_weights_sha256: str = (
        ""  # of the checkpoint's weights: a benchmark checks it compares the same model
    )
    created: str = ""
    # {"feed": graph inputs of pairbert's check pairs, "probabilities": {variant: its answers at export}}
    # (runtime/answer_check.py); {} in bundles written before it
    answer_check: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["contract"] = self.contract.to_dict()
        d["labels"] = list(self.labels)
        for v in d["variants"].values():
            v["external_data"], v["external_sha256"] = list(v["external_data"]), list(v["external_sha256"])
        return d

    def to_json(self) -> str:
        d = self.to_dict()
        d[DIGEST_FIELD] = manifest_digest(d)
        return json.dumps(d, indent=2)

    @classmethod
    def from_dict(cls, d: dict, where: str = "manifest") -> Manifest:
        version = d.get("format_version")
        if version != FORMAT_VERSION or isinstance(version, bool):
            hint = " (written before manifests were checksummed)" if version == 1 else ""
            raise BundleError(
                f"{where}: format_version {version!r}{hint}, this pairbert reads version {FORMAT_VERSION}; "
                "re-export the bundle with a matching pairbert"
            )
        digest = d.get(DIGEST_FIELD)
        if not isinstance(digest, str) or digest != manifest_digest(d):
            raise BundleError(
                f"{where}: field '{DIGEST_FIELD}' does not match the manifest's content; the "
                "manifest was edited or corrupted after export (re-export the bundle)"
            )
        unknown = set(d) - {f for f in cls.__dataclass_fields__} - {DIGEST_FIELD}
        if unknown:
            raise BundleError(f"{where}: unknown field(s) {sorted(unknown)}")
        contract = _contract(d.get("contract"), where)
        width = contract.outputs[0].axes[-1]
        labels = _labels(d.get("labels"), width, where)
        variants = _variants(d.get("variants"), where)
        max_length = _max_length(d.get("max_length"), where)
        return cls(
            format_version=version,
            labels=labels,
            max_length=max_length,
            contract=contract,
            variants=variants,
            tokenizer_file=_file_name(
                d.get("tokenizer_file", TOKENIZER_FILE), f"{where}: field 'tokenizer_file'"
            ),
            tokenizer_sha256=_sha(d.get("tokenizer_sha256"), f"{where}: field 'tokenizer_sha256'"),
            feed=_feed(d.get("feed", "pair"), where),
            versions=_typed(d, "versions", dict, {}, where),
            source_checkpoint=_typed(d, "source_checkpoint", str, "", where),
            source_weights_sha256=_typed(d, "source_weights_sha256", str, "", where),
            created=_typed(d, "created", str, "", where),
            answer_check=_answer_check(
                d.get("answer_check", {}), contract, len(labels), variants, max_length, where
            ),
        )


def manifest_digest(d: dict) -> str:
    body = {k: v for k, v in d.items() if k != DIGEST_FIELD}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _typed(d: dict, key: str, kind: type, default, where: str):
    value = d.get(key, default)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BundleError(
            f"{where}: field '{key}' must be a {kind.__name__}, got {type(value).__name__} {value!r:.60}"
        )
    return value


def _max_length(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_MAX_LENGTH <= value <= MAX_MAX_LENGTH:
        raise BundleError(
            f"{where}: field 'max_length' must be an int in [{MIN_MAX_LENGTH}, {MAX_MAX_LENGTH}], "
            f"got {value!r:.60}"
        )
    return value


def _feed(value: object, where: str) -> str:
    if value not in FEEDS:
        raise BundleError(f"{where}: field 'feed' must be one of {list(FEEDS)}, got {value!r:.60}")
    return value


def _labels(value: object, width: object, where: str) -> tuple[str, ...]:
    problem = label_names_problem(value, width, "the contract's logits have")
    if problem:
        raise BundleError(f"{where}: {problem}")
    return tuple(value)


def _sha(value: object, what: str) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise BundleError(f"{what} must be 64 lowercase hex digits (a sha256), got {value!r:.80}")
    return value


def _file_name(value: object, what: str) -> str:
    """A plain file name inside the bundle: no folders, no `..`, nothing absolute."""
    if not isinstance(value, str) or not value or value in (".", "..") or "\0" in value:
        raise BundleError(f"{what} must be a file name, got {value!r:.80}")
    if (
        PurePosixPath(value).is_absolute()
        or PureWindowsPath(value).is_absolute()
        or "/" in value
        or "\\" in value
    ):
        raise BundleError(f"{what} must be a plain file name inside the bundle, got {value!r:.80}")
    return value


def _contract(value: object, where: str) -> GraphContract:
    what = f"{where}: field 'contract'"
    try:
        contract = GraphContract.from_dict(value)
        specs = contract.inputs + contract.outputs
        if not contract.inputs or len(contract.outputs) != 1:
            raise ValueError("expected inputs and exactly one output")
        for t in specs:
            if not isinstance(t.name, str) or not isinstance(t.dtype, str):
                raise ValueError(f"tensor {t.name!r}: name and dtype must be strings")
            if any(isinstance(a, bool) or not isinstance(a, (str, int)) for a in t.axes):
                raise ValueError(f"tensor {t.name!r}: axes must be names or sizes")
        width = contract.outputs[0].axes[-1]
        if isinstance(width, bool) or not isinstance(width, int) or width < 2:
            raise ValueError(f"the output's last axis must be a fixed size of at least 2, got {width!r}")
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise BundleError(f"{what} is malformed ({type(exc).__name__}: {exc})") from None
    return GraphContract(
        tuple(TensorSpec(t.name, t.dtype, t.axes) for t in contract.inputs), contract.outputs
    )


_VARIANT_TYPES = {
    "name": str,
    "file": str,
    "precision": str,
    "size_bytes": int,
    "sha256": str,
    "intended_device": str,
    "parity": dict,
    "passed_parity": bool,
    "validated_on": str,
    "fused_ops": dict,
    "external_data": list,
    "external_sha256": list,
    "notes": str,
}
_VARIANT_REQUIRED = ("name", "file", "precision", "size_bytes", "sha256", "intended_device")


def _answer_check(
    value: object, contract: GraphContract, labels: int, variants: dict, max_length: int, where: str
) -> dict:
    """The check batch (one rectangular int matrix per graph input, one row per pair, at most
    MAX_CHECK_ROWS rows of at most max_length tokens, the inputs of one order equally wide) and, per listed
    variant, its probabilities (a row of `labels` numbers in [0, 1] per pair)."""
    what = f"{where}: field 'answer_check'"
    if value == {}:
        return {}
    if not isinstance(value, dict) or set(value) != {"feed", "probabilities"}:
        raise BundleError(f"{what} must be an object with exactly 'feed' and 'probabilities'")
    feed, answers = value["feed"], value["probabilities"]
    if not isinstance(feed, dict) or sorted(feed) != sorted(contract.input_names):
        raise BundleError(f"{what}: 'feed' must give exactly the graph's inputs {list(contract.input_names)}")
    shapes = {name: _shape(_matrix(m, (int,), f"{what}: feed.{name}")) for name, m in feed.items()}
    rows = {r for r, _ in shapes.values()}
    widths = {(spec.axes[1], shapes[spec.name][1]) for spec in contract.inputs if len(spec.axes) == 2}
    if len(rows) != 1 or len({axis for axis, _ in widths}) != len(widths):
        raise BundleError(
            f"{what}: the inputs of 'feed' must have the same number of pairs, and those of one order "
            "the same length"
        )
    (pairs,) = rows
    if pairs > MAX_CHECK_ROWS or any(w > max_length for _, w in widths):
        raise BundleError(f"{what}: 'feed' may hold {MAX_CHECK_ROWS} pairs of {max_length} tokens at most")
    if not isinstance(answers, dict) or not set(answers) <= set(variants):
        raise BundleError(f"{what}: 'probabilities' must map variants of this bundle to their answers")
    for name, m in answers.items():
        m = _matrix(m, (int, float), f"{what}: probabilities.{name}")
        if len(m) != pairs or len(m[0]) != labels or not all(0 <= x <= 1 for r in m for x in r):
            raise BundleError(
                f"{what}: probabilities.{name} must be {pairs} rows of {labels} numbers in [0, 1]"
            )
    return value


def _shape(matrix: list) -> tuple[int, int]:
    return len(matrix), len(matrix[0])


def _matrix(value: object, kinds: tuple[type, ...], what: str) -> list:
    """A non-empty rectangular list of lists of `kinds` (never bool), or BundleError naming `what`."""
    if not (
        isinstance(value, list)
        and value
        and all(isinstance(r, list) and r and len(r) == len(value[0]) for r in value)
        and all(isinstance(x, kinds) and not isinstance(x, bool) for r in value for x in r)
    ):
        kind = " or ".join(k.__name__ for k in kinds)
        raise BundleError(f"{what} must be a non-empty rectangular list of lists of {kind}")
    return value


def _variants(value: object, where: str) -> dict[str, VariantInfo]:
    if not isinstance(value, dict) or not value:
        raise BundleError(
            f"{where}: field 'variants' must be a non-empty object of variant name → details, "
            f"got {type(value).__name__}"
        )
    return {name: _variant(name, v, f"{where}: variants.{name}") for name, v in value.items()}


def _variant(name: str, v: object, where: str) -> VariantInfo:
    if not isinstance(name, str) or not _VARIANT_NAME.fullmatch(name):
        raise BundleError(f"{where}: a variant name is letters, digits, '.', '_' or '-' (at most 64)")
    if not isinstance(v, dict):
        raise BundleError(f"{where}: expected an object, got {type(v).__name__}")
    unknown = set(v) - set(_VARIANT_TYPES)
    missing = [k for k in _VARIANT_REQUIRED if k not in v]
    if unknown or missing:
        raise BundleError(
            f"{where}: " + (f"unknown field(s) {sorted(unknown)}" if unknown else f"missing {missing}")
        )
    for key, kind in _VARIANT_TYPES.items():
        if key in v:
            _typed(v, key, kind, None, where)
    if v["name"] != name or v["precision"] not in PRECISIONS or v["intended_device"] not in DEVICES:
        raise BundleError(
            f"{where}: name/precision/intended_device must be {name!r} / one of {PRECISIONS} / "
            f"one of {DEVICES}, got {v['name']!r} / {v['precision']!r} / {v['intended_device']!r}"
        )
    if v["size_bytes"] < 0:
        raise BundleError(f"{where}: field 'size_bytes' must not be negative")
    extra, extra_sha = v.get("external_data", []), v.get("external_sha256", [])
    if len(extra) != len(extra_sha):
        raise BundleError(
            f"{where}: fields 'external_data' ({len(extra)}) and 'external_sha256' ({len(extra_sha)}) "
            "must list the same number of files"
        )
    return VariantInfo(
        **{
            **v,
            "file": _file_name(v["file"], f"{where}: field 'file'"),
            "sha256": _sha(v["sha256"], f"{where}: field 'sha256'"),
            "external_data": tuple(_file_name(e, f"{where}: field 'external_data'") for e in extra),
            "external_sha256": tuple(_sha(h, f"{where}: field 'external_sha256'") for h in extra_sha),
        }
    )


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
    bundle_dir = atomic_dir.locate(Path(bundle_dir))  # where an interrupted export swap left it complete
    path = bundle_dir / MANIFEST_FILE
    try:
        if not bundle_dir.is_dir():
            raise BundleError(f"{short_path(bundle_dir)}: no such bundle folder")
        if not path.is_file():
            raise BundleError(f"{bundle_dir}: no {MANIFEST_FILE}; not a pairbert bundle")
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:  # a name too long, no permission
        raise BundleError(f"{short_path(path)}: cannot read ({exc.strerror})") from None
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, an integer past Python's digit limit
        raise BundleError(f"{path}: not valid JSON ({first_line(exc)})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object")
    return Manifest.from_dict(data, where=str(path))


def _inside(bundle_dir: Path, name: str) -> Path:
    """The path of a manifest-listed file, refused unless it really lies inside the bundle folder."""
    _file_name(name, f"{bundle_dir}: file name")
    root = Path(bundle_dir).resolve()
    path = (root / name).resolve()
    if path.parent != root:
        raise BundleError(f"{bundle_dir / name}: resolves outside the bundle folder ({path}); refused")
    if not path.is_file():
        raise BundleError(f"{bundle_dir / name}: listed in the manifest but missing")
    return path


def checksum_mismatch(path: Path, expected: str, actual: str) -> BundleError:
    """The error for a bundle file whose sha256 is not the manifest's."""
    return BundleError(
        f"{path}: checksum mismatch (manifest {expected[:12]}…, file {actual[:12]}…); "
        "the file was changed or corrupted after export"
    )


def listed_path(bundle_dir: str | Path, name: str) -> Path:
    """Where a manifest-listed file lies: inside the bundle folder (refused if it resolves elsewhere)."""
    return _inside(atomic_dir.locate(Path(bundle_dir)), name)


def read_verified(bundle_dir: str | Path, name: str, expected_sha256: str | None) -> bytes:
    """Read a bundle file once, check its sha256 on those very bytes and return them: what is verified is what
    gets used (no time-of-check/time-of-use gap). `expected_sha256=None` skips the check (verify=False)."""
    bundle_dir = atomic_dir.locate(Path(bundle_dir))
    data = listed_path(bundle_dir, name).read_bytes()
    if expected_sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_sha256:
            raise checksum_mismatch(bundle_dir / name, expected_sha256, actual)
    return data


def bundle_encoder(bundle_dir: Path, manifest: Manifest, verify: bool = True) -> PairEncoder:
    """The encoder a bundle's graphs are fed by: its tokenizer (read once, checked on those bytes unless
    `verify` is False), max_length, feed, and each order at its own length where the graph takes it."""
    bundle_dir = atomic_dir.locate(Path(bundle_dir))
    data = read_verified(bundle_dir, manifest.tokenizer_file, manifest.tokenizer_sha256 if verify else None)
    return PairEncoder.from_str(
        data,
        manifest.max_length,
        where=str(bundle_dir / manifest.tokenizer_file),
        feed=manifest.feed,
        apart=orders_padded_apart(manifest.contract),
    )


def check_listed_files(bundle_dir: Path, manifest: Manifest) -> None:
    """Every file the manifest lists is there, inside the folder (a stat each, no reading): a bundle missing
    a variant's file fails on every machine, not only where the calibration cache happens to pick another
    variant."""
    names = [manifest.tokenizer_file]
    for info in manifest.variants.values():
        names += [info.file, *info.external_data]
    for name in names:
        _inside(bundle_dir, name)


def require_variant(bundle_dir: Path, manifest: Manifest, variant: str) -> VariantInfo:
    if variant not in manifest.variants:
        raise BundleError(
            f"{bundle_dir}: variant {variant!r} not in this bundle (it has: {', '.join(manifest.variants)})"
        )
    return manifest.variants[variant]
