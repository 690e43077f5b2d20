"""One session factory per backend. Every place that runs a bundle's graph — the predictor, export's
validation, the benchmarks — builds its session here, so each option is set in exactly one place.

    session = open_session("onnxruntime", model_bytes_or_path, SessionSettings(threads=2))
    logits = session.run(feed)          # feed: {input name: int64 array}; returns the first output
    session.backend, session.provider   # what really runs
    session.close()

Backends: ONNX Runtime (CPU, CUDA) from the base install; OpenVINO (CPU) from the `openvino` extra.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    import fcntl
except ImportError:  # Windows: no flock; the cache is used without a lock there
    fcntl = None

from .cuda_graphs import PROVIDER_OPTIONS, CudaGraphRunner
from .errors import PairbertError, first_line
from .external_weights import (
    CopyFailed,
    ExternalWeights,
    ExternalWeightsError,
    WeightsFolder,
    look_nowhere_else,
    make_private_folder,
    remove_private_folder,
)
from .ort import onnxruntime, prepare_cuda
from .shapes import CPU_SEQUENCE_BUCKETS, pad_length

log = logging.getLogger(__name__)

ONNXRUNTIME = "onnxruntime"
OPENVINO = "openvino"
BACKENDS = (ONNXRUNTIME, OPENVINO)
CPU_ARENA_MODES = ("off", "shrink", "keep")
OPENVINO_PRECISIONS = ("f32", "bf16")
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
OPENVINO_EXTRA = "pip install 'pairbert[openvino]'"


class BackendError(PairbertError, RuntimeError):
    """A backend that is not installed, or that cannot load or run a graph."""


class BackendUnavailable(BackendError):
    """The backend cannot run in this environment (not: this bundle is bad); `auto` tries the others."""


class SessionClosed(BackendError):
    """A run asked of a session after close()."""


def openvino_reason(exc: BaseException) -> str:
    """The informative line of an OpenVINO error (its first lines say where in OpenVINO it was raised)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return (useful or lines or [type(exc).__name__])[-1]


@dataclass(frozen=True)
class SessionSettings:
    threads: int = 1
    device: str = "cpu"  # "cpu" or "cuda" (ONNX Runtime only)
    cpu_arena: str = "off"  # ONNX Runtime CPU arena: "off", "shrink" or "keep" (see README: Memory)
    spinning: bool = True  # ONNX Runtime intra-op threads spin while idle (off when cores are shared)
    parallel_branches: bool = False  # run the two encoders concurrently (ORT_PARALLEL, one thread each)
    precision: str = "f32"  # OpenVINO inference precision: "f32" or "bf16" (matrix units)
    cache_dir: str | None = None  # OpenVINO compiled-model cache (faster second load)
    optimize: bool = True  # ONNX Runtime graph optimizations (off: run the graph exactly as written)
    cuda_graphs: bool = True  # on CUDA: replay captured CUDA graphs per padded shape (runtime/cuda_graphs.py)
    length_buckets: bool = True  # OpenVINO: pad sequences to CPU_SEQUENCE_BUCKETS (bounded memory, shapes.py)


# ONNX bytes, a path, a graph with its weight files as bytes, or a graph with a private folder of them
Model = bytes | str | Path | ExternalWeights | WeightsFolder


def _source(model: bytes | str | Path) -> bytes | str:
    return model if isinstance(model, bytes) else str(model)


