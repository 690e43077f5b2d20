"""Numbers users read: precision/recall/F1 on hand-computed cases, the benchmark's markdown report, and
the footprint programs (real modules run in fresh processes)."""

from __future__ import annotations

import pytest

from pairbert.benchmarks.memory_growth import summary
from pairbert.benchmarks.processes import run_json
from pairbert.benchmarks.report import markdown
from pairbert.training.metrics import classification_metrics, format_confusion


def test_metrics_on_a_hand_computed_case():
    # true:  1 1 1 0 0 0 1 0 ; predicted: 1 0 1 1 0 0 1 0  → tp 3, fn 1, fp 1, tn 3
    m = classification_metrics([1, 1, 1, 0, 0, 0, 1, 0], [1, 0, 1, 1, 0, 0, 1, 0])
    assert m["confusion_matrix"] == [[3, 1], [1, 3]]
    assert m["precision"] == pytest.approx(3 / 4) and m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(0.75) and m["accuracy"] == pytest.approx(6 / 8) and m["count"] == 8


def test_metrics_with_unequal_precision_and_recall_and_edge_cases():
    # tp 1, fp 3, fn 0, tn 1: precision 1/4, recall 1, F1 = 2·(1/4)·1 / (1/4 + 1) = 0.4
    m = classification_metrics([1, 0, 0, 0, 0], [1, 1, 1, 1, 0])
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((0.25, 1.0, 0.4))
    none_predicted = classification_metrics([1, 1, 0], [0, 0, 0])
    assert (
        none_predicted["precision"] == 0.0 and none_predicted["recall"] == 0.0 and none_predicted["f1"] == 0.0
    )
    assert classification_metrics([], [])["accuracy"] == 0.0
    unlabeled = classification_metrics([1, -1, 0], [1, 1, 0])  # -1: no label, not counted
    assert unlabeled["count"] == 2 and unlabeled["accuracy"] == 1.0
    assert format_confusion([[3, 1], [2, 4]]).splitlines()[1].split() == ["true", "0", "3", "1"]


def _row(name: str, family: str, precision: str, p50: float, pairs_per_s: float, accuracy: float) -> dict:
    lat = {"tokens": 18, "p50_ms": p50, "p90_ms": p50 + 1, "p99_ms": p50 + 2, "pct_of_peak": 100 / p50}
    return {
        "contestant": name,
        "family": family,
        "precision": precision,
        "latency": {"short": lat},
        "batch32x128": {"p50_ms": 40 * p50, "gflops": 500 / p50, "pct_of_peak": 1000 / p50},
        "throughput": {"padded": {"32": {"pairs_per_s": pairs_per_s, "pct_of_peak": pairs_per_s / 10}}},
        "job_pairs": 128,
        "validation": {"accuracy": accuracy},
        "peak_rss_mb": 300.0 if family == "ort" else 900.0,
    }


def synthetic_results() -> dict:
    growth = {
        "predictions": 500,
        "growth_pct": 0.5,
        "median_growth_pct": -0.25,
        "first_window_mb": {"peak": 200.0, "median": 190.0, "low": 180.0},
        "last_window_mb": {"peak": 201.0, "median": 189.5, "low": 181.0},
    }
    torch_row = _row("torch-fp32", "torch", "fp32", 10.0, 100.0, 0.9)
    torch_row["throughput"]["pad128"] = {"32": {"pairs_per_s": 80.0, "pct_of_peak": 8.0}}
    return {
        "machine": {"cpu": "Test CPU 9000", "physical_cores": 4, "isa": ["avx2", "fma"]},
        "threads": 4,
        "gemm_peak": {
            "peak_gflops": 250.0,
            "peak_precision": "fp32",
            "by_precision": {"fp32": 250.0, "int8": 240.0},
        },
        "contestants": [torch_row, _row("ort-int8", "ort", "int8", 4.0, 320.0, 0.875)],
        "cold_start": {
            "runtime": {"variant": "int8", "total_s": 0.25, "process_wall_s": 0.5},
            "torch": {"total_s": 2.5},
        },
        "memory_growth": growth,
        "disk_mb": {"ort-int8": 23.4, "torch checkpoint": 87.0},
        "installed": {"runtime_mb": 80.5, "torch_mb": 1200.0},
        "problems": ["ort-int8: something odd"],
    }


def test_report_renders_rows_and_numbers():
    md = markdown(synthetic_results())
    lines = md.splitlines()
    assert lines[0].startswith("Machine: Test CPU 9000, 4 physical cores, ISA avx2, fma; 4 threads")
    assert "fp32 250, int8 240 GFLOP/s" in lines[0] and "divides by the best, 250 (fp32)" in lines[0]
    assert "| torch-fp32 | 10.00 / 11.00 / 12.00 | 1.00× | 10% | 90.0% | – |" in lines
    assert "| ort-int8 | 4.00 / 5.00 / 6.00 | 2.50× | 25% | 87.5% | – |" in lines
    assert "| ort-int8 | 160.0 | 125 | 250% | 2.50× |" in lines  # batch 32 × 128
    assert "| torch-fp32 | pad128 | 80.0 (8%) | 1.00× |" in lines
    assert "| ort-int8 | padded | 320.0 (32%) | 4.00× |" in lines  # vs torch padded to 128 at the same batch
    assert "torch: 2.500 s (10.00× slower)" in md
    assert "peak +0.50% (200 → 201 MB), median -0.25% (190 → 190 MB)" in md
    assert "ort-int8 23.4 MB, torch checkpoint 87.0 MB" in md and "runtime environment 80.5 MB" in md
    assert lines[-1] == "**Problems:** ort-int8: something odd"


def test_memory_growth_summary_compares_halves():
    samples = [(n, 100.0 + (n > 50) * 10 + (n % 3)) for n in range(1, 101)]
    s = summary(samples, 100)
    assert s["first_window_mb"]["peak"] == 102.0 and s["last_window_mb"]["peak"] == 112.0
    assert s["growth_pct"] == pytest.approx(100 * 10 / 102)
    assert s["predictions"] == 100 and s["window_predictions"] == 50


@pytest.mark.parametrize("module", ["cold_start_runtime", "memory_growth"])
def test_footprint_programs_run_as_modules(tiny_bundle, module):
    args = {
        "cold_start_runtime": [str(tiny_bundle), "fp32", "1"],
        "memory_growth": [str(tiny_bundle), "fp32", "1", "40", "10"],
    }[module]
    result = run_json(["-m", f"pairbert.benchmarks.{module}", *args], timeout=300)
    if module == "cold_start_runtime":
        assert result["variant"] == "fp32" and result["torch_loaded"] is False
        assert 0 < result["import_load_s"] < result["total_s"]
    else:
        assert result["predictions"] >= 40 and result["first_window_mb"]["peak"] > 0


def test_kernel_floor_says_which_precision_had_no_contestant():
    r = synthetic_results()
    r["kernel_floor"] = {
        "tokens": 18,
        "matmuls": 48,
        "fp32_ms": 2.0,
        "fp32_gflops": 100.0,
        "int8_ms": 1.0,
        "int8_gops": 200.0,
        "best_possible_speedup": {"fp32": 5.0, "int8": 10.0},
    }
    md = markdown(r)
    assert "reached: no fp32 contestant ran and 2.50×." in md  # only ort-int8 ran (10 ms / 4 ms)
    r["contestants"] = [c for c in r["contestants"] if c["contestant"] != "ort-int8"]
    assert "reached: no fp32 contestant ran and no int8 contestant ran." in markdown(r)
