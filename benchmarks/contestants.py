"""The contestants: one callable per way of serving the model, all end to end (tokenization included),
all fed the same pairs with the same thread count.

torch contestants import torch only when built, so an ORT worker process never loads it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pairbert.runtime.variants import OPENVINO_VARIANTS, ORT_VARIANTS

TORCH_CONTESTANTS = ("torch-fp32", "torch-bf16", "torch-int8", "torch-fp16-cuda")
# On CUDA: pairbert's ONNX Runtime variants (IO binding inside the predictor) and torch fp16 eager.
# "-nographs": the same without CUDA graph replay (what graphs buy at small batches).
GPU_CONTESTANTS = (
    "ort-fp16-cuda",
    "ort-fp16-cuda-nographs",
    "ort-optimized-cuda",
    "ort-fp32-cuda",
    "torch-fp16-cuda",
)
# What a user would pick instead of pairbert: torch in its best modes and OpenVINO out of the box.
PEERS = ("torch-fp32", "torch-bf16", "torch-int8", "openvino-default")
DEFAULT_PATH = "pairbert-auto"  # PairClassifier.load(bundle): what a pairbert user gets by default

Pairs = Sequence[tuple[str, str]]


@dataclass
class Contestant:
    name: str
    family: (
        str  # "torch", "ort", "openvino" (pairbert's own paths) or "peer-openvino" (OpenVINO out of the box)
    )
    precision: str
    # (pairs, batch_size, mode) -> probabilities [n, 2]; mode: bucketed | padded | pad128
    predict: Callable[[Pairs, int, str], np.ndarray]
    modes: tuple[str, ...]


def peer_batches(encoder, qa: list, aq: list, batch_size: int, mode: str) -> list[list[int]]:
    """How a peer batches the caller's pairs: "bucketed" sorts by token count as the runtime does (keeping
    the caller's batch size, no token cap); otherwise consecutive slices in the caller's order."""
    from pairbert.runtime.predictor import bucketed_batches

    if mode == "bucketed":
        lengths = list(map(encoder.fed_length, qa, aq))
        return bucketed_batches(lengths, batch_size, max_tokens=None)
    n = len(qa)
    return [list(range(s, min(n, s + batch_size))) for s in range(0, n, batch_size)]


def torch_contestant(name: str, checkpoint: Path, threads: int, apart: bool = True) -> Contestant:
    """torch over the checkpoint, fed as pairbert feeds the bundle's graph (`apart`: each order at its own
    length; a towers branch reads only its own)."""
    import torch

    from pairbert.runtime.predictor import softmax
    from pairbert.training.batches import pad_to_max_length
    from pairbert.training.checkpoint import load_checkpoint

    torch.set_num_threads(threads)
    ckpt = load_checkpoint(checkpoint)  # default attention: SDPA, torch's fastest on CPU
    model, encoder = ckpt.model.eval(), ckpt.encoder.with_apart(apart)
    if name == "torch-int8":
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    device = torch.device("cuda" if name.endswith("-cuda") else "cpu")
    if device.type == "cuda":
        model = model.half().to(device)
    # torch-bf16: the one line a torch user adds on a CPU with bf16 matrix units
    autocast = (
        (lambda: torch.autocast("cpu", dtype=torch.bfloat16))
        if name == "torch-bf16"
        else contextlib.nullcontext
    )

    def predict(pairs: Pairs, batch_size: int, mode: str) -> np.ndarray:
        n = len(pairs)
        qa, aq = encoder.tokenize([p[0] for p in pairs], [p[1] for p in pairs])  # once, as the runtime does
        batches = peer_batches(encoder, qa, aq, batch_size, mode)
        out = np.empty((n, 2), np.float32)
        with torch.inference_mode(), autocast():
            for idx in batches:
                arrays = encoder.collate([qa[i] for i in idx], [aq[i] for i in idx])
                batch = {k: torch.from_numpy(v).to(device) for k, v in arrays.items()}
                if mode == "pad128":
                    batch = pad_to_max_length(batch, encoder.max_length)
                out[idx] = model(**batch).logits.float().cpu().numpy()  # .cpu() synchronises on CUDA
        return softmax(out)

    precision = {"torch-int8": "int8", "torch-fp16-cuda": "fp16", "torch-bf16": "bf16"}.get(name, "fp32")
    return Contestant(name, "torch", precision, predict, ("padded", "pad128", "bucketed"))


def pairbert_contestant(
    variant: str, bundle: Path, threads: int, device: str = "cpu", cuda_graphs: bool = True
) -> Contestant:
    """pairbert's runtime on one variant, or on `auto` (the default path: what `load` chooses here)."""
    from pairbert.runtime import PairClassifier

    clf = PairClassifier.load(
        bundle, variant=variant, device=device, threads=threads, cuda_graphs=cuda_graphs
    )

    def predict(pairs: Pairs, batch_size: int, mode: str) -> np.ndarray:
        if mode != "bucketed":
            raise ValueError(mode)
        return clf.predict(pairs, batch_size=batch_size).probabilities

    family = "openvino" if clf.backend == "openvino" else "ort"
    name = (
        DEFAULT_PATH if variant == "auto" else (variant if variant in OPENVINO_VARIANTS else f"ort-{variant}")
    )
    name += ("-cuda" if cuda_graphs else "-cuda-nographs") if device == "cuda" else ""
    contestant = Contestant(
        name, family, clf.manifest.variants[clf.variant].precision, predict, ("bucketed",)
    )
    contestant.chosen = clf.variant  # type: ignore[attr-defined]
    contestant.session = clf.session  # type: ignore[attr-defined]  (the worker reports CUDA graphs in use)
    return contestant


