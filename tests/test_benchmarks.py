"""The benchmark's yardsticks: FLOP counts and the kernel floor must describe the model that is exported."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest
from onnx import numpy_helper

from pairbert.benchmarks.flops import batch_flops
from pairbert.benchmarks.kernel_floor import gemm_flops, kernel_floor, matmul_only_model


def weight_matmul_sizes(model: onnx.ModelProto) -> list[int]:
    """K·N of every MatMul whose weight is an initializer (the encoders' dense layers)."""
    weights = {i.name: numpy_helper.to_array(i).shape for i in model.graph.initializer}
    return [
        weights[n.input[1]][0] * weights[n.input[1]][1]
        for n in model.graph.node
        if n.op_type == "MatMul" and len(weights.get(n.input[1], ())) == 2
    ]


def test_floor_graph_holds_exactly_the_exported_models_gemm_work(tiny_bundle, tiny_checkpoint):
    encoder = json.loads((tiny_checkpoint / "config.json").read_text())["encoder"]
    h, i, layers = encoder["hidden_size"], encoder["intermediate_size"], encoder["num_hidden_layers"]
    exported = onnx.load(str(tiny_bundle / "model.fp32.onnx"))
    floor = matmul_only_model(h, i, layers)
    # The export has Q, K and V as three MatMuls where the floor has one [H, 3H]: compare the work, per token.
    assert sum(weight_matmul_sizes(floor)) == sum(weight_matmul_sizes(exported))
    assert 2 * sum(weight_matmul_sizes(floor)) == gemm_flops(1, h, i, layers)


def test_gemm_flops_agree_with_the_flop_model_used_for_percent_of_peak():
    s, h, layers = 18, 384, 6
    attention_score_flops = 2 * layers * 4 * s * s * h  # the two batched attention GEMMs, both branches
    assert gemm_flops(s, h, 4 * h, layers) == batch_flops(s, 1, h, layers) - attention_score_flops


def test_kernel_floor_measures_both_precisions():
    result = kernel_floor(hidden=32, intermediate=64, layers=2, tokens=[8, 5], threads=1, runs=20)
    assert result["matmuls"] == 16  # 4 per layer, 2 layers, each branch at its own length
    assert result["gflop"] == pytest.approx(
        (gemm_flops(8, 32, 64, 2, branches=1) + gemm_flops(5, 32, 64, 2, branches=1)) / 1e9
    )
    assert result["fp32_ms"] > 0 and result["int8_ms"] > 0
    assert abs(result["fp32_gflops"] - result["gflop"] / (result["fp32_ms"] / 1e3)) < 1e-6


def test_bench_refuses_a_checkpoint_the_bundle_was_not_exported_from(tiny_bundle, tiny_checkpoint, tmp_path):
    from pairbert.benchmarks.processes import BenchmarkError
    from pairbert.benchmarks.suite import run_suite
    from pairbert.runtime.bundle import read_manifest, weights_sha256

    assert read_manifest(tiny_bundle).source_weights_sha256 == weights_sha256(tiny_checkpoint)
    other = shutil.copytree(tiny_checkpoint, tmp_path / "other")
    weights = other / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(BenchmarkError, match="not the weights .* was exported from"):
        run_suite(tiny_bundle, other, tmp_path / "out", quick=True, threads=1)
    assert not (tmp_path / "out").exists()


def test_matrix_peak_measures_every_precision_the_cpu_has_and_divides_by_the_best():
    from pairbert.benchmarks.gemm_peak import gemm_peak_gflops
    from pairbert.runtime.sessions import has_bf16_units

    peak = gemm_peak_gflops(hidden=32, tokens=64, threads=1, seconds=0.05)
    assert {"fp32", "int8"} <= set(peak["by_precision"])
    assert ("bf16" in peak["by_precision"]) == has_bf16_units() == peak["bf16_units"]
    assert peak["peak_gflops"] == max(peak["by_precision"].values())
    assert peak["by_precision"][peak["peak_precision"]] == peak["peak_gflops"]


def _row(name: str, family: str, b1_ms: float, b32_pairs_s: float) -> dict:
    lat = {"tokens": 18, "p50_ms": b1_ms, "p90_ms": b1_ms * 1.1, "p99_ms": b1_ms * 1.2, "pct_of_peak": 10.0}
    return {
        "contestant": name,
        "family": family,
        "precision": "fp32",
        "latency": {"short": lat},
        "throughput": {"bucketed": {"32": {"pairs_per_s": b32_pairs_s, "seconds": 1.0, "pct_of_peak": 5.0}}},
        "validation": {"accuracy": 0.9, "agreement_with_torch_fp32": 1.0},
        "job_pairs": 100,
        "peak_rss_mb": 100.0,
    }


def test_targets_compare_the_default_path_with_the_strongest_peer():
    from pairbert.benchmarks.report import _targets

    rows = [
        _row("torch-fp32", "torch", 10.0, 100.0),
        _row("openvino-default", "peer-openvino", 4.0, 300.0),
        _row("torch-int8", "torch", 8.0, 150.0),
        {**_row("pairbert-auto", "ort", 3.0, 390.0), "chosen": "int8"},
    ]
    text = "\n".join(_targets({"contestants": rows}))
    assert "chose int8" in text
    assert "| batch-32 built-in mix, pairs/s | 390.0 | 300.0 (openvino-default) | 1.30× |" in text
    assert "| batch-1 short p50, ms | 3.00 | 4.00 (openvino-default) | 0.75× the peer's time |" in text


def test_int8_batching_reports_each_batch_size_against_fp32(tiny_bundle, capsys):
    from pairbert.benchmarks.int8_batching import main
    from pairbert.runtime.bundle import read_manifest

    report = main([str(tiny_bundle), "--batch-sizes", "1,4,32"])
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(report))
    assert report["options"] in read_manifest(tiny_bundle).variants["int8"].notes
    assert set(report["by_batch_size"]) == {1, 4, 32}
    for figures in report["by_batch_size"].values():
        assert 0.0 <= figures["label_agreement"] <= 1.0 and figures["max_abs_prob_diff"] >= 0.0
    changes = report["between_batch_sizes"]
    assert (
        changes["max_abs_prob_change"] >= 0.0 and 0 <= changes["labels_differing_1_vs_32"] <= report["pairs"]
    )