class OrtSession:
    backend = ONNXRUNTIME

    def __init__(self, model: Model, settings: SessionSettings):
        ort = onnxruntime()  # an ImportError naming pairbert[cpu] / pairbert[gpu] when neither is installed
        if settings.cpu_arena not in CPU_ARENA_MODES:
            raise BackendError(
                f"cpu_arena must be one of {', '.join(CPU_ARENA_MODES)}, got {settings.cpu_arena!r}"
            )
        options = ort.SessionOptions()
        parallel = settings.parallel_branches and settings.threads >= 2
        options.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL if parallel else ort.ExecutionMode.ORT_SEQUENTIAL
        )
        options.intra_op_num_threads = max(1, settings.threads // 2) if parallel else settings.threads
        options.inter_op_num_threads = 2 if parallel else 1
        options.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if settings.optimize
            else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        )
        # Shapes vary call to call: a memory pattern planned for one shape is waste for the next.
        options.enable_mem_pattern = False
        options.enable_cpu_mem_arena = settings.cpu_arena != "off"
        options.log_severity_level = 3
        if not settings.spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if isinstance(model, WeightsFolder):
            model.add_to(options)  # ONNX Runtime maps the private copies; nothing else is looked up
            model = model.graph
        elif isinstance(model, ExternalWeights | bytes):
            # weights not given are looked up nowhere, not in the CWD (a path finds its weight files beside
            # it: export, benchmarks)
            look_nowhere_else(options)
        if isinstance(model, ExternalWeights):
            try:
                model.add_to(options)  # ONNX Runtime copies what it needs while it builds: nothing is kept
            except ExternalWeightsError as exc:
                raise BackendError(str(exc)) from None
            model = model.graph
        graphs = settings.device == "cuda" and settings.cuda_graphs
        if settings.device == "cuda":
            prepare_cuda(ort)  # CUDA/cuDNN from the nvidia-* wheels, when that is how they were installed
        self._session = self._load(ort, model, options, settings.device, graphs)
        self.settings = settings
        self.provider = self._session.get_providers()[0]
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]
        self._run_options = None
        self.graphs = None  # a CudaGraphRunner when CUDA runs with graphs
        if graphs and self.provider == CUDA_PROVIDER and self._graph_option_taken():
            self.graphs = CudaGraphRunner(ort, self._session, self.input_names, self.output_names[0])
        if settings.cpu_arena == "shrink":
            # Hand the arena's unused chunks back after each run.
            self._run_options = ort.RunOptions()
            self._run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    @staticmethod
    def _load(ort, model, options, device: str, graphs: bool):
        cuda = (CUDA_PROVIDER, PROVIDER_OPTIONS) if graphs else CUDA_PROVIDER
        providers = [cuda, CPU_PROVIDER] if device == "cuda" else [CPU_PROVIDER]
        try:
            return ort.InferenceSession(_source(model), options, providers=providers)
        except Exception as exc:  # onnxruntime raises several private types
            if graphs:  # a build or graph that refuses CUDA graphs still runs without them
                log.warning("CUDA graphs unavailable (%s); running without them", first_line(exc))
                return OrtSession._load(ort, model, options, device, graphs=False)
            raise BackendError(f"ONNX Runtime cannot load the graph ({first_line(exc)})") from None

    def _graph_option_taken(self) -> bool:
        options = self._session.get_provider_options().get(CUDA_PROVIDER, {})
        return options.get("enable_cuda_graph") == "1"

    @property
    def session(self):
        """The onnxruntime.InferenceSession (for IO binding or inspection)."""
        return self._session

    def output_width(self) -> int | None:
        """The last axis of the graph's first output (the logits' labels), when the graph fixes it."""
        width = self._session.get_outputs()[0].shape[-1]
        return width if isinstance(width, int) else None

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        if self._session is None:
            raise SessionClosed("the session is closed")
        feed = {k: feed[k] for k in self.input_names}
        try:
            return self._run(feed)
        except AttributeError:
            if self._session is None:  # closed by another thread during the run
                raise SessionClosed("the session was closed during the run") from None
            raise
        except Exception as exc:  # onnxruntime raises several private types, with the node's name
            raise BackendError(f"ONNX Runtime failed to run the graph ({first_line(exc)})") from None

    def _run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        if self.provider == CUDA_PROVIDER:
            if self.graphs is not None:
                logits = self.graphs.run(feed)
                if logits is not None:
                    return logits
            binding = self._session.io_binding()
            for name, value in feed.items():
                binding.bind_cpu_input(name, value)
            binding.bind_output(self.output_names[0], "cuda")
            self._session.run_with_iobinding(binding, self.graphs.plain_options if self.graphs else None)
            return binding.copy_outputs_to_cpu()[0]
        return self._session.run(self.output_names[:1], feed, self._run_options)[0]

    def close(self) -> None:
        self._session = None


# The external-initializers folder option (ONNX Runtime 1.21) is silently ignored by older builds, which
# would then look the weight files up in the current directory: such builds get the weights from memory
# (and, below 1.24, the message to upgrade).
WEIGHTS_FOLDER_MIN_ORT = (1, 24)


