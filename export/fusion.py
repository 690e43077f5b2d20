"""ONNX Runtime's transformer fusions, and the op count that proves they happened.

We call `onnxruntime.transformers.optimizer` directly instead of going through optimum-onnx: optimum-onnx
0.1.0 wraps this same optimizer (and the same quantizer) but pins transformers<4.58, which would fight the
training extra, and adds nothing our dual-branch graph needs.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import onnx

log = logging.getLogger(__name__)


def count_ops(model: onnx.ModelProto) -> dict[str, int]:
    return dict(Counter(node.op_type for node in model.graph.node))


def expected_fused(num_layers: int, branches: int = 2) -> dict[str, int]:
    """What a fully fused dual BERT graph must contain at least."""
    return {
        "EmbedLayerNormalization": branches,
        "Attention": branches * num_layers,
        "SkipLayerNormalization": 2 * branches * num_layers,
        "Gelu": branches * num_layers,  # Gelu, BiasGelu or FastGelu, counted together
    }


def fused_counts(ops: dict[str, int]) -> dict[str, int]:
    return {
        "EmbedLayerNormalization": ops.get("EmbedLayerNormalization", 0)
        + ops.get("QEmbedLayerNormalization", 0),
        "Attention": ops.get("Attention", 0) + ops.get("MultiHeadAttention", 0) + ops.get("QAttention", 0),
        "SkipLayerNormalization": ops.get("SkipLayerNormalization", 0),
        "Gelu": ops.get("Gelu", 0) + ops.get("BiasGelu", 0) + ops.get("FastGelu", 0),
    }


def shortfall(have: dict[str, int], num_layers: int) -> dict[str, tuple[int, int]]:
    """(have, need) for each fused op below its expected count; `have` comes from fused_counts."""
    return {k: (have[k], need) for k, need in expected_fused(num_layers).items() if have[k] < need}


def optimize(src: Path, dst: Path, num_heads: int, hidden_size: int, use_external_data: bool = False):
    """Apply the BERT fusions offline (no ORT graph optimisations baked in: they are redone at load)."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    optimized = optimize_model(
        str(src),
        model_type="bert",
        num_heads=num_heads,
        hidden_size=hidden_size,
        opt_level=0,
        optimization_options=options,
        use_gpu=False,
    )
    optimized.save_model_to_file(str(dst), use_external_data_format=use_external_data)
    return optimized
