"""OpenVINO variants of a bundle: the fp32 graph compiled by OpenVINO in fp32 and in bf16, and its static
int8 form, each parity-gated against torch like every other variant.

fp32 and bf16 need no file of their own: OpenVINO reads the bundle's `model.fp32.onnx` (measured: reading
the ONNX at load is as fast as reading an IR written at export, and an IR would add a second copy of the
weights; see README). bf16 is validated only where the CPU has bf16 matrix units (AMX or AVX512-BF16):
elsewhere OpenVINO would quietly compute in fp32, so the variant is written marked `validated_on: none`, not
passed, and `auto` never picks it. `openvino-int8` is its own graph (`model.openvino-int8.onnx`: the fp32
graph with int8 quantize/dequantize pairs calibrated on training pairs, export/static_int8.py), validated
everywhere: without VNNI or AMX OpenVINO still runs it in int8, only slower.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from pairbert.runtime.bundle import VariantInfo, sha256_file
from pairbert.runtime.errors import first_line
from pairbert.runtime.sessions import (
    BackendError,
    SessionSettings,
    has_bf16_units,
    open_session,
    openvino_available,
)
from pairbert.runtime.variants import OPENVINO_PRECISION, OPENVINO_VARIANTS, PRECISION

from . import static_int8
from .onnx_graph import external_files
from .validation import SHARED_ROW_TOLERANCE, StageReport, gate, shared_row_drift

INT8_FILE = "model.openvino-int8.onnx"

log = logging.getLogger(__name__)


def build_openvino_variants(
    fp32_path: Path,
    reference: np.ndarray,
    feeds: list[dict[str, np.ndarray]],
    report: StageReport,
    wanted: tuple[str, ...] = OPENVINO_VARIANTS,
    threads: int = 1,
    calibration: static_int8.CalibrationPairs | None = None,
    shared_question: dict[str, np.ndarray] | None = None,
) -> list[VariantInfo]:
    """VariantInfo for each wanted OpenVINO variant over `fp32_path` (already checked and gated as ORT
    fp32). `calibration`: the training pairs openvino-int8 is calibrated on (its graph is written beside
    `fp32_path`); without them that variant is skipped. `shared_question`: a feed with one question row for
    several answers, which must answer as with the row repeated (the runtime feeds pairs that share a
    question so), else the variant fails."""
    wanted = tuple(v for v in wanted if v in OPENVINO_VARIANTS)
    if not wanted:
        return []
    if not openvino_available():
        report.fail("openvino", "not installed: OpenVINO variants skipped (pip install 'pairbert[openvino]')")
        return []
    out = []
    for name in wanted:
        graph, int8_recipe = fp32_path, ""
        if name == "openvino-int8":
            graph = _static_int8(fp32_path, calibration, report)
            if graph is None:
                continue
            int8_recipe = (
                f"static int8 ({static_int8.StaticInt8Options().label()}), calibrated on {calibration.pairs} "
                f"pairs of {calibration.source}"
            )
        extra = external_files(graph)  # its weight file, when the graph keeps them beside it
        common = dict(
            name=name,
            file=graph.name,
            precision=PRECISION[name],
            size_bytes=graph.stat().st_size + sum((graph.parent / e).stat().st_size for e in extra),
            sha256=sha256_file(graph),
            intended_device="cpu",
            external_data=tuple(extra),
            external_sha256=tuple(sha256_file(graph.parent / e) for e in extra),
        )
        if name == "openvino-bf16" and not has_bf16_units():
            report.fail(
                f"parity {name}", "this CPU has no bf16 matrix units: not validated, `auto` will not pick it"
            )
            out.append(
                VariantInfo(
                    **common,
                    passed_parity=False,
                    validated_on="none",
                    notes="not validated: exported on a CPU without bf16 units",
                )
            )
            continue
        try:
            ran, candidate, moved = _run(graph, name, feeds, threads, shared_question)
        except BackendError as exc:
            if name != "openvino-int8":
                raise
            # the optional variant: the others stand without it
            report.fail(name, f"OpenVINO cannot run it here, skipped: {exc}")
            continue
        if moved > SHARED_ROW_TOLERANCE:  # the runtime would feed it so: not written, even with --force
            report.fail(
                name,
                f"one question row for several answers gave logits {moved:.3g} from the row repeated; "
                "not written, even with --force",
            )
            continue
        figures, fails = gate(name, reference, candidate, report)
        notes = list(fails)
        if name == "openvino-int8":  # a CPU with(out) bf16 units computes the part left in float otherwise
            notes.append(f"validated as {ran}; {int8_recipe}")
        out.append(
            VariantInfo(
                **common, parity=figures, passed_parity=not fails, validated_on="cpu", notes="; ".join(notes)
            )
        )
    return out


def _run(
    graph: Path, name: str, feeds: list, threads: int, shared: dict | None
) -> tuple[str, np.ndarray, float]:
    """(what the compiled model computes in, e.g. "OpenVINO CPU (i8 + bf16)"; its logits on the feeds; how
    far the `shared` feed's logits are from those with its question row repeated, 0 without it)."""
    session = open_session(
        "openvino", graph, SessionSettings(threads=threads, precision=OPENVINO_PRECISION[name])
    )
    try:
        logits = np.concatenate([session.run(feed) for feed in feeds])
        return session.provider, logits, shared_row_drift(session.run, shared) if shared else 0.0
    finally:
        session.close()


def _static_int8(
    fp32_path: Path, calibration: static_int8.CalibrationPairs | None, report: StageReport
) -> Path | None:
    """The static int8 graph beside `fp32_path`, or None (reported) when it cannot be built here."""
    if not static_int8.nncf_available():
        report.fail("openvino-int8", f"NNCF is not installed: skipped ({static_int8.QUANTIZE_EXTRA})")
        return None
    if calibration is None or calibration.feeds is None:
        why = calibration.problem if calibration is not None else "no calibration pairs"
        report.fail("openvino-int8", f"{why}: skipped")
        return None
    started = time.perf_counter()
    try:
        path = static_int8.quantize_static(fp32_path, fp32_path.parent / INT8_FILE, calibration.feeds())
    except Exception as exc:  # NNCF and onnx raise anything; the other variants stand without this one
        log.warning("openvino-int8 quantization failed", exc_info=True)
        report.fail("openvino-int8", f"quantization failed, skipped: {type(exc).__name__}: {first_line(exc)}")
        return None
    seconds = time.perf_counter() - started
    left = f"; {calibration.left_out} parity pairs in it left out" if calibration.left_out else ""
    report.ok(
        "quantize openvino-int8",
        f"calibrated on {calibration.pairs} pairs of {calibration.source}{left} in {seconds:.1f} s",
    )
    return path
