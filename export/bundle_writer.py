"""checkpoint dir → bundle dir, in named stages:

    prepare    load the checkpoint, read the parity pairs, compute torch's reference logits
    build      fp32 export → optimized (fusions) → int8 / fp16, each from the one before it
    validate   per variant: structure, fusion count, session + shape grid, parity gate → VariantOutcome
    extra      optional validators that add variants checked on another backend (e.g. OpenVINO)
    write      manifest + tokenizer in a temporary folder, swapped into place atomically

What is on disk when something fails:
- a structure/session/shape stage fails (ExportError): nothing is written; `out_dir` is left as it was;
- fp32 is asked for and fails its parity gate: nothing is written; ParityError;
- no asked-for variant passes (nor is forced): nothing is written; ParityError;
- another variant fails its parity gate: the bundle IS written (atomically replacing `out_dir`) with the
  variants that passed, then `export_bundle` raises ParityError naming the failed ones. With
  `settings.force`, the failed variants are written too, marked `passed_parity: false` in the manifest
  (the predictor's "auto" never picks them), and `export_bundle` logs a warning naming them instead of
  raising (the user asked for them; the export exits 0).
`build_bundle` is the same without the final raise: it returns an ExportResult to inspect.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import torch

from pairbert.builtin_data import BUILTIN_TRAIN, BUILTIN_VALIDATION
from pairbert.runtime.answer_check import CHECK_PAIRS
from pairbert.runtime.bundle import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    TOKENIZER_FILE,
    Manifest,
    VariantInfo,
    sha256_file,
    weights_sha256,
)
from pairbert.runtime.contract import CONTRACT, GraphContract, orders_batched_apart, orders_padded_apart
from pairbert.runtime.devices import CPU, CUDA, cuda_provider_available
from pairbert.runtime.pair_files import PairFileError, read_pairs
from pairbert.runtime.sessions import openvino_available
from pairbert.runtime.tokenization import ORDERS, input_name
from pairbert.runtime.variants import OPENVINO_VARIANTS, ORT_VARIANTS, PRECISION, VARIANTS
from pairbert.training.batches import encode_batch
from pairbert.training.checkpoint import LABELS, load_checkpoint

from . import fusion, onnx_graph, precision, static_int8
from .answer_check import record_answers
from .openvino_variants import build_openvino_variants
from .validation import (
    ExportError,
    ParityError,
    StageReport,
    check_session_and_shapes,
    check_structure,
    gate,
    run_batches,
)

log = logging.getLogger(__name__)
FEW_PARITY_PAIRS = 32  # below this, the gate's label agreement is a warning's worth of evidence

FILE_NAMES = {v: f"model.{v}.onnx" for v in ORT_VARIANTS}
DEVICE = {"fp32": "any", "optimized": "any", "int8": "cpu", "fp16": "cuda"}
BASE = {"optimized": "fp32", "int8": "optimized", "fp16": "optimized"}  # what each variant is built from
SHAPE_GRID = ((1, 4), (2, 17), (7, 64), (33, 128))
SHARED_QUESTION_SHAPE = (7, 64)  # the grid entry also fed with one question row for its seven answers


@dataclass(frozen=True)
class ParityInputs:
    """What an extra validator gets: the fp32 graph, torch's logits and the feeds that produced them."""

    fp32_path: Path
    reference: np.ndarray  # float32 [pairs, labels]: torch's logits on the parity pairs
    feeds: list[dict[str, np.ndarray]]  # contract-named numpy inputs, one dict per parity batch
    work_dir: Path  # write variant files here; the manifest lists them by name
    report: StageReport
    force: bool
    variants: tuple[str, ...]  # the variants asked for: a validator builds those it knows
    # the training pairs variants that calibrate (static int8) are calibrated on; never parity pairs
    calibration: static_int8.CalibrationPairs | None = None
    # a towers graph's one question row for several answers: checked against the row repeated
    shared_question: dict[str, np.ndarray] | None = None