def test_a_crashed_contestant_or_stage_still_writes_what_was_measured(
    tiny_bundle, tiny_checkpoint, tmp_path, monkeypatch
):
    """A worker killed by a native crash (seen: OpenVINO's "double free or corruption" on an AMX machine)
    fails the run, but what did run is written, and results.md names what failed and how."""
    from pairbert.benchmarks import footprint, suite
    from pairbert.benchmarks.processes import BenchmarkError, run_json

    def crash(*args, **kwargs):
        return run_json(["-c", "import os; os.abort()"])  # a real process, really killed by SIGABRT

    real_worker = suite._run_worker
    monkeypatch.setattr(
        suite, "contestants_for", lambda manifest: (["torch-fp32", "ort-fp32", "ort-int8"], [])
    )
    monkeypatch.setattr(
        suite, "_run_worker", lambda name, *a: crash() if name == "ort-int8" else real_worker(name, *a)
    )
    monkeypatch.setattr(footprint, "memory_growth", crash)
    out = tmp_path / "out"
    with pytest.raises(BenchmarkError, match=r"2 part\(s\) failed; what ran is in .*ort-int8: .*SIGABRT"):
        suite.run_suite(tiny_bundle, tiny_checkpoint, out, quick=True, threads=1)
    report = json.loads((out / "results.json").read_text())
    assert [c["contestant"] for c in report["contestants"]] == ["torch-fp32", "ort-fp32"]
    assert "memory_growth" not in report and report["cold_start"]["runtime"]["total_s"] > 0
    assert report["problems"][:2] == [
        "ort-int8: python -c killed by SIGABRT",
        "memory growth: python -c killed by SIGABRT",
    ]
    assert "ort-int8: python -c killed by SIGABRT" in (out / "results.md").read_text()


def test_variant_soak_compares_every_round_and_batch_size_with_the_reference(tiny_bundle, capsys):
    from pairbert.benchmarks.variant_soak import main

    argv = [
        str(tiny_bundle),
        "optimized",
        "--rounds",
        "2",
        "--batches",
        "1,8",
        "--pairs",
        "24",
        "--threads",
        "1",
    ]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(r["round"], r["batch"]) for r in report["runs"]] == [(0, 1), (0, 8), (1, 1), (1, 8)]
    assert report["predictions"] == 96 and report["passed"]
    assert report["worst_agreement"] == 1.0 and report["max_abs_prob_diff"] < 1e-4
    assert main([str(tiny_bundle), "no-such-variant", "--pairs", "4"]) == 1
    assert "variant_soak: error:" in capsys.readouterr().err


def test_the_long_batch_workload_gives_every_pair_its_own_question(tiny_tokenizer):
    """32 copies of one pair would let pairbert feed the question once (*One question, fed once*) while the
    bench counts 32 pairs' work: the workload's questions all differ, at one length under any tokenizer."""
    from pairbert.benchmarks.workloads import sized_batch, sized_pair
    from pairbert.runtime.tokenization import PairEncoder

    encoder = PairEncoder.from_file(tiny_tokenizer, 128).with_feed("first-segment").with_apart(True)
    pairs, tokens = sized_batch(encoder, 128, 32)
    assert len({q for q, _ in pairs}) == 32 and len({a for _, a in pairs}) == 1
    assert (pairs[0][0], pairs[0][1], tokens) == sized_pair(encoder, 128)
    qa, aq = encoder.tokenize([q for q, _ in pairs], [a for _, a in pairs])
    assert len({encoder.branch_lengths(x, y) for x, y in zip(qa, aq, strict=True)}) == 1
    short = PairEncoder.from_file(tiny_tokenizer, 8).with_feed("first-segment").with_apart(True)
    with pytest.raises(ValueError, match="not all distinct"):  # cut to one prefix: they would share it
        sized_batch(short, 8, 32)
