"""`auto`'s measurement of one candidate in a child process, so that a candidate which crashes the process
on this machine costs that candidate, not the caller.

Seen on an AMX machine (README: OpenVINO on an AMX machine): OpenVINO's bf16 sessions died with "double
free or corruption" inside `infer`, taking the process with them; upstream reports the like for some AMX
VMs and not others (openvinotoolkit/openvino#37577). A Python `try` cannot catch an abort, a child can. The
parent (runtime/predictor.py, `_measure_in_child`) starts one child per candidate, so a death at any point
up to the child's exit is blamed on that candidate (heap damage is often reported by a later `free`): it
is left out, and remembered only if a crash signal recurs in a second child. The child loads and checks
the candidate as a load would (`_open_variant`: digests, graph, answer check), times it and soaks it
(runtime/calibration.py), reporting each step as one line on a descriptor of its own, set aside before any
import (whatever else is written to stdout, by Python or a native library, goes to stderr); the parent
then loads only the winner. The child exits when its stdin closes: it does not outlive a caller killed
outright.
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import os
import sys
import tempfile
import threading
from pathlib import Path

PREFIX = "pairbert-calibration "  # marks the child's event lines


def launch(path: list[str]) -> str:
    """The program the parent runs with `python -c`: stdout set aside for the events and pointed at stderr
    before anything is imported, the parent's import path exactly (`-c` would put the working directory
    first, where a stray json.py must not be imported), then main()."""
    return (
        "import os, sys\n"
        "events = os.dup(1)\n"
        "os.dup2(2, 1)\n"
        f"sys.path[:] = {path!r}\n"
        "from pairbert.runtime.calibration_child import main\n"
        "main(events)\n"
    )


def is_final(event: dict) -> bool:
    """The child's last word on its candidate: measured, skipped, or a fault of the bundle."""
    return bool({"done", "skipped", "error"} & event.keys())


def events(text: str) -> list[dict]:
    """The event lines in `text` (a torn or foreign line is ignored)."""
    found = []
    for line in text.splitlines():
        if line.startswith(PREFIX):
            try:
                found.append(json.loads(line[len(PREFIX) :]))
            except ValueError:
                continue
    return found


def main(events_fd: int) -> None:
    out = os.fdopen(events_fd, "w", buffering=1)

    def emit(event: dict) -> None:
        out.write(PREFIX + json.dumps(event) + "\n")
        out.flush()  # each line out before the next step can crash the process

    import pairbert

    from .calibration import IN_PROCESS_ENV

    emit({"hello": pairbert.__file__})  # a Python running this pairbert: not a host that ignored -c
    job = json.loads(_first_line(0))
    try:
        threading.Thread(target=_exit_when_orphaned, daemon=True).start()
    except RuntimeError:  # no thread to spare (a pids limit): measured all the same, without the lifeline
        pass
    faulthandler.enable()  # a crash leaves its Python stack on stderr for the parent's warning
    os.environ[IN_PROCESS_ENV] = "1"  # a load inside this child never starts another child
    if job["tempdir"] is not None:
        tempfile.tempdir = job["tempdir"]  # the caller's temporary folder (private copies of the weights)

    from .bundle import BundleError, check_listed_files, read_manifest
    from .devices import LEDGER, plan_device
    from .predictor import _open_as_later_loads, _Request, measure_candidate

    LEDGER.assume(job["claimed"])  # as many threads held as in the caller: the same spinning setting
    bundle, name = Path(job["bundle"]), job["name"]
    try:
        manifest = read_manifest(bundle)
        check_listed_files(bundle, manifest)
        if hashlib.sha256(manifest.to_json().encode()).hexdigest() != job["manifest_sha256"]:
            raise BundleError(f"{bundle}: the bundle changed while it was being loaded")
        request = _Request(**job["request"])
        session = _open_as_later_loads(bundle, manifest, name, plan_device("cpu"), request, job["threads"])
    except Exception as exc:  # the parent raises a bundle's fault as a load would; skips the rest
        emit(_failure(name, exc, "loading"))
        return
    emit({"loaded": name})
    try:
        timings, soaked = measure_candidate(session, manifest, name, job["vocab"], progress=emit)
    except Exception as exc:
        emit(_failure(name, exc, "measuring"))
        return
    finally:
        session.close()
    emit({"done": name, "timings_s": timings, "soak": soaked})
    sys.stdout.flush()
    # then a normal exit: a heap this candidate damaged may still abort at its teardown, and is caught so


def _first_line(fd: int) -> bytes:
    """The job line, read from the descriptor itself (no sys.stdin buffer whose lock a thread would hold)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data


def _exit_when_orphaned() -> None:
    """The parent keeps this child's stdin open until it has ended it; end of file means the parent is
    gone (killed outright): exit rather than hold a model on a machine nobody measures for."""
    while os.read(0, 65536):
        pass
    os._exit(70)


def _failure(name: str, exc: Exception, step: str) -> dict:
    from .answer_check import AnswerMismatch
    from .bundle import BundleError
    from .sessions import BackendUnavailable

    if isinstance(exc, BundleError):
        return {"error": name, "bundle": True, "message": str(exc)}
    if isinstance(exc, BackendUnavailable):
        return {"skipped": name, "reason": str(exc), "mismatch": isinstance(exc, AnswerMismatch)}
    return {"skipped": name, "reason": f"{step} it failed: {type(exc).__name__}: {exc}", "mismatch": False}