def openvino_default_contestant(bundle: Path, threads: int) -> Contestant:
    """OpenVINO out of the box on the bundle's fp32 ONNX: `compile_model(path, "CPU")` with only the thread
    count set (so every contestant gets the same cores). Its defaults pick bf16 on CPUs with bf16 units."""
    import openvino as ov

    from pairbert.runtime.bundle import bundle_encoder, read_manifest
    from pairbert.runtime.predictor import softmax

    manifest = read_manifest(bundle)
    encoder = bundle_encoder(bundle, manifest)
    compiled = ov.Core().compile_model(
        str(bundle / manifest.variants["fp32"].file), "CPU", {"INFERENCE_NUM_THREADS": threads}
    )
    request = compiled.create_infer_request()
    names = [p.get_any_name() for p in compiled.inputs]

    def predict(pairs: Pairs, batch_size: int, mode: str) -> np.ndarray:
        n = len(pairs)
        qa, aq = encoder.tokenize([p[0] for p in pairs], [p[1] for p in pairs])
        batches = peer_batches(encoder, qa, aq, batch_size, mode)
        out = np.empty((n, 2), np.float32)
        for idx in batches:
            feed = encoder.collate([qa[i] for i in idx], [aq[i] for i in idx])
            request.infer({k: feed[k] for k in names})
            out[idx] = request.get_output_tensor(0).data
        return softmax(out)

    hint = compiled.get_property("INFERENCE_PRECISION_HINT")  # what OpenVINO chose for this CPU
    precision = {"f32": "fp32"}.get(hint.get_type_name(), hint.get_type_name())
    return Contestant("openvino-default", "peer-openvino", precision, predict, ("padded", "bucketed"))


def build(name: str, bundle: Path, checkpoint: Path, threads: int) -> Contestant:
    if name in TORCH_CONTESTANTS:
        from pairbert.runtime.bundle import read_manifest
        from pairbert.runtime.contract import orders_padded_apart

        return torch_contestant(
            name, checkpoint, threads, orders_padded_apart(read_manifest(bundle).contract)
        )
    if name == "openvino-default":
        return openvino_default_contestant(bundle, threads)
    if name == DEFAULT_PATH:
        return pairbert_contestant("auto", bundle, threads)
    if name.startswith("ort-") and name.endswith(("-cuda", "-cuda-nographs")):
        variant, _, how = name[4:].partition("-cuda")
        if variant in ORT_VARIANTS:  # IO binding (and CUDA graphs unless -nographs) in the runtime
            return pairbert_contestant(
                variant, bundle, threads, device="cuda", cuda_graphs=how != "-nographs"
            )
    if name.startswith("ort-") and name[4:] in ORT_VARIANTS:
        return pairbert_contestant(name[4:], bundle, threads)
    if name in OPENVINO_VARIANTS:
        return pairbert_contestant(name, bundle, threads)
    raise ValueError(f"unknown contestant {name!r}")
