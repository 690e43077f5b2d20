"""Markdown table and PNG plots from a results dict."""

from __future__ import annotations

from pathlib import Path


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else "–"


def _best(rows: list[dict], value) -> tuple[float, str]:
    """(best value, contestant) over rows where `value(row)` is not None."""
    scored = [(v, c["contestant"]) for c in rows if (v := value(c)) is not None]
    return max(scored) if scored else (0.0, "–")


def _targets(r: dict) -> list[str]:
    """The CPU-speed targets: pairbert's default path against the strongest peer, in this run."""
    from .contestants import DEFAULT_PATH, PEERS

    rows = r["contestants"]
    default = next((c for c in rows if c["contestant"] == DEFAULT_PATH), None)
    peers = [c for c in rows if c["contestant"] in PEERS]
    if default is None or not peers:
        return []
    b32 = lambda c: max((m["32"]["pairs_per_s"] for m in c["throughput"].values() if "32" in m), default=None)  # noqa: E731
    mix, mix_peer = b32(default), _best(peers, b32)
    short_peer = _best(peers, lambda c: -c["latency"]["short"]["p50_ms"])
    lines = [
        "### Targets: the default path (`PairClassifier.load(bundle)`, chose "
        f"{default.get('chosen', '?')}) against the strongest peer",
        "",
        "| what | default path | best peer | ratio |",
        "|---|---|---|---|",
        f"| batch-32 built-in mix, pairs/s | {mix:.1f} | {mix_peer[0]:.1f} ({mix_peer[1]}) | "
        f"{_ratio(mix, mix_peer[0])} |",
        f"| batch-1 short p50, ms | {default['latency']['short']['p50_ms']:.2f} | {-short_peer[0]:.2f} "
        f"({short_peer[1]}) | {default['latency']['short']['p50_ms'] / -short_peer[0]:.2f}× the peer's "
        f"time |",
    ]
    if "batch32x128" in default:
        lines.append(
            f"| batch 32 × 128, % of the matrix peak | {default['batch32x128']['pct_of_peak']:.0f}% | "
            f"{_best(peers, lambda c: c.get('batch32x128', {}).get('pct_of_peak'))[0]:.0f}% | – |"
        )
    agree = default["validation"].get("agreement_with_torch_fp32")
    if agree is not None:
        lines.append(f"| labels agree with torch-fp32 (validation) | {agree:.1%} | – | – |")
    return lines + [""]


def markdown(r: dict) -> str:
    """The whole report: header and targets, then one section per question."""
    rows = r["contestants"]
    base = next(c for c in rows if c["contestant"] == "torch-fp32")
    lines = _header(r)
    for section in (_latency, _batch32, _kernel_floor, _throughput):
        lines += section(r, rows, base)
    lines += _footprint(r, rows)
    if r["problems"]:
        lines += ["", "**Problems:** " + "; ".join(r["problems"])]
    return "\n".join(lines) + "\n"


def _header(r: dict) -> list[str]:
    m = r["machine"]
    return [
        f"Machine: {m['cpu']}, {m['physical_cores']} physical cores, ISA {', '.join(m['isa'])}; "
        f"{r['threads']} threads for every contestant. Matrix peak on the model's GEMM shapes: "
        + ", ".join(f"{p} {v:.0f}" for p, v in r["gemm_peak"].get("by_precision", {}).items())
        + f' GFLOP/s; "% of peak" divides by the best, {r["gemm_peak"]["peak_gflops"]:.0f} '
        f"({r['gemm_peak'].get('peak_precision', 'fp32')})"
        + ("" if r["gemm_peak"].get("bf16_units", True) else "; this CPU has no bf16 matrix units")
        + ".",
        "",
        *_targets(r),
        *([f"Not run here: {'; '.join(r['skipped'])}.", ""] if r.get("skipped") else []),
    ]


def _tokens(latency: dict) -> str:
    """A workload's token count: the pair's, and what each branch was fed when the feed cut it (QA+AQ when
    each order is fed at its own length)."""
    fed = latency.get("fed_tokens", latency["tokens"])
    branches = latency.get("branch_tokens", [fed, fed])
    shown = f"{branches[0]}+{branches[1]}" if branches[0] != branches[1] else f"{fed}"
    return f"{latency['tokens']} tok" + (f", {shown} fed" if shown != str(latency["tokens"]) else "")


def _latency(r: dict, rows: list[dict], base: dict) -> list[str]:
    lines = [
        "### Batch-1 latency (end to end, tokenization included; p50 / p90 / p99 ms)",
        "",
        "| contestant | "
        + " | ".join(f"{w} ({_tokens(base['latency'][w])})" for w in base["latency"])
        + " | speed-up (short, p50) | % of peak (short) | accuracy | labels = torch-fp32 |",
        "|---|" + "---|" * (len(base["latency"]) + 4),
    ]
    for c in rows:
        cells = [
            f"{c['latency'][w]['p50_ms']:.2f} / {c['latency'][w]['p90_ms']:.2f} / "
            f"{c['latency'][w]['p99_ms']:.2f}"
            for w in base["latency"]
        ]
        short = c["latency"]["short"]
        lines.append(
            f"| {c['contestant']} | "
            + " | ".join(cells)
            + f" | {_ratio(base['latency']['short']['p50_ms'], short['p50_ms'])}"
            + f" | {short['pct_of_peak']:.0f}% | {c['validation']['accuracy']:.1%}"
            + f" | {_pct(c['validation'].get('agreement_with_torch_fp32'))} |"
        )
    return lines


