"""Validate an exported graph in stages, each with its own error, and gate each variant on parity.

Stages: onnx.checker (full) → session loads → input/output names and dynamic axes as the contract says →
output shapes over a grid of batch sizes and lengths → values against the torch model.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from pairbert.runtime.contract import GraphContract
from pairbert.runtime.errors import PairbertError, first_line
from pairbert.runtime.predictor import softmax
from pairbert.runtime.variants import AUTO_MIN_AGREEMENT

log = logging.getLogger(__name__)


class ExportError(PairbertError, RuntimeError):
    """An export that failed one validation stage; `stage` names it."""

    def __init__(self, stage: str, message: str):
        self.stage = stage
        super().__init__(f"[{stage}] {message}")


class ParityError(ExportError):
    def __init__(self, variant: str, message: str, figures: dict):
        self.variant, self.figures = variant, figures
        super().__init__("parity", f"variant {variant!r}: {message}")


@dataclass
class StageReport:
    lines: list[str] = field(default_factory=list)
    echo: Callable[[str], None] | None = None
    failures: dict[str, str] = field(default_factory=dict)  # stage -> its last failure's detail

    def ok(self, stage: str, detail: str = "") -> None:
        self._add(f"  ✓ {stage}" + (f": {detail}" if detail else ""))

    def fail(self, stage: str, detail: str) -> None:
        self.failures[stage] = detail
        self._add(f"  ✗ {stage}: {detail}")

    def _add(self, line: str) -> None:
        self.lines.append(line)
        if self.echo:
            self.echo(line)


def _dims(value_info) -> list[str | int]:
    return [d.dim_param if d.dim_param else d.dim_value for d in value_info.type.tensor_type.shape.dim]


def check_structure(path: Path, contract: GraphContract, report: StageReport) -> None:
    stage = "onnx.checker"
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # onnx raises several types
        report.fail(stage, first_line(exc))
        raise ExportError(stage, str(exc)) from None
    report.ok(stage, "full check")

    stage = "contract"
    graph = onnx.load(str(path), load_external_data=False).graph
    names_in = [i.name for i in graph.input]
    names_out = [o.name for o in graph.output]
    if names_in != contract.input_names or names_out != contract.output_names:
        msg = (
            f"inputs {names_in} / outputs {names_out}, "
            f"expected {contract.input_names} / {contract.output_names}"
        )
        report.fail(stage, msg)
        raise ExportError(stage, msg)
    for value_info, spec in zip(
        list(graph.input) + list(graph.output), contract.inputs + contract.outputs, strict=True
    ):
        dims = _dims(value_info)
        # strict=False: a wrong rank is reported by the shapes stage, with the shape it produced
        for axis, (have, want) in enumerate(zip(dims, spec.axes, strict=False)):
            if (
                isinstance(want, str)
                and not isinstance(have, str)
                or not isinstance(want, str)
                and have != want
            ):
                msg = (
                    f"{spec.name} axis {axis} is {have!r}, the contract says {want!r} "
                    "(a dynamic axis was fixed?)"
                )
                report.fail(stage, msg)
                raise ExportError(stage, msg)
            if isinstance(want, str) and have != want:  # the runtime pads by these names (contract.py)
                msg = f"{spec.name} axis {axis} is named {have!r}, the contract says {want!r}"
                report.fail(stage, msg)
                raise ExportError(stage, msg)
    report.ok(stage, f"{len(names_in)} inputs, {len(names_out)} output, dynamic axes as specified")


def make_session(path: Path, providers: list[str] | None = None):
    """An onnxruntime.InferenceSession from the runtime's session factory (the same options it serves with),
    on CUDA when `providers` names it."""
    from pairbert.runtime.devices import physical_cores
    from pairbert.runtime.sessions import CUDA_PROVIDER, SessionSettings, open_session

    device = "cuda" if providers and CUDA_PROVIDER in providers else "cpu"
    return open_session(
        "onnxruntime", path, SessionSettings(threads=physical_cores(), device=device, cuda_graphs=False)
    ).session


def check_session_and_shapes(
    path: Path,
    contract: GraphContract,
    feeds: list[dict[str, np.ndarray]],
    report: StageReport,
    providers: list[str] | None = None,
):
    stage = "session"
    try:
        session = make_session(path, providers)
    except Exception as exc:
        report.fail(stage, first_line(exc))
        raise ExportError(stage, str(exc)) from None
    report.ok(stage, ", ".join(session.get_providers()))

    stage = "shapes"
    seen = []
    for feed in feeds:
        batches = sorted({v.shape[0] for v in feed.values()})
        batch = batches[-1]
        lengths = sorted({v.shape[1] for v in feed.values()})
        length = "/".join(map(str, lengths)) if len(lengths) > 1 else lengths[0]
        shape = f"batch {'/'.join(map(str, batches))} × length {length}"
        try:
            (logits,) = session.run(contract.output_names, feed)
            # one question's row for many answers must give what the row repeated gives
            moved = shared_row_drift(lambda f: session.run(contract.output_names, f)[0], feed, logits)
        except Exception as exc:
            msg = f"{shape}: {first_line(exc)}"
            report.fail(stage, msg)
            raise ExportError(stage, msg) from None
        if logits.shape != (batch, contract.outputs[0].axes[1]) or not np.isfinite(logits).all():
            msg = f"{shape} gave logits of shape {logits.shape} (finite: {np.isfinite(logits).all()})"
            report.fail(stage, msg)
            raise ExportError(stage, msg)
        if moved > SHARED_ROW_TOLERANCE:
            msg = f"{shape}: one row fed for all gave logits {moved:.3g} away from the row repeated"
            report.fail(stage, msg)
            raise ExportError(stage, msg)
        seen.append(shape.replace("batch ", "").replace(" × length ", "×"))
    report.ok(stage, "batch×length " + ", ".join(seen))
    return session


# A row broadcast by the graph and the same row repeated are the same arithmetic: they differ by summation
# order at most (fp16 kernels included); a graph that broadcasts wrongly moves logits by whole units.
SHARED_ROW_TOLERANCE = 0.01


def shared_row_drift(run, feed: dict[str, np.ndarray], logits: np.ndarray | None = None) -> float:
    """max |Δlogit| between `run(feed)` (`logits`, when already computed) and `run` of the same feed with
    every one-row input repeated to the largest batch; 0 for a feed whose inputs share one batch size."""
    batch = max(len(value) for value in feed.values())
    if all(len(value) == batch for value in feed.values()):
        return 0.0
    logits = np.asarray(run(feed) if logits is None else logits)
    if len(logits) != batch:  # one answer per row of the larger batch, or it is wrong however close
        return float("inf")
    repeated = {name: np.repeat(v, batch, axis=0) if len(v) == 1 else v for name, v in feed.items()}
    return float(np.abs(logits - np.asarray(run(repeated))).max())


def parity_figures(reference: np.ndarray, candidate: np.ndarray) -> dict:
    dl = np.abs(reference - candidate)
    dp = np.abs(softmax(reference) - softmax(candidate))[:, 1]
    return {
        "pairs": int(reference.shape[0]),
        "max_abs_logit_diff": float(dl.max()),
        "mean_abs_logit_diff": float(dl.mean()),
        "max_abs_prob_diff": float(dp.max()),
        "mean_abs_prob_diff": float(dp.mean()),
        "label_agreement": float((reference.argmax(-1) == candidate.argmax(-1)).mean()),
        "non_finite": _non_finite(reference, candidate),
    }


def _non_finite(reference: np.ndarray, candidate: np.ndarray) -> str:
    """ "" when all logits are finite, else which side has how many NaN/inf values."""
    parts = [
        f"{name} {int((~np.isfinite(a)).sum())}"
        for name, a in (("torch", reference), ("onnx", candidate))
        if not np.isfinite(a).all()
    ]
    return ", ".join(parts)


@dataclass(frozen=True)
class ParityRule:
    max_abs_logit_diff: float | None = None
    min_label_agreement: float | None = None

    def failures(self, figures: dict) -> list[str]:
        """What fails the rule. Written so that NaN fails (`nan > x` is False, `nan <= x` too)."""
        out = []
        if figures.get("non_finite"):
            out.append(f"non-finite logits ({figures['non_finite']}): the model or its export is broken")
        if (
            self.max_abs_logit_diff is not None
            and not figures["max_abs_logit_diff"] <= self.max_abs_logit_diff
        ):
            out.append(
                f"max |Δlogit| {figures['max_abs_logit_diff']:.3g} > {self.max_abs_logit_diff:g} "
                f"(over by {figures['max_abs_logit_diff'] - self.max_abs_logit_diff:.3g})"
            )
        if (
            self.min_label_agreement is not None
            and not figures["label_agreement"] >= self.min_label_agreement
        ):
            agreement, bound = figures["label_agreement"], self.min_label_agreement
            out.append(
                f"label agreement {percent_down(agreement)} < {bound:.0%} (short by {bound - agreement:.2%})"
            )
        return out


def percent_down(fraction: float) -> str:
    """A share as a percentage with 2 decimals, rounded down: 396 of 398 reads 99.49 %, never "99.50 %"
    beside a 99.5 % bound it misses."""
    return f"{math.floor(fraction * 10_000) / 100:.2f}%" if math.isfinite(fraction) else f"{fraction}"


PARITY_RULES = {
    "fp32": ParityRule(max_abs_logit_diff=1e-4),
    "optimized": ParityRule(max_abs_logit_diff=1e-4),
    "int8": ParityRule(min_label_agreement=0.99),
    "fp16": ParityRule(min_label_agreement=0.99),
    # OpenVINO's fp32 kernels sum in another order than torch's: the same bound as ORT's fp32 graphs.
    "openvino-fp32": ParityRule(max_abs_logit_diff=1e-4),
    "openvino-bf16": ParityRule(min_label_agreement=0.995),
    # int8's own bound, as ORT's; `auto` still takes it by default only at AUTO_MIN_AGREEMENT or above
    "openvino-int8": ParityRule(min_label_agreement=0.99),
}


def run_batches(session, contract: GraphContract, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    return np.concatenate([session.run(contract.output_names, f)[0] for f in feeds])


def gate(
    variant: str, reference: np.ndarray, candidate: np.ndarray, report: StageReport
) -> tuple[dict, list[str]]:
    figures = parity_figures(reference, candidate)
    fails = PARITY_RULES[variant].failures(figures)
    detail = (
        f"{figures['pairs']} pair{'' if figures['pairs'] == 1 else 's'}, "
        f"max |Δlogit| {figures['max_abs_logit_diff']:.2e}, "
        f"max |Δprob| {figures['max_abs_prob_diff']:.2e}, mean |Δprob| {figures['mean_abs_prob_diff']:.2e}, "
        f"labels agree {percent_down(figures['label_agreement'])}"
    )
    if fails:
        report.fail(f"parity {variant}", detail + " — " + "; ".join(fails))
    elif figures["label_agreement"] < AUTO_MIN_AGREEMENT:
        report.ok(
            f"parity {variant}",
            f"{detail} (under {AUTO_MIN_AGREEMENT:.1%}: `auto` takes it only if no variant at or above "
            "that runs)",
        )
    else:
        report.ok(f"parity {variant}", detail)
    return figures, fails


def reference_check(path: Path, contract: GraphContract, feed: dict[str, np.ndarray]) -> float:
    """max |Δlogit| between ONNX Runtime and onnx's reference evaluator (the graph means what ORT runs)."""
    from onnx.reference import ReferenceEvaluator

    ref = ReferenceEvaluator(str(path))
    expected = ref.run(None, feed)[0]
    actual = make_session(path).run(contract.output_names, feed)[0]
    return float(np.abs(expected - actual).max())
