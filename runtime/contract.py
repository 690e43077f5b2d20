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
    """Each order has its own batch and sequence axes (`qa_batch`/`qa_sequence`, `aq_batch`/`aq_sequence`):
    a towers branch reads only its own segment, so the question's branch need not be padded to the answer's
    length, and pairs that share one question (a rerank) can feed it once, as a batch of 1 that the head's
    elementwise product broadcasts over the answers. ONNX Runtime plans memory on the promise that equal axis
    names mean equal sizes, so graphs with one `sequence` (or one `batch`) axis for both orders are fed
    both at one length (`orders_padded_apart`) and one batch (`orders_batched_apart`)."""
    inputs = tuple(
        TensorSpec(input_name(order, feature), "int64", (f"{order}_{BATCH_AXIS}", f"{order}_{SEQUENCE_AXIS}"))
        for order in ORDERS
        for feature in FEATURES
    )
    return GraphContract(inputs, (TensorSpec("logits", "float32", (BATCH_AXIS, num_labels)),))


def orders_padded_apart(contract: GraphContract) -> bool:
    """Whether the graph takes each order at its own length (its own dynamic sequence axis)."""
    return _orders_apart(contract, 1)


def orders_batched_apart(contract: GraphContract) -> bool:
    """Whether the graph takes each order at its own batch size (its own dynamic batch axis)."""
    return _orders_apart(contract, 0)


def _orders_apart(contract: GraphContract, axis: int) -> bool:
    """Each order's inputs share one dynamic axis at `axis`, and the two orders' axes there differ."""
    axes = {
        order: {t.axes[axis] for t in contract.inputs if t.name.startswith(f"{order}_") and len(t.axes) == 2}
        for order in ORDERS
    }
    qa, aq = axes["qa"], axes["aq"]
    return len(qa) == len(aq) == 1 and all(isinstance(a, str) for a in qa | aq) and qa != aq


CONTRACT = pair_classifier_contract()


def label_names_problem(value: object, width: object, outputs: str) -> str | None:
    """What is wrong with `value` as the label names of `width` outputs (`outputs` names them in the
    message), or None. The bundle's manifest and the checkpoint's settings are held to this one rule."""
    ok = isinstance(value, list) and all(isinstance(x, str) and x.strip() for x in value)
    if not ok or len(value) < 2 or len(set(value)) != len(value):
        return f"field 'labels' must be a list of at least 2 distinct non-empty names, got {value!r:.80}"
    if len(value) != width:
        return f"field 'labels' has {len(value)} names but {outputs} {width}"
    return None
