"""CUDA graphs for ONNX Runtime's CUDA provider: capture the model once per padded shape, then replay it.

At batch 1 a small encoder pair is bound by launch overhead, not by the GPU: ~150 kernels, each queued by ONNX
Runtime's executor on the CPU. A captured CUDA graph replays them in one launch. ONNX Runtime captures a graph
per `gpu_graph_id` run option for fixed input/output addresses and shapes, so each run here is padded to a
shape bucket (batch to a power of two, sequence to 16/32/64/128/… tokens; padded positions have attention mask
0, padded rows repeat row 0 and are dropped) and fed through device buffers kept per bucket.

Shapes beyond the largest bucket, or more distinct buckets than `max_graphs`, run without a graph
(`gpu_graph_id` -1). A graph that fails to capture or run turns graphs off for the session, with one warning.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from .errors import first_line
from .shapes import bucket, pad_feed

log = logging.getLogger(__name__)

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
SEQUENCE_BUCKETS = (16, 32, 64, 128, 256, 512)
NO_GRAPH = "-1"
PROVIDER_OPTIONS = {"enable_cuda_graph": "1"}


def graph_shape(feed: dict[str, np.ndarray]) -> tuple[int | None, int | None]:
    """The (batch, length) bucket a feed is replayed at: every input padded to one shape, as long as the
    longest input and as many rows as the largest (the two orders may come at their own lengths, and a
    question shared by every pair as one row, which the padding repeats); None where beyond the buckets."""
    batch = max(value.shape[0] for value in feed.values())
    length = max(value.shape[1] for value in feed.values())
    return bucket(batch, BATCH_BUCKETS), bucket(length, SEQUENCE_BUCKETS)


class _Slot:
    """One bucket's device buffers, binding and run options (graph id): fixed addresses, as replay needs."""

    def __init__(self, ort, session, input_names, output_name, shape, graph_id: int):
        self.inputs = {
            n: ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.int64, "cuda", 0)
            for n in input_names
        }
        self.output = ort.OrtValue.ortvalue_from_shape_and_type([shape[0], 2], np.float32, "cuda", 0)
        self.binding = session.io_binding()
        for name, value in self.inputs.items():
            self.binding.bind_ortvalue_input(name, value)
        self.binding.bind_ortvalue_output(output_name, self.output)
        self.options = ort.RunOptions()
        self.options.add_run_config_entry("gpu_graph_id", str(graph_id))


class CudaGraphRunner:
    def __init__(self, ort, session, input_names: list[str], output_name: str, max_graphs: int = 32):
        self._ort, self._session = ort, session
        self._input_names, self._output_name = input_names, output_name
        self._slots: dict[tuple[int, int], _Slot] = {}
        self._lock = threading.Lock()
        self.max_graphs = max_graphs
        self.enabled = True
        self.plain_options = ort.RunOptions()  # for runs that must not touch a graph
        self.plain_options.add_run_config_entry("gpu_graph_id", NO_GRAPH)

    @property
    def graphs(self) -> int:
        return len(self._slots)

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray | None:
        """The logits, or None when this shape runs without a graph (the caller runs it plainly)."""
        b = max(value.shape[0] for value in feed.values())
        key = graph_shape(feed)
        if not self.enabled or None in key:
            return None
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                if len(self._slots) >= self.max_graphs:
                    return None
                slot = self._slots[key] = _Slot(
                    self._ort,
                    self._session,
                    self._input_names,
                    self._output_name,
                    key,
                    graph_id=len(self._slots) + 1,  # 0 is ONNX Runtime's own
                )
            try:
                for name, value in pad_feed(feed, *key).items():
                    slot.inputs[name].update_inplace(value)
                self._session.run_with_iobinding(slot.binding, slot.options)
                return slot.output.numpy()[:b]
            except Exception as exc:  # onnxruntime raises several private types
                self.enabled = False
                log.warning("CUDA graphs turned off for this session (%s)", first_line(exc))
                return None
