"""The contestants: one callable per way of serving the model, all end to end (tokenization included),
all fed the same pairs with the same thread count.

torch contestants import torch only when built, so an ORT worker process never loads it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ORT_VARIANTS = ("fp32", "optimized", "int8", "fp16")
TORCH_CONTESTANTS = ("torch-fp32", "torch-int8", "torch-fp16-cuda")
GPU_CONTESTANTS = ("torch-fp16-cuda", "ort-fp16-cuda")

Pairs = Sequence[tuple[str, str]]


@dataclass
class Contestant:
    name: str
    family: str  # "torch" or "ort"
    precision: str
    # (pairs, batch_size, mode) -> probabilities [n, 2]; mode: bucketed | padded | pad128
    predict: Callable[[Pairs, int, str], np.ndarray]
    modes: tuple[str, ...]


def torch_contestant(name: str, checkpoint: Path, threads: int) -> Contestant:
    import torch

    from pairbert.runtime.predictor import bucketed_batches, softmax
    from pairbert.training.batches import pad_to_max_length
    from pairbert.training.checkpoint import load_checkpoint

    torch.set_num_threads(threads)
    ckpt = load_checkpoint(checkpoint)  # default attention: SDPA, torch's fastest on CPU
    model, encoder = ckpt.model.eval(), ckpt.encoder
    if name == "torch-int8":
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    device = torch.device("cuda" if name.endswith("-cuda") else "cpu")
    if device.type == "cuda":
        model = model.half().to(device)

    def predict(pairs: Pairs, batch_size: int, mode: str) -> np.ndarray:
        n = len(pairs)
        qa, aq = encoder.tokenize([p[0] for p in pairs], [p[1] for p in pairs])  # once, as the runtime does
        if mode == "bucketed":  # sorted by token count as the runtime does, but the caller's batch size kept
            batches = bucketed_batches([len(e.ids) for e in qa], batch_size, max_tokens=None)
        else:
            batches = [list(range(s, min(n, s + batch_size))) for s in range(0, n, batch_size)]
        out = np.empty((n, 2), np.float32)
        with torch.inference_mode():
            for idx in batches:
                arrays = encoder.collate([qa[i] for i in idx], [aq[i] for i in idx])
                batch = {k: torch.from_numpy(v).to(device) for k, v in arrays.items()}
                if mode == "pad128":
                    batch = pad_to_max_length(batch, encoder.max_length)
                out[idx] = model(**batch).logits.float().cpu().numpy()  # .cpu() synchronises on CUDA
        return softmax(out)

    precision = {"torch-int8": "int8", "torch-fp16-cuda": "fp16"}.get(name, "fp32")
    return Contestant(name, "torch", precision, predict,
                      ("padded", "pad128", "bucketed"))


def ort_contestant(variant: str, bundle: Path, threads: int, device: str = "cpu") -> Contestant:
    from pairbert.runtime import PairClassifier

    clf = PairClassifier.load(bundle, variant=variant, device=device, threads=threads)

    def predict(pairs: Pairs, batch_size: int, mode: str) -> np.ndarray:
        if mode != "bucketed":
            raise ValueError(mode)
        return clf.predict(pairs, batch_size=batch_size).probabilities

    return Contestant(f"ort-{variant}", "ort", clf.manifest.variants[variant].precision, predict, ("bucketed",))


def build(name: str, bundle: Path, checkpoint: Path, threads: int) -> Contestant:
    if name in TORCH_CONTESTANTS:
        return torch_contestant(name, checkpoint, threads)
    if name == "ort-fp16-cuda":  # IO binding happens inside the predictor on CUDA
        return ort_contestant("fp16", bundle, threads, device="cuda")
    if name.startswith("ort-") and name[4:] in ORT_VARIANTS:
        return ort_contestant(name[4:], bundle, threads)
    raise ValueError(f"unknown contestant {name!r}")
