"""Static int8 for OpenVINO: the fp32 graph with quantize/dequantize pairs whose scales were measured once, at
export, on training pairs (NNCF post-training quantization, ONNX backend).

Why static, and why this recipe (`python -m pairbert.benchmarks.openvino_int8 bundles/default`, README):
OpenVINO turns each quantize/dequantize pair into int8 kernels (VNNI, AMX), so batches run on the CPU's int8
rate; the scales are fixed, so a pair's answer does not depend on the pairs it is batched with (dynamic int8
computes them per run). `ModelType.TRANSFORMER` (SmoothQuant, no quantized softmax/LayerNorm inputs) is what
makes it accurate: without it, labels agreed with fp32 on 52 % of the validation split. 7-bit weights
(`OverflowFix.ENABLE`): CPUs without VNNI add pairs of u8 × s8 products into a saturating int16, which 8-bit
weights can overflow, so with them a gate passed on one CPU would not hold on another. Activations are
quantized symmetrically (NNCF's PERFORMANCE preset; its transformer default is asymmetric): with zero
points, OpenVINO kept far more compiled state across the shapes a service sees (the serving benchmark's RSS
grew 33 % over 20,000 requests, against 10 % symmetric and 5 % for bf16), for the same agreement and no more
speed. The FFN output projections of the first two layers of each branch stay out of int8
(`KEEP_FFN_OUTPUT_LAYERS`; fed by GELU, their inputs have the widest range): in the first sweeps they kept 3
to 7 more of ~2,000 pairs agreeing with fp32, in the last (symmetric) none (99.21 % either way; all twelve
kept: 99.48 %, 1.2x slower at batch 32). `python -m pairbert.benchmarks.openvino_int8` measures them
(README: Static int8 for OpenVINO).

The calibration pairs come from the training split, never from the pairs the variant is gated on.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pairbert.runtime.errors import PairbertError

from .onnx_graph import save_external

log = logging.getLogger(__name__)

QUANTIZE_EXTRA = "pip install 'pairbert[quantize]'"
CALIBRATION_PAIRS = 512  # NNCF's default subset size is 300 samples; 512 pairs in batches of 8
CALIBRATION_BATCH = 8
KEEP_FFN_OUTPUT_LAYERS = 2  # the FFN output MatMuls of layers 0 .. this-1 of each branch stay out of int8
_LAYER = re.compile(r"layer\.(\d+)/")


@dataclass(frozen=True)
class StaticInt8Options:
    """The recipe (defaults: what export ships); benchmarks/openvino_int8.py sweeps the alternatives."""

    transformer: bool = True  # NNCF's ModelType.TRANSFORMER (SmoothQuant, transformer-aware scopes)
    overflow_fix: bool = True  # 7-bit weights: no u8 × s8 int16 saturation on CPUs without VNNI
    keep_ffn_output_layers: int = KEEP_FFN_OUTPUT_LAYERS
    symmetric: bool = True  # symmetric activations (NNCF's PERFORMANCE preset): no zero points (see above)

    def label(self) -> str:
        return (
            f"{'transformer' if self.transformer else 'generic'}"
            f"{'-7bit' if self.overflow_fix else '-8bit'}-ffnout-kept-{self.keep_ffn_output_layers}"
            f"{'-symmetric' if self.symmetric else '-asymmetric'}"
        )


@dataclass(frozen=True)
class CalibrationPairs:
    """What openvino-int8 is calibrated on: `feeds()` encodes them as the runtime feeds the graph (on first
    use); `problem` says why there are none."""

    source: str = ""
    pairs: int = 0
    left_out: int = 0  # pairs of the source that are also parity pairs, never calibrated on
    feeds: Callable[[], list[dict[str, np.ndarray]]] | None = None
    problem: str = ""


class QuantizationUnavailable(PairbertError, RuntimeError):
    """NNCF is not installed: the static int8 variant cannot be built here."""


def nncf_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("nncf") is not None


def quantize_static(
    src: Path,
    dst: Path,
    calibration: Sequence[dict[str, np.ndarray]],
    options: StaticInt8Options = StaticInt8Options(),
) -> Path:
    """Write `dst` (graph + weights beside it): `src` with int8 quantize/dequantize pairs calibrated on the
    `calibration` feeds (contract-named numpy inputs, as the runtime feeds the graph)."""
    if not nncf_available():
        raise QuantizationUnavailable(f"the openvino-int8 variant needs NNCF: {QUANTIZE_EXTRA}")
    if not calibration:
        raise ValueError("no calibration pairs")
    import nncf
    import onnx

    nncf.set_log_level(logging.WARNING)  # its INFO lines are not ours
    model = onnx.load(str(src))
    keep = ffn_output_matmuls(model, options.keep_ffn_output_layers)
    overflow = nncf.OverflowFix.ENABLE if options.overflow_fix else nncf.OverflowFix.DISABLE
    preset = nncf.QuantizationPreset.PERFORMANCE if options.symmetric else nncf.QuantizationPreset.MIXED
    with contextlib.redirect_stdout(io.StringIO()):  # nor its progress bars (rich, on stdout)
        quantized = nncf.quantize(
            model,
            nncf.Dataset(list(calibration)),
            subset_size=len(calibration),
            model_type=nncf.ModelType.TRANSFORMER if options.transformer else None,
            preset=preset,
            ignored_scope=nncf.IgnoredScope(names=keep) if keep else None,
            advanced_parameters=nncf.AdvancedQuantizationParameters(overflow_fix=overflow),
        )
    save_external(quantized, dst)
    return dst


def ffn_output_matmuls(model, below_layer: int) -> list[str]:
    """Names of the FFN output MatMuls (a weight of [intermediate, hidden], wider in than out) in encoder
    layers 0 .. below_layer-1, as the exporter names them ("/…/layer.3/output/dense/MatMul")."""
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    names = []
    for node in model.graph.node:
        shape = weights.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) > 1 else None
        layer = _LAYER.search(node.name)
        if shape and len(shape) == 2 and shape[0] > shape[1] and layer and int(layer.group(1)) < below_layer:
            names.append(node.name)
    return names