# Called with the parity inputs; returns the variants it built and validated (their files in work_dir). A
# variant with passed_parity False is dropped unless settings.force, and counted as failed either way; one
# with validated_on "none" (could not be checked here) is written, marked not passed, and is no failure.
ExtraValidator = Callable[[ParityInputs], Sequence[VariantInfo]]


def openvino_validator(inputs: ParityInputs) -> list[VariantInfo]:
    """OpenVINO fp32/bf16 over the bundle's fp32 graph (export/openvino_variants.py)."""
    return build_openvino_variants(
        inputs.fp32_path,
        inputs.reference,
        inputs.feeds,
        inputs.report,
        inputs.variants,
        calibration=inputs.calibration,
        shared_question=inputs.shared_question,
    )


@dataclass
class ExportSettings:
    variants: tuple[str, ...] = VARIANTS
    validation_file: str | None = None  # default: the checkpoint's validation split
    # pairs static int8 is calibrated on; default: the checkpoint's training split (never the parity pairs)
    calibration_file: str | None = None
    force: bool = False  # write variants that fail the parity gate (marked as failed)
    # variants not asked for by name (the CLI's default list): one that fails its gate is left out with a
    # warning, not an error — the bundle holds every variant that passed (fp32 must still pass)
    skip_failed: bool = False
    int8: precision.Int8Options = field(default_factory=precision.Int8Options)
    # weights in `<graph>.data` beside each graph: the runtime hands them to ONNX Runtime as file contents
    # instead of having it parse them out of the graph (cold start and RSS, README "Weights beside the
    # graph"); False: one file per variant, up to ~2 GB
    external_data: bool = True
    parity_batch_size: int = 16
    max_parity_pairs: int | None = None
    extra_validators: tuple[ExtraValidator, ...] = (
        openvino_validator,
    )  # variants validated on other backends


@dataclass(frozen=True)
class VariantOutcome:
    """One variant's fate: "passed" (written), "failed" (not written), "forced" (written, marked failed) or
    "unvalidated" (written, marked not passed: this machine could not check it, e.g. bf16 without bf16
    units)."""

    variant: str
    status: str
    reasons: tuple[str, ...] = ()
    info: VariantInfo | None = None

    @property
    def written(self) -> bool:
        return self.status in ("passed", "forced", "unvalidated")


@dataclass
class ExportResult:
    out_dir: Path
    manifest: Manifest
    outcomes: dict[str, VariantOutcome]
    seconds: float

    @property
    def failed(self) -> list[VariantOutcome]:
        return [o for o in self.outcomes.values() if o.status in ("failed", "forced")]


@dataclass
class _Source:
    """The prepare stage's output: the model and the parity data every variant is checked against."""

    ckpt: object
    num_layers: int
    num_heads: int
    hidden: int
    pairs: list
    calibration: static_int8.CalibrationPairs | None
    reference: np.ndarray
    feeds: list[dict[str, np.ndarray]]
    grid: list[dict[str, np.ndarray]]  # the shape grid, then `shared_question` where there is one
    shared_question: dict[str, np.ndarray] | None  # towers graphs: one question row for several answers


