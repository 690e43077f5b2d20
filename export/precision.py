"""Lower-precision variants of the optimized graph: dynamic int8 (CPU) and fp16 (CUDA)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import onnx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Int8Options:
    """Dynamic quantization knobs. The default is what benchmarks/quantization_options.py measured best on
    this project's machine (see README): QInt8 weights, per-channel, and the FFN output projections (the
    MatMul after GELU, whose inputs have the widest range) kept in fp32. Every fully-int8 option left the
    MiniLM default below 99 % label agreement with torch; this one passes at about 1.7x fp32 speed.
    """

    weight_type: str = "QInt8"  # or "QUInt8"
    per_channel: bool = True
    reduce_range: bool = False  # 7-bit weights: for the u8s8 overflow on AVX2 CPUs without VNNI
    ffn_output_fp32: bool = True  # leave MatMuls fed by GELU unquantized
    quantize_embeddings: bool = False  # int8 word embeddings (Gather / QEmbedLayerNormalization)

    def label(self) -> str:
        return (
            f"{self.weight_type}{'-perchannel' if self.per_channel else ''}"
            f"{'-reducerange' if self.reduce_range else ''}{'-ffnfp32' if self.ffn_output_fp32 else ''}"
            f"{'-embeddings' if self.quantize_embeddings else ''}"
        )


GELU_OPS = ("Gelu", "BiasGelu", "FastGelu")


def ffn_output_matmuls(model: onnx.ModelProto) -> list[str]:
    producers = {out: node for node in model.graph.node for out in node.output}
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul" and n.input[0] in producers and producers[n.input[0]].op_type in GELU_OPS
    ]


def quantize_int8(src: Path, dst: Path, options: Int8Options = Int8Options()) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    exclude = (
        ffn_output_matmuls(onnx.load(str(src), load_external_data=False)) if options.ffn_output_fp32 else []
    )
    quantize_dynamic(
        str(src),
        str(dst),
        weight_type=getattr(QuantType, options.weight_type),
        per_channel=options.per_channel,
        reduce_range=options.reduce_range,
        op_types_to_quantize=["MatMul", "Attention"]
        + (["Gather", "EmbedLayerNormalization"] if options.quantize_embeddings else []),
        nodes_to_exclude=exclude,
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
