"""Markdown table and PNG plots from a results dict."""

from __future__ import annotations

from pathlib import Path


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else "–"


def markdown(r: dict) -> str:
    m = r["machine"]
    rows = r["contestants"]
    base = next(c for c in rows if c["contestant"] == "torch-fp32")
    lines = [
        f"Machine: {m['cpu']}, {m['physical_cores']} physical cores, ISA {', '.join(m['isa'])}; "
        f"{r['threads']} threads for every contestant. GEMM peak (ORT MatMul, model shapes): "
        f"{r['gemm_peak']['peak_gflops']:.1f} GFLOP/s.",
        "",
        "### Batch-1 latency (end to end, tokenization included; p50 / p90 / p99 ms)",
        "",
        "| contestant | " + " | ".join(f"{w} ({base['latency'][w]['tokens']} tok)" for w in base["latency"])
        + " | speed-up (short, p50) | % GEMM peak (short) | accuracy |",
        "|---|" + "---|" * (len(base["latency"]) + 3),
    ]
    for c in rows:
        cells = [f"{c['latency'][w]['p50_ms']:.2f} / {c['latency'][w]['p90_ms']:.2f} / {c['latency'][w]['p99_ms']:.2f}"
                 for w in base["latency"]]
        short = c["latency"]["short"]
        lines.append(f"| {c['contestant']} | " + " | ".join(cells)
                     + f" | {_ratio(base['latency']['short']['p50_ms'], short['p50_ms'])}"
                     + f" | {short['pct_of_peak']:.0f}% | {c['validation']['accuracy']:.1%} |")
    if all("batch32x128" in c for c in rows):
        lines += ["", "### Batch 32 × 128 tokens (the GEMM-bound case)", "",
                  "| contestant | p50 ms | GFLOP/s | % GEMM peak | vs torch-fp32 |", "|---|---|---|---|---|"]
        for c in rows:
            b = c["batch32x128"]
            lines.append(f"| {c['contestant']} | {b['p50_ms']:.1f} | {b['gflops']:.0f} | {b['pct_of_peak']:.0f}% | "
                         f"{_ratio(base['batch32x128']['p50_ms'], b['p50_ms'])} |")
    if "kernel_floor" in r:
        f = r["kernel_floor"]
        reached = {p: max((base["latency"]["short"]["p50_ms"] / c["latency"]["short"]["p50_ms"]
                           for c in rows if c["family"] == "ort" and c["precision"] == p), default=0)
                   for p in ("fp32", "int8")}
        lines += ["", f"### The kernel floor (batch-1 short, {f['tokens']} tokens)", "",
                  f"ONNX Runtime needs {f['fp32_ms']:.2f} ms for the model's {f['matmuls']} weight GEMMs alone in fp32 "
                  f"({f['fp32_gflops']:.0f} GFLOP/s) and {f['int8_ms']:.2f} ms with every one dynamically int8 "
                  f"({f['int8_gops']:.0f} GOP/s), nothing else in the graph. So no ORT graph of this model can beat "
                  f"torch-fp32 ({base['latency']['short']['p50_ms']:.2f} ms) by more than "
                  f"{f['best_possible_speedup']['fp32']:.2f}× in fp32 or {f['best_possible_speedup']['int8']:.2f}× "
                  f"in int8 on this machine; reached: {reached['fp32']:.2f}× and {reached['int8']:.2f}×."]
    ort_short = [c for c in rows if "tokenize_p50_ms" in c["latency"]["short"]]
    if ort_short:
        c = ort_short[-1]
        lines += ["", f"Tokenization share of batch-1 short latency ({c['contestant']}): "
                  f"{c['latency']['short']['tokenize_p50_ms']:.3f} ms of {c['latency']['short']['p50_ms']:.2f} ms "
                  f"({100 * c['latency']['short']['tokenize_p50_ms'] / c['latency']['short']['p50_ms']:.1f}%)."]
    pad128 = base["throughput"].get("pad128", {})
    lines += ["", f"### Throughput on the built-in mix ({base['job_pairs']} pairs; pairs/s, and % of GEMM peak "
              "counting only useful (unpadded) FLOPs)", "",
              "| contestant | mode | " + " | ".join(f"batch {b}" for b in base["throughput"]["padded"])
              + " | vs torch pad-to-128 (same batch) |", "|---|---|" + "---|" * (len(base["throughput"]["padded"]) + 1)]
    for c in rows:
        for mode, by_batch in c["throughput"].items():
            cells = [f"{t['pairs_per_s']:.1f} ({t['pct_of_peak']:.0f}%)" for t in by_batch.values()]
            vs = ", ".join(_ratio(t["pairs_per_s"], pad128[b]["pairs_per_s"]) for b, t in by_batch.items() if b in pad128)
            lines.append(f"| {c['contestant']} | {mode} | " + " | ".join(cells) + f" | {vs} |")
    cs, mg, inst = r["cold_start"], r["memory_growth"], r["installed"]
    lines += [
        "", "### Footprint", "",
        f"- Cold start, new process (import + load + first prediction, {cs['runtime']['variant']}): "
        f"{cs['runtime']['total_s']:.3f} s in-process, {cs['runtime']['process_wall_s']:.3f} s with interpreter start-up; "
        f"torch: {cs['torch']['total_s']:.3f} s ({_ratio(cs['torch']['total_s'], cs['runtime']['total_s'])} slower).",
        "- Peak RSS per contestant process: " + ", ".join(f"{c['contestant']} {c['peak_rss_mb']:.0f} MB" for c in rows) + ".",
        f"- RSS growth over {mg['predictions']} predictions of varied shapes after warm-up, first vs second half of the "
        f"run: peak {mg['growth_pct']:+.2f}% ({mg['first_window_mb']['peak']:.0f} → {mg['last_window_mb']['peak']:.0f} MB), "
        f"median {mg['median_growth_pct']:+.2f}% ({mg['first_window_mb']['median']:.0f} → "
        f"{mg['last_window_mb']['median']:.0f} MB); single readings swing between "
        f"{min(mg['first_window_mb']['low'], mg['last_window_mb']['low']):.0f} and "
        f"{max(mg['first_window_mb']['peak'], mg['last_window_mb']['peak']):.0f} MB.",
        "- Files on disk: " + ", ".join(f"{k} {v} MB" for k, v in r["disk_mb"].items()) + ".",
        f"- Installed size: runtime environment {inst['runtime_mb']} MB vs torch environment {inst['torch_mb']} MB.",
    ]
    if r["problems"]:
        lines += ["", "**Problems:** " + "; ".join(r["problems"])]
    return "\n".join(lines) + "\n"


def plots(r: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = r["contestants"]
    made = []
    workloads = list(rows[0]["latency"])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(rows)
    for i, c in enumerate(rows):
        xs = [j + i * width for j in range(len(workloads))]
        ax.bar(xs, [c["latency"][w]["p50_ms"] for w in workloads], width, label=c["contestant"])
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(workloads))],
                  [f"{w}\n({rows[0]['latency'][w]['tokens']} tokens)" for w in workloads])
    ax.set_ylabel("batch-1 latency p50 (ms, lower is better)")
    made.append(_finish(fig, ax, f"Batch-1 latency, {r['threads']} threads, {r['machine']['cpu']}", out / "latency.png"))

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for c in rows:
        for mode, by_batch in c["throughput"].items():
            batches = [int(b) for b in by_batch]
            ax.plot(batches, [t["pairs_per_s"] for t in by_batch.values()], marker="o",
                    linestyle="-" if c["family"] == "ort" else "--", label=f"{c['contestant']} ({mode})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("pairs per second (higher is better)")
    made.append(_finish(fig, ax, f"Throughput on the built-in mix ({rows[0]['job_pairs']} pairs)", out / "throughput.png"))
    return made


def _finish(fig, ax, title: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
