"""The GPU check's CPU-side tools: carrying a checkpoint and wheels to a machine without network in parts,
and turning the CUDA run's worker results into the issue's figures. The CUDA runs themselves are gpu-marked
(tests/test_runtime.py) and run by benchmarks/gpu_check.sh on a lent GPU."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pairbert.benchmarks import gpu_carry
from pairbert.benchmarks.gpu_report import summarise
from pairbert.benchmarks.processes import run_json


def test_carry_round_trip_in_parts(tmp_path, tiny_checkpoint):
    wheel = tmp_path / "onnxruntime_gpu-0.0-cp312-none-any.whl"
    wheel.write_bytes(np.random.default_rng(0).bytes(int(2.5 * 2**20)))  # spans three 1 MiB folders
    packed = gpu_carry.pack(tiny_checkpoint, [wheel], tmp_path / "carry", chunk_mib=1)
    assert packed["folders"] >= 3 and all(size <= 1.0 for size in packed["mib"].values())

    out = gpu_carry.unpack(tmp_path / "carry", tmp_path / "check")
    assert (tmp_path / "check" / "wheels" / wheel.name).read_bytes() == wheel.read_bytes()
    for f in tiny_checkpoint.glob("*.safetensors"):
        original, carried = load_file(str(f)), load_file(str(tmp_path / "check" / "checkpoint" / f.name))
        for name, tensor in original.items():  # float32 again, equal to the float16-rounded original
            assert carried[name].dtype == tensor.dtype
            if tensor.dtype == torch.float32:
                torch.testing.assert_close(carried[name], tensor.half().float(), rtol=0, atol=0)
    carried_names = {p.name for p in tiny_checkpoint.iterdir() if p.suffix != ".pt"}  # optimizer state stays
    assert {p.name for p in (tmp_path / "check" / "checkpoint").iterdir()} == carried_names
    assert out["files"] == len(carried_names) + 1


def test_unpack_names_a_missing_folder(tmp_path, tiny_checkpoint):
    wheel = tmp_path / "w.whl"
    wheel.write_bytes(b"x" * (3 * 2**20))
    gpu_carry.pack(tiny_checkpoint, [wheel], tmp_path / "carry", chunk_mib=1)
    shutil.rmtree(tmp_path / "carry" / "b2")  # a call that was never made
    with pytest.raises(SystemExit, match="sha256 mismatch|no parts"):
        gpu_carry.unpack(tmp_path / "carry", tmp_path / "check")


def test_report_turns_worker_results_into_targets(tmp_path, tiny_bundle, tiny_checkpoint):
    result = run_json(
        [
            "-m",
            "pairbert.benchmarks.worker",
            "ort-fp32",
            "--bundle",
            str(tiny_bundle),
            "--checkpoint",
            str(tiny_checkpoint),
            "--threads",
            "1",
            "--quick",
        ]
    )
    slower = json.loads(json.dumps(result))
    slower["contestant"] = "torch-fp16-cuda"
    for lat in slower["latency"].values():
        lat["p50_ms"] *= 4
    slower["validation"]["labels"][0] = 1 - slower["validation"]["labels"][0]
    result["contestant"] = "ort-fp16-cuda"
    result["batch32x128"] = {"tokens": 128, "batch": 32, "p50_ms": 10.0}
    reference = dict(result, contestant="ort-fp32-cuda")
    for name, r in (("ort-fp16-cuda", result), ("torch-fp16-cuda", slower), ("ort-fp32-cuda", reference)):
        (tmp_path / f"bench-{name}.json").write_text(json.dumps(r))
    (tmp_path / "gpu_peak.json").write_text(
        json.dumps({"peak_tflops": 100.0, "model_shape_peak_tflops": 50.0})
    )
    (tmp_path / "parity.json").write_text(
        json.dumps({"fp16": {"label_agreement": 0.996, "validated_on": "cuda"}})
    )

    summary = summarise(tmp_path, hidden=32, layers=2)
    targets = summary["targets"]
    assert targets["speedup_over_torch_fp16_eager_b1"]["value"] == pytest.approx(4.0, rel=1e-3)
    assert targets["speedup_over_torch_fp16_eager_b1"]["met"] is True
    assert targets["ort_fp16_b1_short_p50_ms"]["met"] is (result["latency"]["short"]["p50_ms"] <= 1.0)
    assert targets["fp16_label_agreement"] == {
        "value": 0.996,
        "target": ">= 0.995",
        "met": True,
        "validated_on": "cuda",
    }
    agreement = summary["label_agreement_with_ort_fp32_cuda"]
    n = len(result["validation"]["labels"])
    assert agreement["ort-fp16-cuda"] == 1.0 and agreement["torch-fp16-cuda"] == pytest.approx((n - 1) / n)
    row = next(r for r in summary["rows"] if r["contestant"] == "ort-fp16-cuda")
    # 2 branches · 32 pairs · 2 layers · (24·128·32² + 4·128²·32) FLOPs in 10 ms
    tflops = 2 * 32 * 2 * (24 * 128 * 32**2 + 4 * 128**2 * 32) / 0.010 / 1e12
    assert row["batch32x128"]["tflops"] == pytest.approx(tflops, abs=0.01)
    assert row["batch32x128"]["pct_of_card_peak"] == pytest.approx(100 * tflops / 100.0, abs=0.01)
