"""Load benchmark of `pairbert serve` on loopback: single-pair requests from 1, 8, 32, 128 concurrent
clients for a bounded time each, batching on and off, against the in-process predictor on the same pairs;
and the server's RSS when idle and after 20,000 requests.

    pairbert bench-serve BUNDLE [--clients 1,8,32,128] [--seconds 10] [--out runs/bench-serve]
    python -m pairbert.benchmarks.serve_load BUNDLE ...        (the same)

Every server is a `pairbert serve` subprocess on 127.0.0.1 with a free port; every loop stops by time and
by count. The clients are asyncio keep-alive connections in this process (cheap, but they share the CPU
with the server: on a small machine that is part of what is measured)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass

import numpy as np

from .processes import BenchmarkError, output_folder, run_json, sigterm_unwinds

log = logging.getLogger(__name__)

HOST = "127.0.0.1"  # loopback only, never anything else
REQUEST_TIMEOUT_S = 30.0
MAX_REQUESTS_PER_RUN = 1_000_000  # the count bound beside the time bound
SERVE_MAIN = "import sys; from pairbert.cli import main; sys.exit(main(sys.argv[1:]))"
TARGETS = {
    "throughput_vs_inprocess_b32": 0.80,
    "batching_speedup_at_32": 2.0,
    "p50_overhead_ms_at_1": 1.5,
    "rss_growth_pct": 5.0,
}


@dataclass(frozen=True)
class LoadSettings:
    bundle: str
    out: str = "runs/bench-serve"
    clients: tuple[int, ...] = (1, 8, 32, 128)
    seconds: float = 10.0
    threads: int | None = None
    rss_requests: int = 20_000
    pairs: int = 512  # distinct pairs cycled through by the clients (from the built-in data)
    overhead_rounds: int = 10  # 1-client overhead: rounds alternating in-process batch-1 and the server
    overhead_requests: int = 30  # requests per side per round


def workload(n: int) -> list[tuple[str, str]]:
    from .workloads import mixed_job

    return mixed_job(n)


def percentiles(latencies_s: list[float]) -> dict:
    if not latencies_s:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None}
    ms = np.asarray(latencies_s) * 1000
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 3) for q in (50, 90, 99)}


def inprocess(bundle: str, threads: int | None, seconds: float, n_pairs: int) -> dict:
    """Batch-1 latency and batch-32 throughput of the predictor in this process (run in its own process)."""
    from pairbert.runtime.predictor import PairClassifier

    clf = PairClassifier.load(bundle, threads=threads)
    pairs = workload(n_pairs)
    clf.predict(pairs[:32], batch_size=32)
    lat, i, stop = [], 0, time.perf_counter() + seconds
    while time.perf_counter() < stop and i < MAX_REQUESTS_PER_RUN:
        t0 = time.perf_counter()
        clf.predict([pairs[i % len(pairs)]], batch_size=1)
        lat.append(time.perf_counter() - t0)
        i += 1
    done, i, start = 0, 0, time.perf_counter()
    stop = start + seconds
    while time.perf_counter() < stop and i < MAX_REQUESTS_PER_RUN:
        chunk = [pairs[(i * 32 + k) % len(pairs)] for k in range(32)]
        clf.predict(chunk, batch_size=32)
        done += 32
        i += 1
    elapsed = time.perf_counter() - start
    return {
        "variant": clf.variant,
        "threads": clf.threads,
        "batch1": percentiles(lat),
        "batch32_pairs_per_s": round(done / elapsed, 1),
    }


class ServerProcess:
    """`pairbert serve BUNDLE --port 0 ...` as a subprocess; knows its port and pid; stops with SIGTERM."""

    def __init__(self, bundle: str, *extra: str, ready_timeout: float = 120.0):
        cmd = [sys.executable, "-c", SERVE_MAIN, "serve", bundle, "--host", HOST, "--port", "0", *extra]
        self.stderr = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty server never blocks
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        line = self.proc.stdout.readline()  # the first line names the port (or the process died)
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not match:
            self.proc.wait(30)
            raise BenchmarkError(f"pairbert serve did not start: {line}{self.errors()}")
        self.port = int(match.group(1))
        self.url = f"http://{HOST}:{self.port}"
        deadline = time.monotonic() + ready_timeout
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BenchmarkError(f"pairbert serve never became ready: {self.errors()}")
            time.sleep(0.1)

    def errors(self, last: int = 2000) -> str:
        """The server's standard error so far (its last `last` characters)."""
        self.stderr.seek(0)
        return self.stderr.read()[-last:]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/ready", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise BenchmarkError("no VmRSS for the server")

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _request_bytes(port: int, pair: tuple[str, str]) -> bytes:
    body = json.dumps({"pairs": [list(pair)]}).encode()
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return status, await reader.readexactly(length)


