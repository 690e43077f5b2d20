"""Graphs whose weights lie in a file beside them (ONNX external data), loaded from verified bytes.

Export writes each graph's weights to `<graph>.data` (the default). Opened by path, ONNX Runtime would map
that file itself: fast, but what it maps is whatever is on disk then, not the bytes the loader verified, and a
file overwritten in place under a running service changes its weights (or kills it with SIGBUS). So the
runtime reads the weight files once, hashes those bytes, and hands ONNX Runtime their contents
(`SessionOptions.add_external_initializers_from_files_in_memory`, which copies what it needs while it builds
the session: nothing is kept afterwards). OpenVINO, which takes external weights only from files beside a
graph on disk, reads a private temporary copy of the verified bytes (a folder only this process's user can
open, removed once the model is compiled).

A location the graph names but the bundle does not list is never looked up anywhere: ONNX Runtime is
pointed at a folder that cannot exist for anything it does not get in memory (graph bytes alone would
otherwise resolve such names against the current directory), and OpenVINO's copy holds only the listed
files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import PairbertError

GRAPH_COPY = "graph.onnx"  # the graph's name in a private copy (weight files keep theirs)
FOLDER_OPTION = "session.model_external_initializers_file_folder_path"  # ONNX Runtime >= 1.21


class ExternalWeightsError(PairbertError, ValueError):
    pass


@dataclass(frozen=True)
class ExternalWeights:
    """A graph's bytes and its weight files' bytes, by the name the graph gives each file (verified by the
    caller)."""

    graph: bytes
    files: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self):
        for name in self.files:
            plain = (
                isinstance(name, str) and name not in ("", ".", "..") and not any(c in name for c in "/\\\0")
            )
            if not plain or name == GRAPH_COPY:  # (the private copy's graph has that name)
                raise ExternalWeightsError(
                    f"weight file name {name!r} is not a plain file name (nor {GRAPH_COPY!r})"
                )

    def add_to(self, options) -> None:
        """Give an ONNX Runtime SessionOptions the weight files' contents."""
        if self.files:
            if not hasattr(options, "add_external_initializers_from_files_in_memory"):
                raise ExternalWeightsError(
                    "this onnxruntime cannot take weight files from memory: install onnxruntime >= 1.24 "
                    "(pairbert[cpu]), or re-export the bundle with --no-external-data"
                )
            names = list(self.files)
            options.add_external_initializers_from_files_in_memory(
                names, [self.files[n] for n in names], [len(self.files[n]) for n in names]
            )

    def write_private_copy(self, folder: Path) -> Path:
        """Write the graph and its weight files into `folder` (a private temporary folder) and return the
        graph's path there: for OpenVINO, which reads external weights only beside a graph on disk."""
        graph = Path(folder) / GRAPH_COPY
        for path, data in [(graph, self.graph)] + [(Path(folder) / n, d) for n, d in self.files.items()]:
            with open(path, "xb") as f:
                f.write(data)
        return graph


def look_nowhere_else(options) -> None:
    """A session built from bytes looks up external weights it was not given in a folder that cannot exist
    (below /dev/null, which is not a folder), not in the current directory."""
    options.add_session_config_entry(FOLDER_OPTION, os.path.join(os.devnull, "pairbert-no-weights"))
