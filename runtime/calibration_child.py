"""`auto`'s measurement in a child process, so that a candidate which crashes the process on this machine
costs that candidate, not the caller.

Seen on an AMX machine (README: OpenVINO on an AMX machine): OpenVINO's bf16 sessions died with "double
free or corruption" a few dozen calls in, taking the process with them; upstream reports the like for some
AMX VMs and not others (openvinotoolkit/openvino#37577). A Python `try` cannot catch an abort, a child can:
the parent (`runtime/predictor.py`, `_measure_in_child`) starts this module with the job on stdin, reads
one line per event on stdout, and when the child dies it knows which candidate was running, leaves it out
and starts a new child for the ones not measured yet. The child loads and checks each candidate exactly as
the parent would (`_open_variant`: digests, graph, answer check), times it and soaks it
(runtime/calibration.py); the parent then loads only the winner.
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import sys
from pathlib import Path

PREFIX = "pairbert-calibration "  # marks the child's event lines among anything a library prints

# What the parent runs: the job arrives on stdin; the parent's import path first, so the child imports
# the same pairbert the caller did (an uninstalled checkout on sys.path included).
LAUNCH = (
    "import json, sys\n"
    "job = json.loads(sys.stdin.read())\n"
    "sys.path[:0] = [p for p in job['path'] if p not in sys.path]\n"
    "from pairbert.runtime.calibration_child import main\n"
    "main(job)\n"
)


def emit(event: dict) -> None:
    sys.stdout.write(PREFIX + json.dumps(event) + "\n")
    sys.stdout.flush()  # each line out before the next candidate can crash the process


def events(stdout: str) -> list[dict]:
    """The child's event lines (anything else a library printed is ignored; a torn last line too)."""
    found = []
    for line in stdout.splitlines():
        if line.startswith(PREFIX):
            try:
                found.append(json.loads(line[len(PREFIX) :]))
            except ValueError:
                continue
    return found


def main(job: dict) -> None:
    faulthandler.enable()  # a crash leaves its Python stack on stderr for the parent's warning
    from .answer_check import AnswerMismatch
    from .bundle import check_listed_files, read_manifest
    from .devices import plan_device
    from .predictor import _open_variant, _Request, measure_candidate
    from .sessions import BackendUnavailable

    bundle = Path(job["bundle"])
    manifest = read_manifest(bundle)
    check_listed_files(bundle, manifest)
    if hashlib.sha256(manifest.to_json().encode()).hexdigest() != job["manifest_sha256"]:
        emit({"error": None, "message": f"{bundle}: the bundle changed while it was being loaded"})
        sys.exit(3)
    request, plan = _Request(**job["request"]), plan_device("cpu")
    for name in job["names"]:
        emit({"start": name})
        try:
            session = _open_variant(bundle, manifest, name, plan, request, job["threads"])
        except BackendUnavailable as exc:
            emit({"skipped": name, "reason": str(exc), "mismatch": isinstance(exc, AnswerMismatch)})
            continue
        except Exception as exc:  # the parent opens it itself and raises the same error as a load would
            emit({"error": name, "message": str(exc)})
            sys.exit(2)
        try:
            timings, soaked = measure_candidate(session, manifest, name, job["vocab"])
        except Exception as exc:  # answers that moved, or a run that failed: not used here
            emit({"skipped": name, "reason": str(exc), "mismatch": isinstance(exc, AnswerMismatch)})
            continue
        finally:
            session.close()
        emit({"done": name, "timings_s": timings, "soak": soaked})
