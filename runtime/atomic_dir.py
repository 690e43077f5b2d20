"""Crash-safe replacement of a whole folder (a checkpoint, a bundle), shared by training and export.

A writer fills a private temporary folder, then swaps it into place. Each step is one `os.replace` (atomic on
POSIX within a file system), and the names say at every instant where a complete copy is:

    .tmp-NAME-PID-NS   being written; never complete as far as anyone knows (removed once its writer is dead)
    .new-NAME          complete, about to become NAME
    NAME               the current folder
    .old-NAME          the previous NAME, between the two renames
    .trash-NAME-…      being deleted; never read

    swap:  tmp → .new-NAME;  NAME → .old-NAME;  .new-NAME → NAME;  .old-NAME → .trash-…;  delete the trash

A kill between any two steps leaves NAME, .new-NAME or .old-NAME complete. `locate` finds it without changing
anything (readers: a predictor, `evaluate`); `recover` (writers, before they write: training, resume, export)
completes an interrupted swap forward when .new-NAME exists, otherwise rolls back to .old-NAME, and removes
the temporary and trash folders that no live writer owns. Readers never rename: a service loading a bundle
while an export swaps it must not race the exporter. One writer per folder at a time (two trainers on one
output folder are not supported anyway).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from .errors import PairbertError

_STARTED = time.time()  # folders of our own pid older than this are from an earlier process that had our pid


class FolderInTheWay(PairbertError, FileExistsError):
    """The target path holds something that is not what the writer replaces (a user's folder or file)."""


MARKER_KEYS = {  # what makes a folder one of ours: its marker file, a JSON object with these keys
    "manifest.json": ("format_version", "variants", "contract"),  # a bundle
    "pairbert.json": ("labels",),  # a checkpoint
}
MAX_MARKER_BYTES = 16 * 1024 * 1024


def holds_marker(folder: Path, marker: str) -> bool:
    """`folder` holds pairbert's `marker` file: a JSON object with MARKER_KEYS[marker] (a web extension's
    manifest.json is no bundle)."""
    file = Path(folder) / marker
    try:
        if file.is_symlink() or not file.is_file() or file.stat().st_size > MAX_MARKER_BYTES:
            return False
        data = json.loads(file.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and all(key in data for key in MARKER_KEYS.get(marker, ()))


def check_replaceable(target: str | Path, marker: str, what: str) -> None:
    """Refuse to replace anything at `target` but a folder of the kind being written (one holding pairbert's
    `marker`, e.g. a bundle's manifest.json) or an empty folder: `--out` pointing at a checkpoint, a run
    folder or a user's own folder must never delete it."""
    target = Path(target)
    if not (target.exists() or target.is_symlink()):
        return
    if not target.is_dir():
        raise FolderInTheWay(f"{target} exists and is not a folder: refusing to replace it with a {what}")
    if holds_marker(target, marker):
        return
    try:
        empty = next(target.iterdir(), None) is None
    except OSError as exc:
        raise FolderInTheWay(f"{target}: cannot look inside ({exc.strerror})") from None
    if not empty:
        raise FolderInTheWay(
            f"{target} exists and is not a {what} (no {marker} of pairbert's): refusing to replace it; "
            "choose another path, or remove it first"
        )


def _names(target: Path) -> tuple[Path, Path]:
    return target.parent / f".new-{target.name}", target.parent / f".old-{target.name}"


def temp_dir(target: str | Path) -> Path:
    """A fresh, empty private folder beside `target` to write the new content into."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = target.parent / f".tmp-{target.name}-{os.getpid()}-{time.monotonic_ns()}"
    work.mkdir()
    return work


def locate(target: str | Path) -> Path:
    """Where the complete copy of `target` is right now (`target` itself unless a swap was interrupted)."""
    target = Path(target)
    new, old = _names(target)
    for candidate in (target, new, old):
        try:
            if candidate.is_dir():
                return candidate
        except OSError:  # a name too long, a folder without permission: not there, for finding
            continue
    return target


def _discard(folder: Path) -> None:
    """Rename out of the findable names first, then delete: a kill mid-delete leaves only trash."""
    if not folder.exists():
        return
    trash = folder.parent / f".trash-{folder.name.lstrip('.')}-{os.getpid()}-{time.monotonic_ns()}"
    os.replace(folder, trash)
    _remove(trash)


def _remove(path: Path) -> None:
    """Delete a folder, or a symlink that stood where one was (rmtree refuses links: it would stay behind)."""
    if path.is_symlink():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _owner_gone(pid_text: str, folder: Path) -> bool:
    try:
        pid = int(pid_text)
    except ValueError:
        return False  # not one of ours
    if pid == os.getpid():
        try:
            return folder.stat().st_mtime < _STARTED
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):
        return False
    return False


def clean_stale(target: str | Path) -> list[Path]:
    """Remove temporary and trash folders of `target` whose writer is no longer running."""
    target = Path(target)
    removed = []
    if not target.parent.is_dir():
        return removed
    for prefix in (f".tmp-{target.name}-", f".trash-new-{target.name}-", f".trash-old-{target.name}-"):
        for folder in target.parent.glob(prefix + "*"):
            pid_text = folder.name[len(prefix) :].split("-", 1)[0]
            if (folder.is_dir() or folder.is_symlink()) and _owner_gone(pid_text, folder):
                _remove(folder)
                removed.append(folder)
    return removed


def recover(target: str | Path) -> Path:
    """Finish or roll back an interrupted swap of `target` and clean stale folders; returns `target`."""
    target = Path(target)
    new, old = _names(target)
    if new.is_dir():
        if target.exists():
            _discard(old)
            os.replace(target, old)
        os.replace(new, target)
    elif not target.exists() and old.is_dir():
        os.replace(old, target)
    _discard(old)
    clean_stale(target)
    return target


def swap_into_place(
    work: str | Path, target: str | Path, marker: str | None = None, what: str = "folder"
) -> Path:
    """Make the complete folder `work` the new `target`, keeping a complete copy findable at every instant.
    With `marker`, only a folder holding it (or an empty one) is replaced (`check_replaceable`)."""
    work, target = Path(work), Path(target)
    recover(target)
    if marker is not None:
        check_replaceable(target, marker, what)
    new, old = _names(target)
    os.replace(work, new)  # from here on the new content is known to be complete
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    _discard(old)
    return target
