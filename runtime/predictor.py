"""The predictor services embed: bundle in, labels and probabilities out. onnxruntime + numpy + tokenizers.

    clf = PairClassifier.load("bundle/")
    result = clf.predict([("question", "answer"), ...], batch_size=32)
    result.labels, result.probabilities   # label index per pair, P(label) per pair and label
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bundle import BundleError, Manifest, read_manifest, require_variant, verify_file, verify_variant
from .devices import LEDGER, DeviceError, plan_device
from .errors import PairbertError
from .tokenization import PairEncoder

log = logging.getLogger(__name__)

CPU_PREFERENCE = ("int8", "optimized", "fp32")
# Padded tokens per run (8 pairs of 128 tokens). Measured on the MiniLM default, 2 cores: 128 pairs of 128
# tokens took 2,261 ms and peaked at 748 MB RSS in one run, 1,713 ms and 295 MB split at 1,024 tokens;
# batch-1 and batch-32 short-pair throughput are unchanged (benchmarks/results, README).
DEFAULT_MAX_BATCH_TOKENS = 1024
CPU_ARENA_MODES = ("off", "shrink", "keep")
CUDA_PREFERENCE = ("fp16", "optimized", "fp32")


class PredictorError(PairbertError, ValueError):
    """Bad input or a bad request to the predictor, with what was wrong."""


@dataclass(frozen=True)
class Prediction:
    labels: np.ndarray  # int64 [n]: index into label_names
    probabilities: np.ndarray  # float32 [n, num_labels]
    label_names: tuple[str, ...]

    @property
    def match_probability(self) -> np.ndarray:
        """P(the answer fits the question) for each pair."""
        return self.probabilities[:, -1]

    def __len__(self) -> int:
        return len(self.labels)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32 (the one copy: export and benchmarks use it too)."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def _check_text(value: object, index: int, field: str) -> str:
    if not isinstance(value, str):
        raise PredictorError(f"pair {index}: {field} must be a str, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PredictorError(
            f"pair {index}: {field} is not valid Unicode ({exc.reason} at position {exc.start})"
        ) from None
    return value


def _choose_variant(manifest: Manifest, variant: str, device: str, bundle: Path) -> str:
    if variant != "auto":
        require_variant(bundle, manifest, variant)
        return variant
    for name in CUDA_PREFERENCE if device == "cuda" else CPU_PREFERENCE:
        info = manifest.variants.get(name)
        if info is not None and info.passed_parity:
            return name
    raise BundleError(f"{bundle}: no variant that passed its parity gate (has: {', '.join(manifest.variants)})")


def bucketed_batches(lengths: Sequence[int], batch_size: int, max_tokens: int | None) -> list[list[int]]:
    """Indices sorted by length, cut into batches of at most `batch_size` pairs and (when given) at most
    `max_tokens` padded tokens, so activation memory stays bounded whatever the caller's batch size."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:  # ascending: the pair being added is the batch's longest
        if current and (len(current) >= batch_size or max_tokens and (len(current) + 1) * lengths[i] > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


class PairClassifier:
    def __init__(self, session, encoder: PairEncoder, manifest: Manifest, variant: str, device: str, threads: int,
                 cpu_arena: str = "off", max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS):
        self.session = session
        self.encoder = encoder
        self.manifest = manifest
        self.variant = variant
        self.device = device
        self.threads = threads
        self.label_names = tuple(manifest.labels)
        declared = {i.name for i in session.get_inputs()}
        # Feed only what the graph declares, so one predictor serves graphs that differ slightly.
        self._input_names = [n for n in manifest.contract.input_names if n in declared]
        self._output_names = manifest.contract.output_names
        self.max_batch_tokens = max_batch_tokens
        self.cpu_arena = cpu_arena
        self._run_options = None
        if cpu_arena == "shrink" and device == "cpu":
            import onnxruntime as ort

            # Hand the arena's unused chunks back after each run (fragmentation still creeps: see README).
            self._run_options = ort.RunOptions()
            self._run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self._finalizer = weakref.finalize(self, LEDGER.release, threads)

    @classmethod
    def load(
        cls, bundle: str | Path, variant: str = "auto", device: str = "auto", threads: int | None = None,
        allow_fallback: bool = False, verify: bool = True, cpu_arena: str = "off",
        max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS,
    ) -> PairClassifier:
        """Open a bundle. `device`: "auto" (CUDA when it really runs), "cpu" or "cuda".

        Asking for "cuda" where it cannot run raises DeviceError unless `allow_fallback`.
        `max_batch_tokens` caps padded tokens per ONNX Runtime run (None: only `batch_size` limits a run).
        `cpu_arena`: "off" (default: each run's buffers go back to the allocator; RSS stays flat over
        varied shapes), "shrink" (ORT's arena, unused chunks handed back after each run) or "keep" (ORT's
        default arena, which keeps what the largest batch needed).
        """
        import onnxruntime as ort

        if threads is not None and threads < 1:
            raise PredictorError(f"threads must be at least 1, got {threads}")
        if cpu_arena not in CPU_ARENA_MODES:
            raise PredictorError(f"cpu_arena must be one of {', '.join(CPU_ARENA_MODES)}, got {cpu_arena!r}")
        bundle = Path(bundle)
        manifest = read_manifest(bundle)
        try:
            plan = plan_device(device)
        except DeviceError:
            if not allow_fallback:
                raise
            log.warning("CUDA unavailable; falling back to the CPU as allowed")
            plan = plan_device("cpu")
        name = _choose_variant(manifest, variant, plan.device, bundle)
        if verify:
            path = verify_variant(bundle, manifest, name)
            verify_file(bundle, manifest.tokenizer_file, manifest.tokenizer_sha256)
        else:
            path = bundle / manifest.variants[name].file
        claimed = LEDGER.claim(threads)
        try:
            options = ort.SessionOptions()
            options.intra_op_num_threads = claimed
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # Shapes vary call to call: a memory pattern planned for one shape is waste for the next.
            options.enable_mem_pattern = False
            options.enable_cpu_mem_arena = cpu_arena != "off"
            options.log_severity_level = 3
            if LEDGER.claimed > claimed:  # other predictors live here: don't burn their cores spinning
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            try:
                session = ort.InferenceSession(str(path), options, providers=list(plan.providers))
                active = session.get_providers()[0]
            except Exception as exc:
                if plan.device != "cuda":
                    raise BundleError(f"{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0]})") from None
                session, active = None, f"an error ({str(exc).splitlines()[0]})"
            if plan.device == "cuda" and active != "CUDAExecutionProvider":
                # The CUDA provider is installed but does not really run here (no GPU, missing libraries).
                if device == "cuda" and not allow_fallback:
                    raise DeviceError(f"CUDA was asked for but the session got {active}; pass allow_fallback=True "
                                      "to run on the CPU")
                log.warning("CUDA does not run here (%s); loading the CPU variant instead", active)
                session = None
            else:
                log.info("pairbert predictor: variant %s on %s (%d threads)", name, active, claimed)
                encoder = PairEncoder.from_file(bundle / manifest.tokenizer_file, manifest.max_length)
        except BaseException:
            LEDGER.release(claimed)
            raise
        if session is None:
            LEDGER.release(claimed)
            return cls.load(bundle, variant, "cpu", threads, allow_fallback, verify, cpu_arena, max_batch_tokens)
        return cls(session, encoder, manifest, name, plan.device, claimed, cpu_arena, max_batch_tokens)

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def predict(self, pairs: Iterable[Sequence[str]], batch_size: int = 32) -> Prediction:
        """Classify (question, answer) pairs. Batches are length-bucketed; results keep the input order."""
        if isinstance(pairs, (str, bytes)) or pairs is None:
            raise PredictorError("pairs must be a sequence of (question, answer) tuples")
        questions, answers = [], []
        for i, pair in enumerate(pairs):
            if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
                raise PredictorError(f"pair {i}: expected a (question, answer) pair, got {type(pair).__name__}")
            questions.append(_check_text(pair[0], i, "question"))
            answers.append(_check_text(pair[1], i, "answer"))
        return self._predict(questions, answers, batch_size)

    def predict_qa(self, questions: Sequence[str], answers: Sequence[str], batch_size: int = 32) -> Prediction:
        if isinstance(questions, str) or isinstance(answers, str):
            raise PredictorError("questions and answers must be sequences of str, not a single str")
        questions, answers = list(questions), list(answers)
        if len(questions) != len(answers):
            raise PredictorError(f"{len(questions)} questions but {len(answers)} answers")
        for i, (q, a) in enumerate(zip(questions, answers)):
            _check_text(q, i, "question")
            _check_text(a, i, "answer")
        return self._predict(questions, answers, batch_size)

    def _predict(self, questions: list[str], answers: list[str], batch_size: int) -> Prediction:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise PredictorError(f"batch_size must be a positive int, got {batch_size!r}")
        n = len(questions)
        num_labels = len(self.label_names)
        if n == 0:
            return Prediction(np.zeros(0, np.int64), np.zeros((0, num_labels), np.float32), self.label_names)
        qa, aq = self.encoder.tokenize(questions, answers)
        logits = np.empty((n, num_labels), dtype=np.float32)
        lengths = [len(e.ids) for e in qa]
        for idx in bucketed_batches(lengths, batch_size, self.max_batch_tokens):
            feed = self.encoder.collate([qa[i] for i in idx], [aq[i] for i in idx])
            logits[idx] = self._run(feed)
        probabilities = softmax(logits)
        return Prediction(probabilities.argmax(-1).astype(np.int64), probabilities, self.label_names)

    def _run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        if self.device == "cuda":
            binding = self.session.io_binding()
            for name in self._input_names:
                binding.bind_cpu_input(name, feed[name])
            for name in self._output_names:
                binding.bind_output(name, "cuda")
            self.session.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()[0]
        return self.session.run(self._output_names, {k: feed[k] for k in self._input_names}, self._run_options)[0]

    def rank(self, query: str, texts: Sequence[str], top_k: int | None = None,
             batch_size: int = 32) -> list[tuple[int, float]]:
        """Rerank `texts` against `query`: (index into texts, match probability) pairs, best first (ties keep
        the input order), at most `top_k` of them."""
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise PredictorError("texts must be a sequence of str, not a single str")
        if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0):
            raise PredictorError(f"top_k must be a non-negative int or None, got {top_k!r}")
        _check_text(query, 0, "query")
        scores = self.predict([(query, text) for text in texts], batch_size=batch_size).match_probability
        order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
        return [(i, float(scores[i])) for i in order[:top_k]]