def _batch32(r: dict, rows: list[dict], base: dict) -> list[str]:
    lines: list[str] = []
    if all("batch32x128" in c for c in rows):
        lines += [
            "",
            "### Batch 32 × 128 tokens (the GEMM-bound case)",
            "",
            "| contestant | p50 ms | GFLOP/s | % GEMM peak | vs torch-fp32 |",
            "|---|---|---|---|---|",
        ]
        for c in rows:
            b = c["batch32x128"]
            lines.append(
                f"| {c['contestant']} | {b['p50_ms']:.1f} | {b['gflops']:.0f} | {b['pct_of_peak']:.0f}% | "
                f"{_ratio(base['batch32x128']['p50_ms'], b['p50_ms'])} |"
            )
    return lines


def _floor_tokens(tokens) -> str:
    """The floor's token counts: one per branch (older results: one for both)."""
    if isinstance(tokens, list):
        return "+".join(map(str, tokens)) if len(set(tokens)) > 1 else str(tokens[0])
    return str(tokens)


def _kernel_floor(r: dict, rows: list[dict], base: dict) -> list[str]:
    lines: list[str] = []
    if "kernel_floor" in r:
        f = r["kernel_floor"]
        reached = {
            p: max(
                (
                    base["latency"]["short"]["p50_ms"] / c["latency"]["short"]["p50_ms"]
                    for c in rows
                    if c["family"] == "ort" and c["precision"] == p
                ),
                default=None,
            )
            for p in ("fp32", "int8")
        }
        reached_text = " and ".join(
            f"{v:.2f}×" if v is not None else f"no {p} contestant ran" for p, v in reached.items()
        )
        lines += [
            "",
            f"### The kernel floor (batch-1 short, {_floor_tokens(f['tokens'])} tokens fed)",
            "",
            f"ONNX Runtime needs {f['fp32_ms']:.2f} ms for the model's {f['matmuls']} weight GEMMs "
            f"alone in fp32 "
            f"({f['fp32_gflops']:.0f} GFLOP/s) and {f['int8_ms']:.2f} ms with every one dynamically int8 "
            f"({f['int8_gops']:.0f} GOP/s), nothing else in the graph. So no ORT graph of this model "
            f"can beat "
            f"torch-fp32 ({base['latency']['short']['p50_ms']:.2f} ms) by more than "
            f"{f['best_possible_speedup']['fp32']:.2f}× in fp32 or {f['best_possible_speedup']['int8']:.2f}× "
            f"in int8 on this machine; reached: {reached_text}.",
        ]
    ort_short = [c for c in rows if "tokenize_p50_ms" in c["latency"]["short"]]
    if ort_short:
        c = ort_short[-1]
        lines += [
            "",
            f"Tokenization share of batch-1 short latency ({c['contestant']}): "
            f"{c['latency']['short']['tokenize_p50_ms']:.3f} ms of {c['latency']['short']['p50_ms']:.2f} ms "
            f"({100 * c['latency']['short']['tokenize_p50_ms'] / c['latency']['short']['p50_ms']:.1f}%).",
        ]
    return lines


def _throughput(r: dict, rows: list[dict], base: dict) -> list[str]:
    lines: list[str] = []
    pad128 = base["throughput"].get("pad128", {})
    lines += [
        "",
        f"### Throughput on the built-in mix ({base['job_pairs']} pairs; pairs/s, and % of GEMM peak "
        "counting only useful (unpadded) FLOPs)",
        "",
        "| contestant | mode | "
        + " | ".join(f"batch {b}" for b in base["throughput"]["padded"])
        + " | vs torch pad-to-128 (same batch) |",
        "|---|---|" + "---|" * (len(base["throughput"]["padded"]) + 1),
    ]
    for c in rows:
        for mode, by_batch in c["throughput"].items():
            cells = [f"{t['pairs_per_s']:.1f} ({t['pct_of_peak']:.0f}%)" for t in by_batch.values()]
            vs = ", ".join(
                _ratio(t["pairs_per_s"], pad128[b]["pairs_per_s"]) for b, t in by_batch.items() if b in pad128
            )
            lines.append(f"| {c['contestant']} | {mode} | " + " | ".join(cells) + f" | {vs} |")
    return lines


