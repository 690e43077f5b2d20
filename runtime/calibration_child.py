"""`auto`'s measurement of one candidate in a child process, so that a candidate which crashes the process
on this machine costs that candidate, not the caller.

Seen on an AMX machine (README: OpenVINO on an AMX machine): OpenVINO's bf16 sessions died with "double
free or corruption" inside `infer`, taking the process with them; upstream reports the like for some AMX
VMs and not others (openvinotoolkit/openvino#37577). A Python `try` cannot catch an abort, a child can. The
parent (runtime/predictor.py, `_measure_in_child`) starts one child per candidate, so whatever kills a
child, at any point up to its exit, is that candidate's doing (heap corruption is often reported by a later
`free`). The child loads and checks the candidate as a load would (`_open_variant`: digests, graph, answer
check), times it and soaks it (runtime/calibration.py), reporting each step as one line on a private
descriptor (native libraries' prints go to stderr, and cannot tear an event apart); the parent then loads
only the winner.
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

PREFIX = "pairbert-calibration "  # marks the child's event lines


def launch(path: list[str]) -> str:
    """The program the parent runs with `python -c`: the parent's import path exactly, before any import
    (`-c` would put the working directory first, where a stray json.py must not be imported), then main()
    with the job from stdin."""
    return (
        f"import sys\nsys.path[:] = {path!r}\nfrom pairbert.runtime.calibration_child import main\nmain()\n"
    )


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


def main() -> None:
    out = os.fdopen(os.dup(1), "w", buffering=1)  # events go to the parent's pipe on a private descriptor;
    os.dup2(2, 1)  # anything else written to stdout, by Python or a native library, goes to stderr

    def emit(event: dict) -> None:
        out.write(PREFIX + json.dumps(event) + "\n")
        out.flush()  # each line out before the next step can crash the process

    import pairbert

    from .calibration import IN_PROCESS_ENV

    emit({"hello": pairbert.__file__})  # a Python running this pairbert: not a host that ignored -c
    job = json.loads(sys.stdin.read())
    faulthandler.enable()  # a crash leaves its Python stack on stderr for the parent's warning
    os.environ[IN_PROCESS_ENV] = "1"  # a load inside this child never starts another child
    tempfile.tempdir = job["tempdir"]  # the caller's temporary folder (private copies of the weights)

    from .bundle import BundleError, check_listed_files, read_manifest
    from .devices import LEDGER, plan_device
    from .predictor import _open_variant, _Request, measure_candidate

    LEDGER.assume(job["claimed"])  # as many threads held as in the caller: the same spinning setting
    bundle, name = Path(job["bundle"]), job["name"]
    try:
        manifest = read_manifest(bundle)
        check_listed_files(bundle, manifest)
        if hashlib.sha256(manifest.to_json().encode()).hexdigest() != job["manifest_sha256"]:
            raise BundleError(f"{bundle}: the bundle changed while it was being loaded")
        request = _Request(**job["request"])
        session = _open_variant(bundle, manifest, name, plan_device("cpu"), request, job["threads"])
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


def _failure(name: str, exc: Exception, step: str) -> dict:
    from .answer_check import AnswerMismatch
    from .bundle import BundleError
    from .sessions import BackendUnavailable

    if isinstance(exc, BundleError):
        return {"error": name, "bundle": True, "message": str(exc)}
    if isinstance(exc, BackendUnavailable):
        return {"skipped": name, "reason": str(exc), "mismatch": isinstance(exc, AnswerMismatch)}
    return {"skipped": name, "reason": f"{step} it failed: {type(exc).__name__}: {exc}", "mismatch": False}