async def _client(
    port: int,
    requests: list[bytes],
    offset: int,
    stop_at: float,
    budget: list[int],
    latencies: list[float],
    statuses: dict,
) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        i = offset
        while time.perf_counter() < stop_at and budget[0] > 0:
            budget[0] -= 1
            t0 = time.perf_counter()
            writer.write(requests[i % len(requests)])
            status, _ = await asyncio.wait_for(_read_response(reader), REQUEST_TIMEOUT_S)
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
            i += 1
    finally:
        writer.close()


async def _load(
    port: int, pairs: list[tuple[str, str]], clients: int, seconds: float, max_requests: int
) -> dict:
    requests = [_request_bytes(port, p) for p in pairs]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    budget = [max_requests]
    start = time.perf_counter()
    stop_at = start + seconds
    await asyncio.gather(
        *(_client(port, requests, k * 7, stop_at, budget, latencies, statuses) for k in range(clients))
    )
    elapsed = time.perf_counter() - start
    return {
        "clients": clients,
        "requests": len(latencies),
        "seconds": round(elapsed, 2),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        **percentiles(latencies),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


def load(port: int, pairs, clients: int, seconds: float, max_requests: int = MAX_REQUESTS_PER_RUN) -> dict:
    return asyncio.run(_load(port, pairs, clients, seconds, max_requests))


def interleaved_overhead(port: int, settings: LoadSettings, pairs) -> dict:
    """The 1-client cost of the server: its p50 minus the in-process batch-1 p50, measured in alternating
    rounds (in-process, server, server, in-process, ...) so that whatever else runs on the machine hits
    both sides alike; the median of the per-round differences. The predictor runs in this process, loaded
    as the server loads it, while the server idles."""
    from pairbert.runtime.predictor import PairClassifier

    n = settings.overhead_requests
    rounds: list[dict] = []
    with PairClassifier.load(settings.bundle, threads=settings.threads) as clf:

        def inproc() -> float:
            lat = []
            for i in range(n):
                t0 = time.perf_counter()
                clf.predict([pairs[i % len(pairs)]], batch_size=1)
                lat.append(time.perf_counter() - t0)
            return percentiles(lat)["p50_ms"]

        inproc()
        load(port, pairs, 1, seconds=60, max_requests=n)  # warm both sides
        for r in range(settings.overhead_rounds):
            first_inproc = r % 2 == 0
            a = inproc() if first_inproc else load(port, pairs, 1, 60, n)["p50_ms"]
            b = load(port, pairs, 1, 60, n)["p50_ms"] if first_inproc else inproc()
            server_ms, inproc_ms = (b, a) if first_inproc else (a, b)
            rounds.append({"inprocess_p50_ms": inproc_ms, "server_p50_ms": server_ms})
    diffs = [x["server_p50_ms"] - x["inprocess_p50_ms"] for x in rounds]
    return {
        "rounds": rounds,
        "requests_per_round": n,
        "inprocess_p50_ms": round(float(np.median([x["inprocess_p50_ms"] for x in rounds])), 3),
        "server_p50_ms": round(float(np.median([x["server_p50_ms"] for x in rounds])), 3),
        "overhead_ms": round(float(np.median(diffs)), 3),
    }


def measure_server(settings: LoadSettings, pairs, batching: bool, rss: bool) -> dict:
    from pairbert.runtime.devices import physical_cores
    from pairbert.serving.settings import ServeSettings

    threads = settings.threads or physical_cores()
    extra = ["--threads", str(threads)] + ([] if batching else ["--no-batching"])
    # the server's connection cap must admit every client (and the readiness/RSS probes beside them)
    extra += ["--max-connections", str(max(ServeSettings.max_connections, max(settings.clients) + 8))]
    server = ServerProcess(settings.bundle, *extra)
    out: dict = {"batching": batching, "threads": threads, "runs": []}
    try:
        if rss:  # idle (ready, no request yet), warm (after the first 5 %), after all of them
            warm = max(1, settings.rss_requests // 20)
            out["rss_idle_mb"] = round(server.rss_mb(), 1)
            first = load(server.port, pairs, 32, seconds=600, max_requests=warm)
            out["rss_warm_mb"] = round(server.rss_mb(), 1)
            rest = load(server.port, pairs, 32, seconds=1200, max_requests=settings.rss_requests - warm)
            out["rss_after_mb"] = round(server.rss_mb(), 1)
            out["rss_requests"] = first["requests"] + rest["requests"]
            out["rss_statuses"] = {
                k: first["statuses"].get(k, 0) + rest["statuses"].get(k, 0)
                for k in {*first["statuses"], *rest["statuses"]}
            }
            out["rss_growth_pct"] = round(100 * (out["rss_after_mb"] / out["rss_idle_mb"] - 1), 2)
            out["rss_growth_from_warm_pct"] = round(100 * (out["rss_after_mb"] / out["rss_warm_mb"] - 1), 2)
            print(
                f"  RSS idle {out['rss_idle_mb']} MB, after {warm} requests {out['rss_warm_mb']} MB, after "
                f"{out['rss_requests']} {out['rss_after_mb']} MB (+{out['rss_growth_pct']} %)",
                flush=True,
            )
        if batching and 1 in settings.clients and settings.overhead_rounds > 0:
            over = out["overhead_at_1"] = interleaved_overhead(server.port, settings, pairs)
            print(
                f"  1 client, alternating with in-process batch-1 ({settings.overhead_rounds} rounds): "
                f"server p50 {over['server_p50_ms']} ms, in-process {over['inprocess_p50_ms']} ms, "
                f"overhead {over['overhead_ms']} ms",
                flush=True,
            )
        for clients in settings.clients:
            load(server.port, pairs, clients, seconds=min(1.0, settings.seconds))  # warm the connections
            run = load(server.port, pairs, clients, settings.seconds)
            log.info("batching %s, %d clients: %s", batching, clients, run)
            print(
                f"  batching {'on ' if batching else 'off'} {clients:>4} clients: "
                f"{run['requests_per_s']:>8} req/s"
                f"  p50 {run['p50_ms']} ms  p90 {run['p90_ms']} ms  p99 {run['p99_ms']} ms",
                flush=True,
            )
            out["runs"].append(run)
    finally:
        out["exit_code"] = server.stop()
    return out


def verdicts(report: dict) -> dict:
    """Each issue target beside its measured value (None where the run did not include what it needs)."""
    on = {r["clients"]: r for r in report["server_batching_on"]["runs"]}
    off = {r["clients"]: r for r in report["server_batching_off"]["runs"]}
    inproc = report["inprocess"]
    out = {}
    if 32 in on:
        out["throughput_vs_inprocess_b32"] = round(
            on[32]["requests_per_s"] / inproc["batch32_pairs_per_s"], 3
        )
    if 32 in on and 32 in off:
        out["batching_speedup_at_32"] = round(on[32]["requests_per_s"] / off[32]["requests_per_s"], 2)
    interleaved = report["server_batching_on"].get("overhead_at_1")
    sequential = round(on[1]["p50_ms"] - inproc["batch1"]["p50_ms"], 3) if 1 in on else None
    if interleaved is not None:  # the robust figure (alternating rounds); the sequential one as context
        out["p50_overhead_ms_at_1"] = interleaved["overhead_ms"]
    elif sequential is not None:
        out["p50_overhead_ms_at_1"] = sequential
    # The ceiling for on/off: how much batching itself speeds this model up here (batch-32 / batch-1 pairs/s).
    context = {
        "inprocess_batch32_over_batch1": round(
            inproc["batch32_pairs_per_s"] * inproc["batch1"]["p50_ms"] / 1000, 2
        )
    }
    if sequential is not None:
        context["p50_overhead_ms_at_1_sequential"] = sequential
    if "rss_growth_pct" in report["server_batching_on"]:
        out["rss_growth_pct"] = report["server_batching_on"]["rss_growth_pct"]
    met = {
        k: (v <= TARGETS[k] if k in ("p50_overhead_ms_at_1", "rss_growth_pct") else v >= TARGETS[k])
        for k, v in out.items()
    }
    return {"measured": out, "targets": TARGETS, "met": met, "context": context}


SPARE_FILES = 64  # files a process needs besides one socket per client (libraries, logs, the bundle)


def _check_client_count(clients: int) -> None:
    """Every client is one socket here and one in the server: past the open-file limit they would fail
    mid-run with a client-side error, so say so before anything starts."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and clients + SPARE_FILES > soft:
        raise BenchmarkError(
            f"--clients {clients}: a process here may open {soft} files (ulimit -n) and each client needs a "
            f"socket in this process and in the server; use at most {soft - SPARE_FILES} clients, or raise "
            "the limit (ulimit -n)"
        )


def run_load_benchmark(settings: LoadSettings) -> dict:
    with sigterm_unwinds():  # a SIGTERM stops the server child too
        return _run_load_benchmark(settings)


def _run_load_benchmark(settings: LoadSettings) -> dict:
    from .machine import cpu_description, library_versions

    _check_client_count(max(settings.clients))
    out = output_folder(settings.out)
    pairs = workload(settings.pairs)
    print(
        f"bench-serve {settings.bundle}: clients {list(settings.clients)}, "
        f"{settings.seconds:g} s each → {out}",
        flush=True,
    )
    inproc = run_json(
        [
            "-m",
            __name__,
            "--inprocess",
            settings.bundle,
            "--seconds",
            str(settings.seconds),
            "--pairs",
            str(settings.pairs),
        ]
        + (["--threads", str(settings.threads)] if settings.threads else [])
    )
    print(
        f"  in-process: batch-1 p50 {inproc['batch1']['p50_ms']} ms, "
        f"batch-32 {inproc['batch32_pairs_per_s']} pairs/s",
        flush=True,
    )
    report = {
        "settings": asdict(settings),
        "machine": cpu_description(),
        "versions": library_versions(),
        "inprocess": inproc,
        "server_batching_on": measure_server(settings, pairs, batching=True, rss=settings.rss_requests > 0),
        "server_batching_off": measure_server(settings, pairs, batching=False, rss=False),
    }
    report["verdicts"] = verdicts(report)
    (out / "serve_load.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report["verdicts"], indent=2))
    for key in ("server_batching_on", "server_batching_off"):
        if report[key]["exit_code"] != 0:
            raise BenchmarkError(f"{key}: the server exited {report[key]['exit_code']} on SIGTERM, not 0")
    return report


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m pairbert.benchmarks.serve_load", description=__doc__)
    p.add_argument("bundle")
    p.add_argument("--out", default="runs/bench-serve")
    p.add_argument("--clients", default="1,8,32,128")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int)
    p.add_argument("--rss-requests", type=int, default=20_000)
    p.add_argument("--pairs", type=int, default=512)
    p.add_argument("--overhead-rounds", type=int, default=10, help="0: no interleaved 1-client overhead")
    p.add_argument("--inprocess", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.inprocess:
        print(json.dumps(inprocess(a.bundle, a.threads, a.seconds, a.pairs)))
        return 0
    run_load_benchmark(
        LoadSettings(
            a.bundle,
            a.out,
            tuple(int(c) for c in a.clients.split(",")),
            a.seconds,
            a.threads,
            a.rss_requests,
            a.pairs,
            a.overhead_rounds,
        )
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
