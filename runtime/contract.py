"""The ONNX input/output contract, as data. Export builds the graph from it, validation checks the graph
against it, and the predictor feeds the session by it."""

from __future__ import annotations

from dataclasses import dataclass

from .tokenization import FEATURES, ORDERS, input_name

BATCH_AXIS = "batch"
SEQUENCE_AXIS = "sequence"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name
    axes: tuple[str | int, ...]  # a str is a dynamic axis, an int a fixed size

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "axes": list(self.axes)}

    @classmethod
    def from_dict(cls, d: dict) -> TensorSpec:
        return cls(d["name"], d["dtype"], tuple(d["axes"]))


@dataclass(frozen=True)
class GraphContract:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """In the form torch.onnx.export takes."""
        return {
            t.name: {i: a for i, a in enumerate(t.axes) if isinstance(a, str)}
            for t in self.inputs + self.outputs
        }

    def to_dict(self) -> dict:
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}

    @classmethod
    def from_dict(cls, d: dict) -> GraphContract:
        return cls(
            tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
            tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
        )


def pair_classifier_contract(num_labels: int = 2) -> GraphContract:
    inputs = tuple(
        TensorSpec(input_name(order, feature), "int64", (BATCH_AXIS, SEQUENCE_AXIS))
        for order in ORDERS
        for feature in FEATURES
    )
    return GraphContract(inputs, (TensorSpec("logits", "float32", (BATCH_AXIS, num_labels)),))


CONTRACT = pair_classifier_contract()