def weights_folder_supported(backend: str) -> bool:
    """Whether `backend` can open a graph's weights from a private folder (`WeightsFolder`) here: not on
    Windows (a mapped file cannot be deleted there, so the folder would stay), and for ONNX Runtime only
    where it honours the folder option."""
    if os.name == "nt":
        return False
    if backend != ONNXRUNTIME:
        return True
    try:
        version = onnxruntime().__version__
        parts = tuple(int(p) for p in version.split(".")[:2])
    except (ImportError, AttributeError, ValueError):
        return False
    return parts >= WEIGHTS_FOLDER_MIN_ORT


def openvino_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def _openvino():
    pending = _importing
    if pending is not None and pending is not threading.current_thread():
        pending.join()  # (waiting on the import lock instead hands back a failed import's half-built module)
    try:
        import openvino
    except ImportError:
        raise BackendError(f"backend 'openvino' needs the OpenVINO runtime: {OPENVINO_EXTRA}") from None
    return openvino


_importing: threading.Thread | None = None  # the import backend_imported_meanwhile started, if any


@contextlib.contextmanager
def backend_imported_meanwhile(backend: str) -> Iterator[None]:
    """Import `backend`'s package on a second thread while the body runs, waited for at the end. For
    OpenVINO: its Python import (~0.1 s, most of it its model converter and telemetry modules) then overlaps
    the copying and hashing of the weights that come before the session build, whose own import waits for
    that thread first. A failed import is retried there, which says which extra to install."""
    global _importing
    if backend != OPENVINO or "openvino" in sys.modules or not openvino_available():
        yield
        return
    thread = threading.Thread(target=_import_quietly, name="pairbert-import-openvino", daemon=True)
    _importing = thread
    thread.start()
    try:
        yield
    finally:
        thread.join()


def _import_quietly() -> None:
    try:
        _openvino()
    except Exception as exc:  # the session build imports again and reports it
        log.debug("importing OpenVINO failed on the import thread: %s", exc)


