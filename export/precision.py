"""Lower-precision variants of the optimized graph: dynamic int8 (CPU) and fp16 (CUDA)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import onnx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Int8Options:
    """Dynamic quantization knobs. The default is what benchmarks/quantization_options.py measured best (see
    README): QInt8 weights, per-channel, 7-bit (`reduce_range`), and the FFN output projections (the MatMul
    after GELU, whose inputs have the widest range) kept in fp32.

    Why 7-bit weights: x86 CPUs without VNNI (AVX2, AVX-512 before Cascade Lake) multiply u8 activations by
    s8 weights with an instruction that adds each pair of products into a saturating int16, which overflows
    for 8-bit weights; VNNI and AMX accumulate in int32 and do not. With 7-bit weights no pair can overflow,
    so the graph computes the same on every x86 CPU and the parity gate measured where it was exported holds
    where it runs. On the towers MiniLM default (AMD EPYC, AVX2): label agreement with fp32 98.0 % with
    8-bit weights (below the 99 % gate) and 99.7 % with 7-bit ones, on the validation split in batches of
    32 (the export gate's batches of 16 read 96.7 % and 99.0 %: int8 depends on its batch-mates, see
    benchmarks/int8_batching.py); 97.7 % and 99.3 % on the 2,800 training pairs; same speed, ~1.35x fp32
    at batch 32.
    """

    weight_type: str = "QInt8"  # or "QUInt8"
    per_channel: bool = True
    reduce_range: bool = True  # 7-bit weights: no u8s8 overflow on CPUs without VNNI (see above)
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
    root = logging.getLogger()
    root.addFilter(_no_preprocessing_advice)  # its advice for image models, printed on every export
    try:
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
    finally:
        root.removeFilter(_no_preprocessing_advice)
    return dst


def _no_preprocessing_advice(record: logging.LogRecord) -> bool:
    """onnxruntime's quantizer logs "Please consider to run pre-processing before quantization" (shape
    inference and graph clean-up for its image examples) on the root logger; the fused graph is past that."""
    return not record.getMessage().startswith("Please consider to run pre-processing before quantization")


def convert_fp16(src: Path, dst: Path) -> Path:
    """fp16 weights and compute, fp32 inputs/outputs kept so callers feed the same arrays."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(src)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(dst))
    return dst
