"""Trace both BERT branches and the head into one ONNX graph.

Exporter choice: the TorchScript exporter (`dynamo=False`), opset 17. With eager attention it produces the
MatMul/Softmax pattern that ONNX Runtime's transformer optimizer fuses into Attention,
EmbedLayerNormalization and SkipLayerNormalization; dynamic batch and sequence axes come straight from
`dynamic_axes`. The dynamo exporter (torch's default since 2.9) emits a different pattern the optimizer
does not fully fuse here, and its dynamic shapes need guards checked per model. Opset 17 is the
TorchScript exporter's ceiling and covers everything this model uses (LayerNormalization included).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import warnings
from pathlib import Path

import onnx
import torch
from onnx import external_data_helper
from torch import nn

from pairbert.runtime.contract import GraphContract

log = logging.getLogger(__name__)

OPSET = 17
EXTERNAL_DATA_THRESHOLD = 1_800_000_000  # protobuf caps one file at 2 GB
EXTERNAL_THRESHOLD_BYTES = 1024  # tensors this large (sys.getsizeof of their raw data, as onnx counts) go out


class LogitsOnly(nn.Module):
    """Positional inputs in contract order, logits out: the traced function."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, qa_ids, qa_mask, qa_types, aq_ids, aq_mask, aq_types):
        return self.model(qa_ids, qa_mask, qa_types, aq_ids, aq_mask, aq_types).logits


def parameter_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def export_graph(
    model: nn.Module,
    example: dict[str, torch.Tensor],
    contract: GraphContract,
    path: Path,
    external_data: bool = False,
) -> Path:
    """Export `model` (eval mode, eager attention) to `path`. `example` must not be batch 1. The weights go
    to `<name>.data` beside the graph with `external_data`, and always past ~2 GB (protobuf's limit)."""
    batch = example[contract.input_names[0]].shape[0]
    if batch < 2:
        raise ValueError("export with a batch of at least 2, or the batch axis can be specialised to 1")
    model.eval()
    args = tuple(example[name] for name in contract.input_names)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            LogitsOnly(model),
            args,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=contract.input_names,
            output_names=contract.output_names,
            dynamic_axes=contract.dynamic_axes(),
            do_constant_folding=True,
        )
    if external_data or parameter_bytes(model) > EXTERNAL_DATA_THRESHOLD:
        save_external(onnx.load(str(path)), path)
    return path


def save_external(model_proto: onnx.ModelProto, path: Path) -> list[str]:
    """Save weights beside the graph as `<name>.data`: the runtime hands ONNX Runtime that file's verified
    contents instead of having it parse the weights out of the graph (cold start, README), and past 2 GB it
    is the only way. Returns the extra file names."""
    data_name = Path(path).name + ".data"
    if (Path(path).parent / data_name).exists():
        os.remove(Path(path).parent / data_name)
    # onnx.save_model(save_as_external_data=True) refuses when a file of the weight file's name exists in
    # the CURRENT folder (it checks the bare location, not beside the graph): mark the tensors ourselves,
    # and let save_model write them beside `path`.
    for tensor in _initializers(model_proto.graph):
        if tensor.HasField("raw_data") and sys.getsizeof(tensor.raw_data) >= EXTERNAL_THRESHOLD_BYTES:
            external_data_helper.set_external_data(tensor, data_name)
    onnx.save_model(model_proto, str(path))
    readable_like_graph(path)
    return [data_name]


def _initializers(graph: onnx.GraphProto):
    """A graph's initializers and those of its subgraphs (If/Loop/Scan bodies), as onnx itself moves them."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _initializers(attribute.g)
            for sub in attribute.graphs:
                yield from _initializers(sub)


def readable_like_graph(path: Path) -> None:
    """Give a graph's weight files the graph file's permissions: onnx and onnxruntime create them 0600, which
    a service running as another user than the exporter could not read."""
    for name in external_files(path):
        shutil.copymode(path, Path(path).parent / name)


def external_files(path: Path) -> list[str]:
    """Names of the external-data files a saved model refers to."""
    model = onnx.load(str(path), load_external_data=False)
    names = set()
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                names.add(entry.value)
    return sorted(names)