def _versions() -> dict:
    import onnxruntime
    import transformers

    import pairbert

    return {
        "pairbert": pairbert.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def shape_grid_feeds(contract: GraphContract, vocab_size: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Random ids with ragged padding for each (batch, length) in the grid: exercises the dynamic axes. Where
    the orders have their own sequence axes, one order is fed about half the other's length, the longer one
    alternating (ONNX Runtime reuses buffers by shape: a graph that ties the two lengths fails here)."""
    rng = np.random.default_rng(seed)
    apart = orders_padded_apart(contract)
    feeds = []
    for i, (batch, length) in enumerate(SHAPE_GRID):
        other = max(2, length // 2 + 1) if apart else length
        lengths_of = dict(zip(ORDERS, (length, other) if i % 2 == 0 else (other, length), strict=True))
        feed = {}
        for order in ORDERS:
            width = lengths_of[order]
            lengths = rng.integers(min(2, width), width + 1, size=batch)
            lengths[0] = width
            mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
            ids = rng.integers(5, vocab_size, size=(batch, width), dtype=np.int64) * mask
            types = ((np.arange(width)[None, :] >= (lengths[:, None] // 2)) * mask).astype(np.int64)
            feed.update(
                {
                    input_name(order, "input_ids"): ids,
                    input_name(order, "attention_mask"): mask,
                    input_name(order, "token_type_ids"): types,
                }
            )
        feeds.append({name: feed[name] for name in contract.input_names})
    return feeds


def shared_question_feed(contract: GraphContract, grid: list[dict[str, np.ndarray]]) -> dict | None:
    """The grid's SHARED_QUESTION_SHAPE feed with the question's order cut to its first row, as the runtime
    feeds pairs that share a question (checked against the row repeated); None for a graph whose orders
    share one batch axis."""
    if not orders_batched_apart(contract):
        return None
    several = grid[SHAPE_GRID.index(SHARED_QUESTION_SHAPE)]
    return {name: value[:1] if name.startswith("qa_") else value for name, value in several.items()}


def variants_to_build(asked: Sequence[str]) -> list[str]:
    """The asked variants plus their bases, in build order (fp32 always: everything starts there)."""
    unknown = set(asked) - set(VARIANTS)
    if unknown:
        raise ExportError("settings", f"unknown variant(s) {sorted(unknown)}; choose from {VARIANTS}")
    if set(OPENVINO_VARIANTS) & set(asked) and "fp32" not in asked:
        raise ExportError("settings", "OpenVINO variants compile the fp32 graph: add fp32 to the variants")
    needed = set(asked) | {"fp32"}
    for variant in ORT_VARIANTS[::-1]:  # bases come earlier in the list, so one backward pass closes the set
        if variant in needed and variant in BASE:
            needed.add(BASE[variant])
    return [v for v in ORT_VARIANTS if v in needed]


def _prepare(checkpoint: Path, settings: ExportSettings, echo) -> _Source:
    ckpt = load_checkpoint(checkpoint, attn_implementation="eager")
    model, encoder = ckpt.model, ckpt.encoder
    cfg = model.config.encoder
    val_file = settings.validation_file or ckpt.recorded_file("validation_file")
    if not val_file or not Path(val_file).is_file():  # the run's file, moved or gone: the built-in split
        val_file = str(BUILTIN_VALIDATION)
    pairs = read_pairs(val_file)[: settings.max_parity_pairs]
    if len(pairs) < FEW_PARITY_PAIRS:
        log.warning(
            "the parity gate runs on %d pair%s from %s: label agreement on so few says little "
            "(the built-in validation split has %d)",
            len(pairs),
            "" if len(pairs) == 1 else "s",
            val_file,
            len(read_pairs(BUILTIN_VALIDATION)),
        )
    size = settings.parity_batch_size
    chunks = [pairs[i : i + size] for i in range(0, len(pairs), size)]
    # the reference is torch on WHOLE pairs; the graph is fed as the bundle will feed it (the towers' cut
    # feed included), so the gate also checks that the feed changes nothing
    whole = encoder.with_feed("pair")
    with torch.inference_mode():
        reference = np.concatenate(
            [model(**encode_batch(whole, c, with_labels=False)).logits.float().numpy() for c in chunks]
        )
    graph_encoder = encoder.with_apart(orders_padded_apart(CONTRACT))  # as the runtime will feed the graph
    torch_feeds = [encode_batch(graph_encoder, c, with_labels=False) for c in chunks]
    grid = shape_grid_feeds(CONTRACT, encoder.tokenizer.get_vocab_size())
    shared = shared_question_feed(CONTRACT, grid) if encoder.feed == "first-segment" else None
    if echo:
        echo(
            f"exporting {checkpoint} ({cfg['num_hidden_layers']} layers × 2 branches, hidden "
            f"{cfg['hidden_size']}); "
            f"parity on {len(pairs)} pair{'' if len(pairs) == 1 else 's'} from {val_file}"
        )
    return _Source(
        ckpt=ckpt,
        num_layers=cfg["num_hidden_layers"],
        num_heads=cfg["num_attention_heads"],
        hidden=cfg["hidden_size"],
        pairs=pairs,
        calibration=_calibration(ckpt, settings, pairs) if "openvino-int8" in settings.variants else None,
        reference=reference,
        feeds=[{k: v.numpy() for k, v in f.items()} for f in torch_feeds],
        grid=grid + [shared] if shared else grid,
        shared_question=shared,
    )


def _build(variant: str, src: _Source, work: Path, settings: ExportSettings, use_external: bool) -> Path:
    """Write one variant's graph into `work`; its base (BASE[variant]) is already there."""
    path = work / FILE_NAMES[variant]
    if variant == "fp32":
        # never batch 1 (the batch axis would be specialised): a one-pair validation file is repeated
        example = encode_batch(src.ckpt.encoder, (src.pairs * 4)[:4], with_labels=False)
        onnx_graph.export_graph(src.ckpt.model, example, CONTRACT, path, external_data=settings.external_data)
    elif variant == "optimized":
        fusion.optimize(
            work / FILE_NAMES["fp32"], path, src.num_heads, src.hidden, use_external_data=use_external
        )
    elif variant == "int8":
        precision.quantize_int8(work / FILE_NAMES["optimized"], path, settings.int8)
    elif variant == "fp16":
        precision.convert_fp16(work / FILE_NAMES["optimized"], path)
    if settings.external_data and not onnx_graph.external_files(path):
        onnx_graph.save_external(onnx.load(str(path)), path)  # (which sets the weight file's permissions)
    else:  # written external by its step (the optimizer), or kept single-file
        onnx_graph.readable_like_graph(path)
    return path


def _fusion_stage(variant: str, path: Path, num_layers: int, report: StageReport) -> dict[str, int]:
    """Fused-op counts of a fused variant; a shortfall is reported (✗ fusion …) but does not fail the
    export."""
    fused = fusion.fused_counts(fusion.count_ops(onnx.load(str(path), load_external_data=False)))
    short = fusion.shortfall(fused, num_layers)
    if short:
        detail = ", ".join(f"{k} {have}/{need}" for k, (have, need) in short.items())
        report.fail("fusion", f"FUSION SHORTFALL: {detail} — the runtime will be slower than it should")
        log.warning("fusion shortfall in %s: %s", variant, detail)
    else:
        report.ok("fusion", ", ".join(f"{k} {v}" for k, v in fused.items()))
    return fused


def _validate(
    variant: str, path: Path, src: _Source, settings: ExportSettings, report: StageReport
) -> VariantOutcome:
    """Structure → fusion → session and shapes → parity; ExportError from the first three stops the export."""
    check_structure(path, CONTRACT, report)
    fused = _fusion_stage(variant, path, src.num_layers, report) if variant != "fp32" else {}
    on_cuda = variant == "fp16" and cuda_provider_available()
    session = check_session_and_shapes(path, CONTRACT, src.grid, report, [CUDA, CPU] if on_cuda else None)
    figures, fails = gate(variant, src.reference, run_batches(session, CONTRACT, src.feeds), report)
    notes = []
    if variant == "fp16" and not on_cuda:
        notes.append("validated with ONNX Runtime's CPU kernels only; no CUDA device at export time")
    if variant == "int8":
        notes.append(f"int8 options: {settings.int8.label()}")
    extra = onnx_graph.external_files(path)
    info = VariantInfo(
        name=variant,
        file=path.name,
        precision=PRECISION[variant],
        size_bytes=path.stat().st_size + sum((path.parent / e).stat().st_size for e in extra),
        sha256=sha256_file(path),
        intended_device=DEVICE[variant],
        parity=figures,
        passed_parity=not fails,
        validated_on="cuda" if on_cuda else "cpu",
        fused_ops=fused,
        external_data=tuple(extra),
        external_sha256=tuple(sha256_file(path.parent / e) for e in extra),
        notes="; ".join(notes),
    )
    status = "passed" if not fails else ("forced" if settings.force else "failed")
    return VariantOutcome(variant, status, tuple(fails), info)


def _build_and_validate(
    src: _Source, work: Path, settings: ExportSettings, report: StageReport, echo
) -> tuple[dict[str, VariantOutcome], dict[str, float]]:
    outcomes: dict[str, VariantOutcome] = {}
    timings: dict[str, float] = {}
    use_external = False
    for variant in variants_to_build(settings.variants):
        t0 = time.perf_counter()
        path = _build(variant, src, work, settings, use_external)
        timings[variant] = time.perf_counter() - t0
        if variant == "fp32":
            use_external = bool(onnx_graph.external_files(path))
            if "fp32" not in settings.variants:
                continue  # a base only; the optimized graph is validated in its own right
        if echo:
            echo(f"{variant}:")
        outcome = _validate(variant, path, src, settings, report)
        if variant in settings.variants:
            outcomes[variant] = outcome
    return outcomes, timings


def _run_extra_validators(
    src: _Source, work: Path, settings: ExportSettings, report: StageReport
) -> dict[str, VariantOutcome]:
    """Variants validated on other backends (the lead's OpenVINO variants plug in here)."""
    inputs = ParityInputs(
        work / FILE_NAMES["fp32"],
        src.reference,
        src.feeds,
        work,
        report,
        settings.force,
        tuple(settings.variants),
        calibration=src.calibration,
        shared_question=src.shared_question,
    )
    outcomes = {}
    for validator in settings.extra_validators:
        for info in validator(inputs):
            if info.passed_parity:
                outcomes[info.name] = VariantOutcome(info.name, "passed", (), info)
            elif info.validated_on == "none":
                outcomes[info.name] = VariantOutcome(info.name, "unvalidated", (info.notes,), info)
            else:
                status = "forced" if settings.force else "failed"
                outcomes[info.name] = VariantOutcome(
                    info.name, status, (info.notes or "failed its parity gate",), info
                )
    for name in _extra_variants(settings.variants):  # asked for, but nothing could be built here
        if name not in outcomes:
            why = report.failures.get(name) or report.failures.get("openvino") or "could not be built here"
            outcomes[name] = VariantOutcome(name, "failed", (why,))
    return outcomes


def _extra_variants(variants: tuple[str, ...]) -> list[str]:
    """The asked-for variants the extra validators build (those not in FILE_NAMES: OpenVINO's)."""
    return [v for v in variants if v not in FILE_NAMES]


def _calibration(ckpt, settings: ExportSettings, parity_pairs: list) -> static_int8.CalibrationPairs:
    """The pairs openvino-int8 is calibrated on: --calibration, else the checkpoint's training file, else
    the built-in training split; the first CALIBRATION_PAIRS of them that are not parity pairs (same
    question and answer: a variant calibrated on the pairs it is gated on would pass by design, whatever
    file they came from). A --calibration with nothing left is an error; the checkpoint's own file with
    nothing left (a run trained on its validation pairs) skips the variant."""
    if not (static_int8.nncf_available() and openvino_available()):  # skipped anyway: read nothing
        return static_int8.CalibrationPairs(problem="needs NNCF and OpenVINO")
    chosen = settings.calibration_file or ckpt.recorded_file("train_file")
    if not chosen or not Path(chosen).is_file():  # the run's file, moved or gone: the built-in split
        chosen = str(BUILTIN_TRAIN)
    parity = {(p.question, p.answer) for p in parity_pairs}
    kept, left_out = [], 0
    try:
        pairs = read_pairs(chosen)
    except PairFileError as exc:
        if settings.calibration_file:
            raise
        return static_int8.CalibrationPairs(source=chosen, problem=f"calibration pairs unreadable ({exc})")
    for pair in pairs:
        if (pair.question, pair.answer) in parity:
            left_out += 1
        elif len(kept) < static_int8.CALIBRATION_PAIRS:
            kept.append(pair)
    if not kept:
        why = f"every pair of {chosen} is also a parity pair: calibrate on training pairs"
        if settings.calibration_file:
            raise ExportError("settings", f"--calibration {why}")
        return static_int8.CalibrationPairs(source=chosen, left_out=left_out, problem=why)
    encoder = ckpt.encoder.with_apart(orders_padded_apart(CONTRACT))
    size = static_int8.CALIBRATION_BATCH

    def feeds() -> list[dict[str, np.ndarray]]:
        return [
            {k: v.numpy() for k, v in encode_batch(encoder, kept[i : i + size], with_labels=False).items()}
            for i in range(0, len(kept), size)
        ]

    return static_int8.CalibrationPairs(chosen, len(kept), left_out, feeds)


def _write(
    src: _Source, work: Path, out_dir: Path, outcomes: dict[str, VariantOutcome], timings: dict, check: dict
) -> Manifest:
    """Drop the files of unwritten variants and intermediates, write tokenizer + manifest, swap into place."""
    keep = {o.info.file for o in outcomes.values() if o.written}
    keep |= {e for o in outcomes.values() if o.written for e in o.info.external_data}
    for path in work.iterdir():
        if path.name in keep:
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    ckpt = src.ckpt
    shutil.copyfile(ckpt.path / TOKENIZER_FILE, work / TOKENIZER_FILE)
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        labels=tuple(ckpt.settings.get("labels", LABELS)),
        max_length=ckpt.encoder.max_length,
        contract=CONTRACT,
        variants={name: o.info for name, o in outcomes.items() if o.written},
        tokenizer_file=TOKENIZER_FILE,
        tokenizer_sha256=sha256_file(work / TOKENIZER_FILE),
        feed=ckpt.encoder.feed,
        versions={**_versions(), "export_seconds": {k: round(v, 2) for k, v in timings.items()}},
        source_checkpoint=str(ckpt.path.resolve()),
        source_weights_sha256=weights_sha256(ckpt.path),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        answer_check=check,
    )
    (work / MANIFEST_FILE).write_text(manifest.to_json())
    _swap_into_place(work, out_dir)
    return manifest


def build_bundle(
    checkpoint: str | Path,
    out_dir: str | Path,
    settings: ExportSettings | None = None,
    echo: Callable[[str], None] | None = print,
) -> ExportResult:
    """Run every stage and return what happened to each variant; raises only when nothing is written
    (see the module docstring)."""
    settings = settings or ExportSettings()
    variants_to_build(settings.variants)  # unknown names fail before the checkpoint is loaded
    out_dir = _output_folder(out_dir)  # so does an --out that cannot or must not become a bundle
    if settings.validation_file is not None and not Path(settings.validation_file).is_file():
        raise ExportError("settings", f"--validation {settings.validation_file}: no such file")
    if settings.calibration_file is not None and not Path(settings.calibration_file).is_file():
        raise ExportError("settings", f"--calibration {settings.calibration_file}: no such file")
    report = StageReport(echo=echo)
    started = time.perf_counter()
    src = _prepare(Path(checkpoint), settings, echo)
    work = out_dir.parent / f".tmp-{out_dir.name}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        outcomes, timings = _build_and_validate(src, work, settings, report, echo)
        fp32 = outcomes.get("fp32")
        if fp32 is not None and not fp32.written:
            raise ParityError(
                "fp32",
                "the plain export does not match torch; nothing written: " + "; ".join(fp32.reasons),
                fp32.info.parity,
            )
        # extra backends get the fp32 graph: gated above when asked for, else the base the others were
        # built from
        outcomes.update(_run_extra_validators(src, work, settings, report))
        _require_a_passing_variant(outcomes, out_dir)
        started_check = time.perf_counter()
        written = {name: o.info for name, o in outcomes.items() if o.written}
        check = record_answers(work, src.ckpt.encoder.with_apart(orders_padded_apart(CONTRACT)), written)
        timings["answer_check"] = time.perf_counter() - started_check
        answered = ", ".join(check.get("probabilities", {})) or "no variant"
        report.ok("answer check", f"{len(CHECK_PAIRS)} pairs, answers of {answered} recorded")
        manifest = _write(src, work, out_dir, outcomes, timings, check)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - started
    if echo:
        echo(f"wrote {out_dir} ({', '.join(manifest.variants)}) in {seconds:.1f}s")
    return ExportResult(out_dir, manifest, outcomes, seconds)


def _reasons(outcomes: list[VariantOutcome]) -> str:
    """Why each of these variants failed its gate, for one line: "int8: label agreement ... | fp16: ..."."""
    return " | ".join(f"{o.variant}: " + "; ".join(o.reasons) for o in outcomes)


def _require_a_passing_variant(outcomes: dict[str, VariantOutcome], out_dir: Path) -> None:
    """A bundle with no variant that passed its gate (or was forced) is never written: it would replace a
    working bundle with one nothing can load."""
    if any(o.status in ("passed", "forced") for o in outcomes.values()):
        return
    failed = [o for o in outcomes.values() if o.status == "failed"]
    detail = _reasons(failed) or "none could be validated here"
    raise ParityError(
        ",".join(o.variant for o in failed) or ",".join(outcomes),
        f"no variant asked for passed its gate; nothing written, {out_dir} left as it was: {detail}",
        failed[0].info.parity if failed and failed[0].info else {},
    )


def export_bundle(
    checkpoint: str | Path,
    out_dir: str | Path,
    settings: ExportSettings | None = None,
    echo: Callable[[str], None] | None = print,
) -> Manifest:
    """build_bundle, then ParityError if any asked-for variant failed its gate and was left out (after
    writing the bundle: see the module docstring for what is on disk). Variants written anyway because the
    user asked for it (`settings.force`) are a warning, not a failure: the export did what it was told."""
    settings = settings or ExportSettings()
    result = build_bundle(checkpoint, out_dir, settings, echo)
    forced = [o for o in result.failed if o.status == "forced"]
    if forced:
        log.warning("written anyway (--force), marked failed; `auto` never picks them: %s", _reasons(forced))
    dropped = [o for o in result.failed if o.status == "failed"]
    if dropped:
        detail = _reasons(dropped)
        if settings.skip_failed:
            log.warning(
                "not written (failed its gate, or could not be built here; name it in --variants to make "
                "that an error): %s",
                detail,
            )
            return result.manifest
        first = dropped[0].info
        raise ParityError(
            ",".join(o.variant for o in dropped), "not written: " + detail, first.parity if first else {}
        )
    return result.manifest


def _output_folder(out_dir: str | Path) -> Path:
    """`out_dir` as an absolute path whose parent exists, checked before any work: only a bundle (or an empty
    folder) is ever replaced, never a checkpoint, a run folder or a user's own files."""
    from pairbert.runtime.atomic_dir import check_replaceable

    out_dir = Path(os.path.abspath(out_dir))  # "." or "runs/.." name their folder, not ""
    check_replaceable(out_dir, MANIFEST_FILE, "pairbert bundle")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ExportError("output", f"{out_dir}: a file is in the way of its parent folder") from None
    except OSError as exc:
        raise ExportError("output", f"{out_dir}: cannot create its parent folder ({exc.strerror})") from None
    return out_dir


def _swap_into_place(work: Path, out_dir: Path) -> None:
    """Crash-safe: a complete bundle stays findable at every instant (see pairbert.runtime.atomic_dir)."""
    from pairbert.runtime.atomic_dir import swap_into_place

    swap_into_place(work, out_dir, MANIFEST_FILE, "pairbert bundle")
