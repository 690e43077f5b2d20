"""Readiness across the worker processes of one `pairbert serve --workers N`.

The kernel hands each connection to any worker, so a readiness probe answered by the first worker to load
would see "ready" while the others still answer 503. Each worker marks itself ready in a folder the parent
made (a file named by its pid), and a worker's /ready says 200 only once N live workers have marked
themselves: a worker that died is not counted, whatever file it left."""

from __future__ import annotations

import os
from pathlib import Path


class Peers:
    def __init__(self, folder: str | Path, workers: int):
        self.folder = Path(folder)
        self.workers = workers

    def mark(self, ready: bool, pid: int | None = None) -> None:
        """Mark this worker (or `pid`) ready, or no longer ready (stopping)."""
        path = self.folder / str(pid or os.getpid())
        if ready:
            path.touch()
        else:
            path.unlink(missing_ok=True)

    def ready(self) -> int:
        """How many live workers have marked themselves ready."""
        try:
            names = os.listdir(self.folder)
        except OSError:  # the parent removed the folder: it is stopping
            return 0
        return sum(1 for name in names if name.isdigit() and _alive(int(name)))


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate it there: files are removed on a clean stop
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's (a pid reused by someone else: counted, rarely wrong)
        return True
    return True
