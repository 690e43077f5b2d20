"""checkpoint dir → bundle dir: export, fuse, quantize, validate, gate, write (atomically)."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import torch

from pairbert.builtin_data import BUILTIN_VALIDATION
from pairbert.runtime.bundle import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    TOKENIZER_FILE,
    Manifest,
    VariantInfo,
    sha256_file,
    weights_sha256,
)
from pairbert.runtime.contract import CONTRACT, GraphContract
from pairbert.runtime.devices import cuda_provider_available
from pairbert.runtime.pair_files import read_pairs
from pairbert.runtime.tokenization import ORDERS, input_name
from pairbert.runtime.variants import OPENVINO_VARIANTS, ORT_VARIANTS, VARIANTS
from pairbert.training.batches import encode_batch
from pairbert.training.checkpoint import LABELS, load_checkpoint

from . import fusion, onnx_graph, precision
from .openvino_variants import build_openvino_variants
from .validation import (
    ExportError,
    ParityError,
    StageReport,
    check_session_and_shapes,
    check_structure,
    gate,
    run_batches,
)

log = logging.getLogger(__name__)

FILE_NAMES = {v: f"model.{v}.onnx" for v in ORT_VARIANTS}
PRECISION = {"fp32": "fp32", "optimized": "fp32", "int8": "int8", "fp16": "fp16"}
DEVICE = {"fp32": "any", "optimized": "any", "int8": "cpu", "fp16": "cuda"}
SHAPE_GRID = ((1, 4), (2, 17), (7, 64), (33, 128))


@dataclass
class ExportSettings:
    variants: tuple[str, ...] = VARIANTS
    validation_file: str | None = None  # default: the checkpoint's validation split
    force: bool = False  # write variants that fail the parity gate (marked as failed)
    int8: precision.Int8Options = field(default_factory=precision.Int8Options)
    external_data: bool | None = None  # None: only when the weights pass ~2 GB
    parity_batch_size: int = 16
    max_parity_pairs: int | None = None


def _versions() -> dict:
    import onnxruntime
    import transformers

    import pairbert

    return {"pairbert": pairbert.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def shape_grid_feeds(contract: GraphContract, vocab_size: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Random ids with ragged padding for each (batch, length) in the grid: exercises the dynamic axes."""
    rng = np.random.default_rng(seed)
    feeds = []
    for batch, length in SHAPE_GRID:
        feed = {}
        lengths = rng.integers(min(3, length), length + 1, size=batch)
        lengths[0] = length
        mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
        for order in ORDERS:
            ids = rng.integers(5, vocab_size, size=(batch, length), dtype=np.int64) * mask
            types = ((np.arange(length)[None, :] >= (lengths[:, None] // 2)) * mask).astype(np.int64)
            feed.update({input_name(order, "input_ids"): ids, input_name(order, "attention_mask"): mask,
                         input_name(order, "token_type_ids"): types})
        feeds.append({name: feed[name] for name in contract.input_names})
    return feeds


def export_bundle(checkpoint: str | Path, out_dir: str | Path, settings: ExportSettings | None = None,
                  echo: Callable[[str], None] | None = print) -> Manifest:
    settings = settings or ExportSettings()
    unknown = set(settings.variants) - set(VARIANTS)
    if unknown:
        raise ExportError("settings", f"unknown variant(s) {sorted(unknown)}; choose from {VARIANTS}")
    if set(OPENVINO_VARIANTS) & set(settings.variants) and "fp32" not in settings.variants:
        raise ExportError("settings", "OpenVINO variants compile the fp32 graph: add fp32 to the variants")
    out_dir = Path(out_dir)
    report = StageReport(echo=echo)
    started = time.perf_counter()
    ckpt = load_checkpoint(Path(checkpoint), attn_implementation="eager")
    model, encoder = ckpt.model, ckpt.encoder
    enc_cfg = model.config.encoder
    num_layers, num_heads, hidden = enc_cfg["num_hidden_layers"], enc_cfg["num_attention_heads"], enc_cfg["hidden_size"]

    val_file = settings.validation_file or ckpt.settings.get("train_config", {}).get("validation_file")
    if not val_file or not Path(val_file).is_file():
        val_file = str(BUILTIN_VALIDATION)
    pairs = read_pairs(val_file)[: settings.max_parity_pairs]
    batches = [pairs[i : i + settings.parity_batch_size] for i in range(0, len(pairs), settings.parity_batch_size)]
    torch_feeds = [encode_batch(encoder, b, with_labels=False) for b in batches]
    with torch.inference_mode():
        reference = np.concatenate([model(**f).logits.float().numpy() for f in torch_feeds])
    feeds = [{k: v.numpy() for k, v in f.items()} for f in torch_feeds]
    grid = shape_grid_feeds(CONTRACT, encoder.tokenizer.get_vocab_size())
    if echo:
        echo(f"exporting {checkpoint} ({num_layers} layers × 2 branches, hidden {hidden}); "
             f"parity on {len(pairs)} pairs from {val_file}")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = out_dir.parent / f".tmp-{out_dir.name}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    variants: dict[str, VariantInfo] = {}
    failures: list[str] = []
    timings: dict[str, float] = {}
    try:
        fp32_path = work / FILE_NAMES["fp32"]
        t0 = time.perf_counter()
        onnx_graph.export_graph(model, encode_batch(encoder, pairs[:4], with_labels=False), CONTRACT, fp32_path,
                                external_data=settings.external_data)
        timings["fp32"] = time.perf_counter() - t0
        use_external = bool(onnx_graph.external_files(fp32_path))
        built = {"fp32": fp32_path}

        def build(variant: str) -> Path:
            path = work / FILE_NAMES[variant]
            t = time.perf_counter()
            if variant == "optimized":
                fusion.optimize(built["fp32"], path, num_heads, hidden, use_external_data=use_external)
            elif variant == "int8":
                precision.quantize_int8(built.get("optimized") or build("optimized"), path, settings.int8)
            elif variant == "fp16":
                precision.convert_fp16(built.get("optimized") or build("optimized"), path)
            timings[variant] = time.perf_counter() - t
            built[variant] = path
            return path

        for variant in ORT_VARIANTS:
            if variant not in settings.variants and not (variant == "optimized" and
                                                         {"int8", "fp16"} & set(settings.variants)):
                continue
            if echo:
                echo(f"{variant}:")
            path = built.get(variant) or build(variant)
            check_structure(path, CONTRACT, report)
            ops = fusion.count_ops(onnx.load(str(path), load_external_data=False))
            fused = fusion.fused_counts(ops)
            if variant != "fp32":
                short = fusion.shortfall(fused, num_layers)
                if short:
                    detail = ", ".join(f"{k} {have}/{need}" for k, (have, need) in short.items())
                    report.fail("fusion", f"FUSION SHORTFALL: {detail} — the runtime will be slower than it should")
                    log.warning("fusion shortfall in %s: %s", variant, detail)
                else:
                    report.ok("fusion", ", ".join(f"{k} {v}" for k, v in fused.items()))
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if variant == "fp16" and cuda_provider_available() else None
            session = check_session_and_shapes(path, CONTRACT, grid, report, providers)
            figures, fails = gate(variant, reference, run_batches(session, CONTRACT, feeds), report)
            if variant not in settings.variants:
                continue  # built only as the base of int8/fp16
            if fails:
                failures.append(f"{variant}: " + "; ".join(fails))
                if not settings.force:
                    path.unlink()
                    continue
            validated_on = "cuda" if providers else "cpu"
            notes = ""
            if variant == "fp16" and not providers:
                notes = "validated with ONNX Runtime's CPU kernels only; no CUDA device at export time"
            extra = onnx_graph.external_files(path)
            variants[variant] = VariantInfo(
                name=variant, file=path.name, precision=PRECISION[variant], size_bytes=path.stat().st_size
                + sum((work / e).stat().st_size for e in extra),
                sha256=sha256_file(path), intended_device=DEVICE[variant], parity=figures,
                passed_parity=not fails, validated_on=validated_on, fused_ops=fused if variant != "fp32" else {},
                external_data=tuple(extra), external_sha256=tuple(sha256_file(work / e) for e in extra),
                notes=notes + (f"int8 options: {settings.int8.label()}" if variant == "int8" else ""),
            )
        for variant, path in built.items():  # intermediates that were not asked for
            if variant not in variants and path.exists():
                path.unlink()
        if "fp32" in settings.variants and "fp32" not in variants:
            raise ParityError("fp32", "the plain export does not match torch; nothing written: " + "; ".join(failures), {})
        if "fp32" in variants:
            for info in build_openvino_variants(work / FILE_NAMES["fp32"], reference, feeds, report,
                                                settings.variants):
                variants[info.name] = info
                if not info.passed_parity and info.validated_on != "none":
                    failures.append(f"{info.name}: {info.notes}")
        shutil.copyfile(ckpt.path / TOKENIZER_FILE, work / TOKENIZER_FILE)
        manifest = Manifest(
            format_version=FORMAT_VERSION, labels=tuple(ckpt.settings.get("labels", LABELS)),
            max_length=encoder.max_length, contract=CONTRACT, variants=variants,
            tokenizer_file=TOKENIZER_FILE, tokenizer_sha256=sha256_file(work / TOKENIZER_FILE),
            versions={**_versions(), "export_seconds": {k: round(v, 2) for k, v in timings.items()}},
            source_checkpoint=str(ckpt.path.resolve()), source_weights_sha256=weights_sha256(ckpt.path),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        (work / MANIFEST_FILE).write_text(manifest.to_json())
        _swap_into_place(work, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if echo:
        echo(f"wrote {out_dir} ({', '.join(variants)}) in {time.perf_counter() - started:.1f}s")
    if failures:
        raise ParityError(",".join(f.split(":")[0] for f in failures),
                          ("written anyway (--force): " if settings.force else "not written: ") + " | ".join(failures), {})
    return manifest


def _swap_into_place(work: Path, out_dir: Path) -> None:
    old = out_dir.parent / f".old-{out_dir.name}"
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(work, out_dir)
    shutil.rmtree(old, ignore_errors=True)