def openvino_capabilities() -> tuple[str, ...]:
    """What the CPU plugin can compute natively here, e.g. ('FP32', 'INT8', 'BF16', ...); () without
    OpenVINO."""
    if not openvino_available():
        return ()
    return tuple(_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def has_bf16_units() -> bool:
    """The CPU computes bf16 natively (AMX or AVX512-BF16), as OpenVINO's CPU plugin reports it."""
    return "BF16" in openvino_capabilities()


# Whether a file can be removed while mapped (POSIX: the mapping outlives the name). There OpenVINO maps
# its private copy as ONNX Runtime does: reading the weights in instead (ENABLE_MMAP off) was the one
# setting the runs that went wrong on an AMX machine had apart from the compiled-model cache (README:
# OpenVINO on AMX); on Windows a mapped copy could not be removed, so it is read.
MAPPED_FILES_REMOVABLE = os.name != "nt"


# How many input shapes OpenVINO's CPU plugin keeps compiled state for (its default: 5,000). Each bucketed
# shape a service sees adds some; for the int8 graph a lot: with the default, `openvino-int8` went 542 → 917
# MB over 10,000 varied predictions after `pairbert serve`'s warm-up and was still rising (openvino-bf16:
# 480 → 562 MB). With 1,000: 539 → 771 MB, flat in the second half (+1.8 %), and 1,500 calls of mostly
# distinct shapes took 3 % longer; 300 held 707 MB but 100 cost 38 % in time (AMD EPYC Zen 5, README).
OPENVINO_SHAPE_CACHE = 1000


class OpenVinoSession:
    """An OpenVINO CPU model compiled from the bundle's ONNX graph. Thread-safe: each concurrent call takes
    its own infer request from a pool (requests are created on demand and reused). Sequence lengths are
    padded to a few buckets (`SessionSettings.length_buckets`): OpenVINO keeps state per input shape, and
    unbucketed lengths made a long-running service's memory creep (runtime/shapes.py)."""

    backend = OPENVINO

    def __init__(self, model: Model, settings: SessionSettings):
        ov = _openvino()
        if settings.device != "cpu":
            raise BackendError(f"backend 'openvino' runs on the CPU here, not {settings.device!r}")
        if settings.precision not in OPENVINO_PRECISIONS:
            raise BackendError(
                f"OpenVINO precision must be one of {OPENVINO_PRECISIONS}, got {settings.precision!r}"
            )
        core = ov.Core()
        config = {
            "INFERENCE_NUM_THREADS": settings.threads,
            "INFERENCE_PRECISION_HINT": settings.precision,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1",
            "CPU_RUNTIME_CACHE_CAPACITY": OPENVINO_SHAPE_CACHE,
        }
        if isinstance(model, bytes):
            model = ExternalWeights(model)  # a private copy too: a name the graph gives is looked up there
        try:
            if isinstance(model, ExternalWeights | WeightsFolder) and not MAPPED_FILES_REMOVABLE:
                core.set_property({"ENABLE_MMAP": False})  # read, not mapped: the copy must be removable
            if isinstance(model, WeightsFolder):
                graph = core.read_model(str(_graph_beside_weights(model)))
                self._compiled = _compile(core, graph, config, settings.cache_dir)
            elif isinstance(model, ExternalWeights):
                self._compiled = _compile_private_copy(core, model, config, settings.cache_dir)
            else:
                self._compiled = _compile(core, core.read_model(str(model)), config, settings.cache_dir)
        except BackendError:
            raise
        except Exception as exc:  # openvino raises RuntimeError with multi-line details
            raise BackendError(f"OpenVINO cannot load the graph ({openvino_reason(exc)})") from None
        self.settings = settings
        self._provider: str | None = None
        self.input_names = [p.get_any_name() for p in self._compiled.inputs]
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()

    @property
    def provider(self) -> str:
        """What runs, as the compiled model says: "OpenVINO CPU (bf16)", or "(i8 + bf16)" for a graph with
        int8 pairs; a bf16 hint on a CPU without bf16 units reads "(f32)". Read on first use (~10 ms)."""
        if self._provider is None:
            compiled = self._compiled
            if compiled is None:
                return f"OpenVINO CPU ({self.settings.precision})"
            self._provider = (
                f"OpenVINO CPU ({' + '.join(_matmul_precisions(compiled)) or self.settings.precision})"
            )
        return self._provider

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        compiled = self._compiled
        if compiled is None:
            raise SessionClosed("the session is closed")
        feed = {k: feed[k] for k in self.input_names}  # built first: a bad feed must not lose a request
        if self.settings.length_buckets:
            feed = pad_length(feed, CPU_SEQUENCE_BUCKETS)
        try:
            request = self._requests.get_nowait()
        except queue.Empty:
            with self._lock:
                request = compiled.create_infer_request()
        try:
            # share_inputs: OpenVINO reads the feed's arrays in place instead of copying each into a tensor
            # of its own (~0.2 ms of a 2 ms batch-1 call here); they are this call's alone and outlive it
            request.infer(feed, share_inputs=True)
            return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)
        except Exception as exc:  # openvino raises RuntimeError with multi-line details
            raise BackendError(f"OpenVINO failed to run the graph ({openvino_reason(exc)})") from None
        finally:
            if self._compiled is compiled:  # not into the pool of a session closed meanwhile
                self._requests.put(request)

    def output_width(self) -> int | None:
        """The last axis of the graph's first output (the logits' labels), when the graph fixes it."""
        width = self._compiled.outputs[0].get_partial_shape()[-1]
        return width.get_length() if width.is_static else None

    @property
    def loaded_from_cache(self) -> bool:
        """The compiled model was imported from OpenVINO's model cache rather than compiled now."""
        try:
            return bool(self._compiled.get_property("LOADED_FROM_CACHE"))
        except Exception:  # closed, or a plugin without the property
            return False

    def close(self) -> None:
        self._compiled = None
        self._requests = queue.SimpleQueue()


def _matmul_precisions(compiled) -> list[str]:
    """The precisions the compiled model's matrix products run in, the most used first."""
    counts: dict[str, int] = {}
    try:
        for op in compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if info["layerType"].astype(str) in ("FullyConnected", "MatMul"):
                precision = info["runtimePrecision"].astype(str)
                counts[precision] = counts.get(precision, 0) + 1
    except Exception:  # a plugin that names its layers otherwise: the hint is the best we know
        return []
    return sorted(counts, key=lambda k: -counts[k])


def _graph_beside_weights(model: WeightsFolder) -> Path:
    try:
        return model.write_graph()
    except OSError as exc:  # the environment (no room in TMPDIR), not the bundle: `auto` tries the others
        raise BackendUnavailable(
            f"OpenVINO needs the graph beside its weights in {model.folder} (set TMPDIR to a folder with "
            f"room): {exc.strerror or exc}"
        ) from None


