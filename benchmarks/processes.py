"""Every measurement that must not share a process with another runs through here: a fresh Python
process whose last stdout line is a JSON object."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from pairbert.runtime.errors import PairbertError, killed_by
from pairbert.signals import sigterm_raises


class BenchmarkError(PairbertError, RuntimeError):
    pass


def run_json(args: list[str], timeout: float = 600) -> dict:
    """Run `python ARGS…` (e.g. ["-m", module, …] or ["-c", code]) and parse its last line as JSON;
    `process_wall_s` adds the process's wall time, interpreter start-up included."""
    start = time.perf_counter()
    what = args[1] if args[0] == "-m" else "python -c"
    try:
        done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchmarkError(f"{what} failed: still running after {timeout:.0f} s (stopped)") from None
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise BenchmarkError(f"{what} {_ended(done.returncode)}:\n{done.stderr[-3000:]}")
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):  # it ended well but did not say what it measured
        raise BenchmarkError(f"{what} printed no JSON result:\n{done.stderr[-3000:]}") from None
    result["process_wall_s"] = wall
    return result


def _ended(returncode: int) -> str:
    """How a process that did not succeed ended: "failed", or the signal that killed it (a native crash)."""
    return "failed" if returncode >= 0 else killed_by(returncode)


def output_folder(path: str | Path) -> Path:
    """`--out` as a folder that exists, or one line saying why it cannot be one."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise BenchmarkError(f"--out {out}: a file is in the way (a folder is needed)") from None
    except OSError as exc:
        raise BenchmarkError(f"--out {out}: cannot create it ({exc.strerror or exc})") from None
    return out


def sigterm_unwinds():
    """SIGTERM (timeout, a cancelled CI job, Kubernetes) unwinds like Ctrl-C, so the `finally`s that stop
    child processes (a server, a worker) run instead of leaving them orphaned. Main thread only."""
    return sigterm_raises(lambda signum: SystemExit(128 + signum))
