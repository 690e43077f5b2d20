"""Lower-precision variants of the optimized graph: dynamic int8 (CPU) and fp16 (CUDA)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import onnx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Int8Options:
    """Dynamic quantization knobs that matter on an AVX2 CPU without VNNI.

    Default from benchmarks/quantization_options.py on this machine (see README): QInt8 weights,
    per-tensor. reduce_range (7-bit weights) exists for the u8s8 overflow on AVX2 without VNNI.
    """

    weight_type: str = "QInt8"  # or "QUInt8"
    per_channel: bool = False
    reduce_range: bool = False
    quantize_embeddings: bool = False  # int8 word embeddings (Gather / QEmbedLayerNormalization)

    def label(self) -> str:
        return (f"{self.weight_type}{'-perchannel' if self.per_channel else ''}"
                f"{'-reducerange' if self.reduce_range else ''}{'-embeddings' if self.quantize_embeddings else ''}")


def quantize_int8(src: Path, dst: Path, options: Int8Options = Int8Options()) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src), str(dst),
        weight_type=getattr(QuantType, options.weight_type),
        per_channel=options.per_channel,
        reduce_range=options.reduce_range,
        op_types_to_quantize=["MatMul", "Attention", "Gemm"]
        + (["Gather", "EmbedLayerNormalization"] if options.quantize_embeddings else []),
        # Shape inference on the fused graph cannot type the contrib ops' outputs without this.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return dst


def convert_fp16(src: Path, dst: Path) -> Path:
    """fp16 weights and compute, fp32 inputs/outputs kept so callers feed the same arrays."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(src)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(dst))
    return dst
