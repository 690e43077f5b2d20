"""SIGTERM unwound as an exception, so the `finally`s and `with` exits on the way run: a benchmark stops its
child processes, `pairbert predict` keeps the rows it wrote. Torch-free, stdlib only."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def sigterm_raises(exception: Callable[[int], BaseException]) -> Iterator[None]:
    """While inside, SIGTERM raises `exception(signum)` in the main thread (signals reach only that one;
    elsewhere this does nothing); the previous handler is back on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise exception(signum)

    before = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)