def _footprint(r: dict, rows: list[dict]) -> list[str]:
    lines: list[str] = []
    cs, mg, inst = r.get("cold_start"), r.get("memory_growth"), r["installed"]
    lines += ["", "### Footprint", ""]
    if cs:
        lines.append(
            f"- Cold start, new process (import + load + first prediction, {cs['runtime']['variant']}): "
            f"{cs['runtime']['total_s']:.3f} s in-process, {cs['runtime']['process_wall_s']:.3f} s with "
            f"interpreter start-up; "
            f"torch: {cs['torch']['total_s']:.3f} s "
            f"({_ratio(cs['torch']['total_s'], cs['runtime']['total_s'])} slower)"
            + (
                f"; the first-ever load on this machine (auto times every candidate, then caches): "
                f"{r['cold_start_first_ever']['total_s']:.3f} s."
                if "cold_start_first_ever" in r
                else "."
            )
        )
    lines.append(
        "- Peak RSS per contestant process: "
        + ", ".join(f"{c['contestant']} {c['peak_rss_mb']:.0f} MB" for c in rows)
        + "."
    )
    if mg:
        lines.append(
            f"- RSS growth over {mg['predictions']} predictions of varied shapes after warm-up, first vs "
            f"second half of the "
            f"run: peak {mg['growth_pct']:+.2f}% ({mg['first_window_mb']['peak']:.0f} → "
            f"{mg['last_window_mb']['peak']:.0f} MB), "
            f"median {mg['median_growth_pct']:+.2f}% ({mg['first_window_mb']['median']:.0f} → "
            f"{mg['last_window_mb']['median']:.0f} MB); single readings swing between "
            f"{min(mg['first_window_mb']['low'], mg['last_window_mb']['low']):.0f} and "
            f"{max(mg['first_window_mb']['peak'], mg['last_window_mb']['peak']):.0f} MB."
        )
    lines += [
        "- Files on disk: " + ", ".join(f"{k} {v} MB" for k, v in r["disk_mb"].items()) + ".",
        f"- Installed size: runtime environment {inst['runtime_mb']} MB"
        + (
            f" ({inst['runtime_openvino_mb']} MB with the openvino extra)"
            if inst.get("runtime_openvino_mb")
            else ""
        )
        + f" vs torch environment {inst['torch_mb']} MB.",
    ]
    return lines


def plots(r: dict, out: Path) -> list[Path]:
    """latency.png: p50 bars with p90/p99 whiskers and labelled values per workload; throughput.png: pairs/s
    against batch size (every measured batch size as a tick), legends outside the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return [_latency_plot(plt, r, out / "latency.png"), _throughput_plot(plt, r, out / "throughput.png")]


def _latency_plot(plt, r: dict, path: Path) -> Path:
    rows = r["contestants"]
    workloads = list(rows[0]["latency"])
    fig, axes = plt.subplots(
        1, len(workloads), figsize=(4.2 * len(workloads) + 1, 0.45 * len(rows) + 1.8), squeeze=False
    )
    for ax, w in zip(axes[0], workloads, strict=True):
        names = [c["contestant"] for c in rows]
        p50 = [c["latency"][w]["p50_ms"] for c in rows]
        p90 = [c["latency"][w]["p90_ms"] for c in rows]
        p99 = [c["latency"][w]["p99_ms"] for c in rows]
        ys = range(len(rows))
        ax.barh(ys, p50, color=["#4c72b0" if c["family"] in ("ort", "openvino") else "#999999" for c in rows])
        ax.errorbar(p90, ys, fmt="|", color="black", markersize=8, label="p90")
        ax.errorbar(p99, ys, fmt="x", color="#c44e52", markersize=5, label="p99")
        for y, (a, b, c) in enumerate(zip(p50, p90, p99, strict=True)):
            ax.text(max(c, b) * 1.02, y, f"{a:.1f} / {b:.1f} / {c:.1f}", va="center", fontsize=7)
        ax.set_yticks(list(ys), names if ax is axes[0][0] else [""] * len(rows), fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, max(p99) * 1.6)
        ax.set_xlabel("ms (p50 bar, p90 |, p99 x; lower is better)", fontsize=8)
        ax.set_title(f"{w} ({_tokens(rows[0]['latency'][w])})", fontsize=9)
    fig.suptitle(
        f"Batch-1 latency, end to end, {r['threads']} threads, {r['machine']['cpu']} "
        "(blue: pairbert, grey: peers)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _throughput_plot(plt, r: dict, path: Path) -> Path:
    rows = r["contestants"]
    fig, ax = plt.subplots(figsize=(9, 4.8))
    batches: set[int] = set()
    lines = [(c, mode, by_batch) for c in rows for mode, by_batch in c["throughput"].items()]
    colours = plt.get_cmap("tab20" if len(lines) > 10 else "tab10")  # one colour per line, up to 20
    for i, (c, mode, by_batch) in enumerate(lines):
        xs = [int(b) for b in by_batch]
        batches.update(xs)
        ax.plot(
            xs,
            [t["pairs_per_s"] for t in by_batch.values()],
            marker="o",
            color=colours(i % colours.N),
            linestyle="-" if c["family"] in ("ort", "openvino") else "--",
            label=f"{c['contestant']} ({mode})",
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(batches), [str(b) for b in sorted(batches)])
    ax.minorticks_off()
    ax.set_xlabel("batch size")
    ax.set_ylabel("pairs per second (higher is better)")
    ax.set_title(
        f"Throughput on the built-in mix ({rows[0]['job_pairs']} pairs), solid: pairbert, dashed: peers",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
