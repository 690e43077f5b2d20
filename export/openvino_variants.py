"""OpenVINO variants of a bundle: the fp32 graph compiled by OpenVINO in fp32 and in bf16, each parity-gated
against torch like every other variant.

They need no file of their own: OpenVINO reads the bundle's `model.fp32.onnx` (measured: reading the ONNX
at load is as fast as reading an IR written at export, and an IR would add a second copy of the weights; see
README). bf16 is validated only where the CPU has bf16 matrix units (AMX or AVX512-BF16): elsewhere OpenVINO
would quietly compute in fp32, so the variant is written marked `validated_on: none`, not passed, and `auto`
never picks it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pairbert.runtime.bundle import VariantInfo, sha256_file
from pairbert.runtime.sessions import SessionSettings, has_bf16_units, open_session, openvino_available
from pairbert.runtime.variants import OPENVINO_PRECISION, OPENVINO_VARIANTS, PRECISION

from .onnx_graph import external_files
from .validation import StageReport, gate

log = logging.getLogger(__name__)


def build_openvino_variants(
    fp32_path: Path,
    reference: np.ndarray,
    feeds: list[dict[str, np.ndarray]],
    report: StageReport,
    wanted: tuple[str, ...] = OPENVINO_VARIANTS,
    threads: int = 1,
) -> list[VariantInfo]:
    """VariantInfo for each wanted OpenVINO variant over `fp32_path` (already checked and gated as ORT
    fp32)."""
    wanted = tuple(v for v in wanted if v in OPENVINO_VARIANTS)
    if not wanted:
        return []
    if not openvino_available():
        report.fail("openvino", "not installed: OpenVINO variants skipped (pip install 'pairbert[openvino]')")
        return []
    extra = external_files(fp32_path)  # its weight file, when the graph keeps them beside it
    size = fp32_path.stat().st_size + sum((fp32_path.parent / e).stat().st_size for e in extra)
    out = []
    for name in wanted:
        common = dict(
            name=name,
            file=fp32_path.name,
            precision=PRECISION[name],
            size_bytes=size,
            sha256=sha256_file(fp32_path),
            intended_device="cpu",
            external_data=tuple(extra),
            external_sha256=tuple(sha256_file(fp32_path.parent / e) for e in extra),
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
        session = open_session(
            "openvino", fp32_path, SessionSettings(threads=threads, precision=OPENVINO_PRECISION[name])
        )
        candidate = np.concatenate([session.run(feed) for feed in feeds])
        session.close()
        figures, fails = gate(name, reference, candidate, report)
        out.append(
            VariantInfo(
                **common, parity=figures, passed_parity=not fails, validated_on="cpu", notes="; ".join(fails)
            )
        )
    return out
