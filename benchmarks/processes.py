"""Every measurement that must not share a process with another runs through here: a fresh Python
process whose last stdout line is a JSON object."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from pairbert.runtime.errors import PairbertError


class BenchmarkError(PairbertError, RuntimeError):
    pass


def run_json(args: list[str], timeout: float = 600) -> dict:
    """Run `python ARGS…` (e.g. ["-m", module, …] or ["-c", code]) and parse its last line as JSON;
    `process_wall_s` adds the process's wall time, interpreter start-up included."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        what = args[1] if args[0] == "-m" else "python -c"
        raise BenchmarkError(f"{what} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    return result