def _compile_private_copy(core, model: ExternalWeights, config: dict, cache_dir: str | None):
    """Compile from a private temporary copy of the verified bytes (removed afterwards): OpenVINO reads
    external weights only from files beside a graph on disk, and nobody else can swap this copy. The folder
    is one of the runtime's private folders (locked; found by the stale cleanup if this process dies)."""
    try:
        folder, lock = make_private_folder()
    except CopyFailed as exc:
        raise _no_private_copy(exc) from None
    try:  # the folder goes on every way out (an interrupt during the write too)
        try:
            path = model.write_private_copy(folder)
        except OSError as exc:
            raise _no_private_copy(f"{folder}: {exc.strerror or exc}") from None
        return _compile(core, core.read_model(str(path)), config, cache_dir)
    finally:
        remove_private_folder(folder, lock)


def _no_private_copy(why: object) -> BackendUnavailable:
    return BackendUnavailable(
        "OpenVINO needs a private copy of the graph and weights in TMPDIR (set TMPDIR to a folder with room "
        f"that only you can write, or that has the sticky bit): {why}"
    )


def _compile(core, graph, config: dict, cache_dir: str | None):
    """compile_model, through OpenVINO's model cache when there is one (the cached blob is the compiled
    form of this same graph: OpenVINO keys it by the graph and the device, not by the inference precision
    or the thread count, which it applies at import; so each precision has a cache folder of its own,
    `predictor._openvino_cache`). A cache that fails (full disk, a damaged blob) costs a compilation without
    it, not the load."""
    if cache_dir:
        try:
            with _cache_lock(cache_dir) as usable:
                if usable:
                    return core.compile_model(graph, "CPU", {**config, "CACHE_DIR": cache_dir})
            log.warning(
                "OpenVINO model cache %s: another process has held it for over %.0f s; compiling without it",
                cache_dir,
                CACHE_LOCK_WAIT_S,
            )
        except Exception as exc:
            log.warning(
                "OpenVINO model cache %s failed (%s); compiling without it", cache_dir, first_line(exc)
            )
    try:
        return core.compile_model(graph, "CPU", config)
    except Exception as exc:  # openvino raises RuntimeError with multi-line details
        raise BackendError(f"OpenVINO cannot load the graph ({openvino_reason(exc)})") from None


# How long a load waits for another process's compile into the same OpenVINO cache folder before it
# compiles without the cache (a compile takes about a second; a process stuck holding the lock must not
# stall every load, or make `auto` drop OpenVINO after its child's time limit).
CACHE_LOCK_WAIT_S = 30.0


@contextlib.contextmanager
def _cache_lock(cache_dir: str) -> Iterator[bool]:
    """One process at a time compiles into, or imports from, an OpenVINO cache folder. OpenVINO writes a
    blob in place (truncate, then write) and maps the blob it imports: two processes starting on an empty
    cache (`pairbert serve --workers N`) could otherwise rewrite a blob a third has just mapped, which dies
    of SIGBUS. Yields whether to use the cache: False when another process held the lock for
    CACHE_LOCK_WAIT_S. Where there is no flock (Windows, a file system without locks) or no lock file can
    be made, the cache is used without a lock, as before."""
    fd = _lock_file(cache_dir)
    if fd is None:
        yield True
        return
    try:
        yield _acquire(fd, CACHE_LOCK_WAIT_S)
    finally:
        os.close(fd)  # releases the lock


def _lock_file(cache_dir: str) -> int | None:
    if fcntl is None:
        return None
    try:
        os.makedirs(cache_dir, exist_ok=True)
        return os.open(os.path.join(cache_dir, ".lock"), os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        return None


def _acquire(fd: int, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        except OSError:  # no locks on this file system
            return True


def open_session(backend: str, model: Model, settings: SessionSettings) -> OrtSession | OpenVinoSession:
    """The one entry point: a session of `backend` over `model` (ONNX bytes, a path, or a graph with its
    external weights as bytes)."""
    if backend == ONNXRUNTIME:
        return OrtSession(model, settings)
    if backend == OPENVINO:
        return OpenVinoSession(model, settings)
    raise BackendError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
