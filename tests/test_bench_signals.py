"""A benchmark stopped with SIGTERM (timeout, a cancelled CI job) stops the server it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="needs pairbert[serve]")


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_sigterm_to_bench_serve_stops_its_server(tiny_bundle, tmp_path):
    argv = ["bench-serve", str(tiny_bundle), "--clients", "1", "--seconds", "8", "--rss-requests", "0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pairbert", *argv, "--out", str(tmp_path / "out")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    server = None
    deadline = time.monotonic() + 120
    while server is None and time.monotonic() < deadline and proc.poll() is None:
        for kid in _children(proc.pid):
            if "serve" in Path(f"/proc/{kid}/cmdline").read_bytes().decode(errors="replace").split("\0"):
                server = kid
        time.sleep(0.2)
    assert server is not None, "bench-serve never started its server"
    time.sleep(1)  # let it get going
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    deadline = time.monotonic() + 60
    while _alive(server) and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = _alive(server)
    if alive:
        os.kill(server, signal.SIGKILL)
    assert not alive, "the server outlived bench-serve"
    assert "Traceback" not in proc.stderr.read()


def test_bench_serve_refuses_more_clients_than_open_files_allow(tiny_bundle, tmp_path):
    """Each client is a socket in the benchmark and one in the server: past `ulimit -n` the run would fail
    midway with a client-side error, so it stops before starting anything and says what to change."""
    import resource

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    out = tmp_path / "bench"
    argv = ["bench-serve", str(tiny_bundle), "--clients", "1,500", "--out", str(out), "--rss-requests", "0"]
    done = subprocess.run(
        [sys.executable, "-m", "pairbert", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=low_limit,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == (
        "pairbert bench-serve: error: --clients 500: a process here may open 256 files (ulimit -n) and each "
        "client needs a socket in this process and in the server; use at most 192 clients, or raise the "
        "limit (ulimit -n)"
    )
    assert not out.exists()
