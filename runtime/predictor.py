"""The predictor services embed: bundle in, labels and probabilities out. onnxruntime + numpy + tokenizers.

clf = PairClassifier.load("bundle/")
result = clf.predict([("question", "answer"), ...], batch_size=32)
result.labels, result.probabilities   # label index per pair, P(label) per pair and label
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable, Sequence, Set
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from numbers import Integral
from pathlib import Path

import numpy as np
from tokenizers import Encoding

from . import atomic_dir, calibration, sessions
from .answer_check import AnswerMismatch, check_answers, feed_problem
from .bundle import (
    MANIFEST_FILE,
    BundleError,
    Manifest,
    bundle_encoder,
    check_listed_files,
    checksum_mismatch,
    listed_path,
    read_manifest,
    read_verified,
    require_variant,
)
from .contract import GraphContract, TensorSpec, orders_batched_apart, orders_padded_apart
from .devices import LEDGER, DeviceError, DevicePlan, int8_overflows_here, plan_device
from .errors import PairbertError, first_line, killed_by
from .external_weights import CopyFailed, ExternalWeights, PrivateCopy, WeightsFolder
from .ort import GPU_LIBS_INSTALL
from .sessions import (
    BACKENDS,
    CPU_ARENA_MODES,
    CUDA_PROVIDER,
    ONNXRUNTIME,
    OPENVINO,
    OPENVINO_EXTRA,
    BackendError,
    BackendUnavailable,
    SessionClosed,
    SessionSettings,
    open_session,
    openvino_available,
    weights_folder_supported,
)
from .tokenization import PairEncoder, TokenizerError, Tokens
from .variants import (
    AUTO_MIN_AGREEMENT,
    BACKEND,
    BY_NAME_ONLY,
    DEVICES,
    OPENVINO_PRECISION,
    STATIC_PREFERENCE,
    variant_key,
)

log = logging.getLogger(__name__)

# Padded tokens per run (8 pairs of 128 tokens). Measured on the MiniLM default, 2 cores: 128 pairs of 128
# tokens took 2,261 ms and peaked at 748 MB RSS in one run, 1,713 ms and 295 MB split at 1,024 tokens;
# batch-1 and batch-32 short-pair throughput are unchanged (benchmarks/results, README).
DEFAULT_MAX_BATCH_TOKENS = 1024
# Pairs tokenized at a time in one predict call (their Tokens are 2-12 kB a pair while held): 50,000
# pairs of 56 tokens in one call peaked at 813 MB when all were tokenized up front.
TOKENIZE_SLICE = 4096
# A question in at least this many pairs of a call (or in all of them) is fed once for them, as runs of its
# own: smaller groups beside other pairs lose more to the extra runs than the question's rows cost. An
# OpenVINO run has a higher fixed cost than an ONNX Runtime one, so ONNX Runtime on the CPU groups from 4
# (`python -m pairbert.benchmarks.shared_question_threshold BUNDLE --variant V --threads 2`, calls of 32 or
# 48 pairs, grouped against every row fed, AMD EPYC Zen 5; 2 / 3 / 4 / 6 / 8 texts a question: `optimized`
# 0.96 / 0.99 / 1.18 / 1.16 / 1.33×, fp32 1.01 / 1.10 / 1.22 / 1.19 / 1.31×, int8 0.98 / 1.06 / 1.18 / 1.20
# / 1.37×, `openvino-bf16` 0.61 / 0.75 / 0.86 / 0.95 / 1.11×). CUDA keeps 8 (not measured there; graph
# replays never group).
SHARED_QUESTION_PAIRS = 8
SHARED_QUESTION_PAIRS_ORT_CPU = 4


def shared_question_pairs(backend: str, device: str) -> int:
    """How many pairs of a call must share a question for it to be fed once (when not all of them do)."""
    if backend == ONNXRUNTIME and device == "cpu":
        return SHARED_QUESTION_PAIRS_ORT_CPU
    return SHARED_QUESTION_PAIRS


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


def _check_text(value: object, index: int | None, field: str) -> str:
    """`value` if it is a valid str; else an error naming `field` (of pair `index`, when given)."""
    where = field if index is None else f"pair {index}: {field}"
    if not isinstance(value, str):
        raise PredictorError(f"{where} must be a str, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PredictorError(f"{where} is not valid Unicode ({exc.reason} at position {exc.start})") from None
    return value


def _encodings(value: object, name: str) -> list[Tokens | Encoding]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise PredictorError(f"{name} must be a list of encodings, got {type(value).__name__}")
    items = list(value)
    for index, item in enumerate(items):
        if not isinstance(item, (Tokens, Encoding)):
            raise PredictorError(
                f"{name}[{index}] must be the Tokens made by clf.encoder.tokenize, got {type(item).__name__}"
            )
    return items


SEGMENTS = 2  # BERT's token types: first and second segment (the pair template's type ids 0 and 1)


def _check_ids(feed: dict[str, np.ndarray], id_bound: int) -> None:
    """Every fed token id in [0, id_bound) and type id in [0, SEGMENTS): the graph's embedding tables would
    refuse others (ONNX Runtime) or silently read something (OpenVINO)."""
    for name, ids in feed.items():
        feature, bound = ("token id", id_bound) if name.endswith("input_ids") else ("token type", SEGMENTS)
        if (
            name.endswith(("input_ids", "token_type_ids"))
            and ids.size
            and (ids.min() < 0 or ids.max() >= bound)
        ):
            bad = int(ids.max()) if ids.max() >= bound else int(ids.min())
            raise PredictorError(
                f"the encodings hold {feature} {bad}, outside [0, {bound}) for this bundle: encode the texts "
                "with this classifier's own clf.encoder.tokenize"
            )


def _batch_size(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, Integral) or batch_size < 1:
        raise PredictorError(
            f"batch_size must be a positive int, got {type(batch_size).__name__} {batch_size!r}"
        )
    return int(batch_size)


def bucketed_batches(lengths: Sequence[int], batch_size: int, max_tokens: int | None) -> list[list[int]]:
    """Indices sorted by length, cut into batches of at most `batch_size` pairs and (when given) at most
    `max_tokens` padded tokens, so activation memory stays bounded whatever the caller's batch size."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:  # ascending: the pair being added is the batch's longest
        if current and (
            len(current) >= batch_size or max_tokens and (len(current) + 1) * lengths[i] > max_tokens
        ):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def shared_question_groups(qa: Sequence, encoder: PairEncoder, least: int) -> list[list[int]]:
    """Indices of the pairs whose question-first encodings feed the same tokens, for each such group of at
    least `least` pairs (a rerank's texts under its one query, or a run's pairs that repeat a question)."""
    groups: dict[tuple, list[int]] = {}
    for i, encoding in enumerate(qa):
        n = encoder.kept_length(encoding)
        groups.setdefault((tuple(encoding.ids[:n]), tuple(encoding.type_ids[:n])), []).append(i)
    return [group for group in groups.values() if len(group) >= least]


THREADS_PER_CPU = 4  # more intra-op threads than this per usable CPU is refused (512 on 2 took 87 s)


def usable_cpus() -> int:
    """Logical CPUs this process may run on (its affinity mask; the CPU count where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def max_threads() -> int:
    """The most intra-op threads `PairClassifier.load` accepts: THREADS_PER_CPU per usable CPU."""
    return THREADS_PER_CPU * usable_cpus()


@dataclass(frozen=True)
class _Request:
    """What `load` was asked for, checked once."""

    variant: str
    device: str
    backend: str
    threads: int | None
    allow_fallback: bool
    verify: bool
    cpu_arena: str
    max_batch_tokens: int | None
    calibrate: bool
    cuda_graphs: bool = True

    def check(self) -> None:
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, Integral) or self.threads < 1
        ):
            raise PredictorError(f"threads must be a positive int or None, got {self.threads!r}")
        if self.threads is not None and self.threads > max_threads():
            raise PredictorError(
                f"threads={self.threads} is more than {THREADS_PER_CPU} per CPU this process may use "
                f"({usable_cpus()}); the threads would only compete (at most {max_threads()})"
            )
        if self.cpu_arena not in CPU_ARENA_MODES:
            raise PredictorError(
                f"cpu_arena must be one of {', '.join(CPU_ARENA_MODES)}, got {self.cpu_arena!r}"
            )
        if self.backend not in ("auto", *BACKENDS):
            raise PredictorError(
                f"backend must be 'auto' or one of {', '.join(BACKENDS)}, got {self.backend!r}"
            )
        if not isinstance(self.variant, str):
            raise PredictorError(f"variant must be a str ('auto' or a variant name), got {self.variant!r}")
        for name in ("allow_fallback", "verify", "calibrate", "cuda_graphs"):
            if not isinstance(getattr(self, name), bool):
                raise PredictorError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.max_batch_tokens is not None and (
            isinstance(self.max_batch_tokens, bool)
            or not isinstance(self.max_batch_tokens, Integral)
            or self.max_batch_tokens < 1
        ):
            raise PredictorError(
                f"max_batch_tokens must be a positive int or None, got {self.max_batch_tokens!r}"
            )
        if self.backend == OPENVINO and not openvino_available():
            raise BackendError(
                f"backend 'openvino' asked for, but OpenVINO is not installed: {OPENVINO_EXTRA}"
            )


def candidates(manifest: Manifest, device: str, backend: str) -> list[str]:
    """Variants `auto` may choose on `device`: passed their parity gate, runnable here, of the asked
    backend, not BY_NAME_ONLY; in the fixed order."""
    names = []
    for name, info in manifest.variants.items():
        kind = BACKEND.get(name)
        if kind is None or not info.passed_parity or device not in DEVICES[name] or name in BY_NAME_ONLY:
            continue
        if backend not in ("auto", kind) or (kind == OPENVINO and not openvino_available()):
            continue
        names.append(name)
    preference = STATIC_PREFERENCE[device]
    return sorted(names, key=lambda n: preference.index(n) if n in preference else len(preference))


def _overflows_here(name: str, info) -> bool:
    """An int8 variant with 8-bit signed weights (exported before they became 7-bit), on a CPU that overflows
    them: its gate, measured elsewhere, does not hold here. (Unsigned weights take a kernel that does not
    overflow.)"""
    if name != "int8" or "reducerange" in info.notes or "int8 options: QUInt8" in info.notes:
        return False
    return int8_overflows_here()


def candidate_tiers(manifest: Manifest, device: str, backend: str) -> list[list[str]]:
    """The candidates in the order `auto` tries them, tier after tier while none of a tier can run here:
    those whose labels agreed with torch on at least AUTO_MIN_AGREEMENT of the gate's pairs, the others, and
    last an int8 variant whose 8-bit weights overflow on this CPU (`_overflows_here`)."""
    names = candidates(manifest, device, backend)
    overflowing = [n for n in names if _overflows_here(n, manifest.variants[n])]
    names = [n for n in names if n not in overflowing]
    agreeing = [n for n in names if _agreement(manifest.variants[n]) >= AUTO_MIN_AGREEMENT]
    tiers = (agreeing, [n for n in names if n not in agreeing], overflowing)
    return [tier for tier in tiers if tier]


def _agreement(info) -> float:
    """The gate's label agreement as recorded, or 0.0 for anything that is not a fraction in [0, 1] (a gate
    on logits records 1.0; none recorded counts as 1.0)."""
    value = info.parity.get("label_agreement", 1.0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    try:
        value = float(value)
    except OverflowError:
        return 0.0
    return value if 0.0 <= value <= 1.0 else 0.0  # (NaN fails both comparisons)


class PairClassifier:
    """Classifies (question, answer) pairs with a bundle. Use `load`; `close()` (or a `with` block) hands the
    threads back at once instead of at garbage collection."""

    def __init__(
        self,
        session,
        encoder: PairEncoder,
        manifest: Manifest,
        variant: str,
        device: str,
        threads: int,
        max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS,
        choice: dict | None = None,
    ):
        self.session = session
        self.encoder = encoder
        self.manifest = manifest
        self.variant = variant
        self.device = device
        self.threads = threads
        self.label_names = tuple(manifest.labels)
        self.max_batch_tokens = max_batch_tokens
        self.choice = choice or {"how": "asked"}  # how the variant was chosen (and the timings, if measured)
        # Pairs sharing a question feed it once where the graph allows: the towers' question branch reads
        # the question alone, and the head's elementwise product broadcasts one question over the answers.
        # Not where CUDA graphs replay: a replay repeats the row to the bucket's batch anyway.
        self._shares_questions = (
            encoder.feed == "first-segment"
            and encoder.apart
            and orders_batched_apart(manifest.contract)
            and getattr(session, "graphs", None) is None
        )
        self._question_once = self._shares_questions
        self._shared_question_pairs = shared_question_pairs(session.backend, device)
        self._finalizer = weakref.finalize(self, LEDGER.release, threads)

    @classmethod
    def load(
        cls,
        bundle: str | Path,
        variant: str = "auto",
        device: str = "auto",
        threads: int | None = None,
        allow_fallback: bool = False,
        verify: bool = True,
        cpu_arena: str = "off",
        max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS,
        backend: str = "auto",
        calibrate: bool = True,
        cuda_graphs: bool = True,
    ) -> PairClassifier:
        """Open a bundle.

        `device`: "auto" (CUDA when it really runs), "cpu" or "cuda"; "cuda" where it cannot run raises
        DeviceError unless `allow_fallback`. `backend`: "auto", "onnxruntime" or "openvino" (CPU; needs
        `pairbert[openvino]`). `variant`: "auto" or a variant of the bundle (`clf.variant` says which runs).
        With `variant="auto"` and `calibrate=True`, the parity-passing candidates are timed once on this CPU
        and the fastest is remembered (see runtime/calibration.py); `calibrate=False` takes a fixed order.
        `max_batch_tokens` caps padded tokens per run (None: only `batch_size` limits a run).
        `cpu_arena` (ONNX Runtime): "off" (default: RSS stays flat over varied shapes), "shrink" or "keep".
        `cuda_graphs` (CUDA): replay a captured CUDA graph per padded shape (see runtime/cuda_graphs.py).
        `threads` (intra-op threads; None: the physical cores not held by other predictors here): more
        than 4 per logical CPU this process may use (`max_threads()`) is refused, as they would only
        compete (512 threads on 2 CPUs took 87 s for 2 pairs); more than the physical cores is allowed
        with a warning.
        """
        request = _Request(
            variant,
            device,
            backend,
            threads,
            allow_fallback,
            verify,
            cpu_arena,
            max_batch_tokens,
            calibrate,
            cuda_graphs,
        )
        request.check()
        if not isinstance(bundle, (str, os.PathLike)):
            raise PredictorError(f"bundle must be a folder path (str or Path), got {type(bundle).__name__}")
        bundle = atomic_dir.locate(Path(bundle))  # a complete copy, even if an export swap was interrupted
        manifest = read_manifest(bundle)
        check_listed_files(bundle, manifest)
        claimed = LEDGER.claim(threads)
        try:
            # Read once, check the sha256 of those bytes, hand the same bytes on: no time-of-check/use gap.
            encoder = bundle_encoder(bundle, manifest, verify)
            session, name, device, choice = _open_on_a_device(bundle, manifest, request, claimed, encoder)
        except BaseException:
            LEDGER.release(claimed)
            raise
        log.info("pairbert predictor: variant %s on %s (%d threads)", name, session.provider, claimed)
        return cls(session, encoder, manifest, name, device, claimed, max_batch_tokens, choice)

    @property
    def shared_question_pairs(self) -> int:
        """How many pairs of a call (or server run) must share a question for it to be fed once when not all
        of them do: 4 with ONNX Runtime on the CPU, else 8 (measured, SHARED_QUESTION_PAIRS). Settable."""
        return self._shared_question_pairs

    @shared_question_pairs.setter
    def shared_question_pairs(self, pairs: int) -> None:
        if isinstance(pairs, bool) or not isinstance(pairs, Integral) or pairs < 2:
            raise PredictorError(f"shared_question_pairs must be an int of at least 2, got {pairs!r:.40}")
        self._shared_question_pairs = int(pairs)

    @property
    def question_once(self) -> bool:
        """Whether pairs that share a question feed it once (README, *One question, fed once*): True where
        the bundle's graph allows it. Set it to False to feed every pair's row (a benchmark's baseline)."""
        return self._question_once

    @question_once.setter
    def question_once(self, on: bool) -> None:
        if not isinstance(on, bool):
            raise PredictorError(f"question_once must be True or False, got {type(on).__name__} {on!r:.40}")
        if on and not self._shares_questions:
            raise PredictorError(
                f"variant {self.variant} cannot feed one question row for many answers (a cross-encoding "
                "bundle, one exported with one batch axis for both orders, or CUDA graph replay)"
            )
        self._question_once = on

    @property
    def provider(self) -> str:
        return self.session.provider

    @property
    def backend(self) -> str:
        return self.session.backend

    def close(self) -> None:
        """Release the session and hand this predictor's threads back (idempotent)."""
        if self._finalizer.alive:
            self._finalizer()
        if self.session is not None:
            self.session.close()

    def __enter__(self) -> PairClassifier:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def predict(self, pairs: Iterable[Sequence[str]], batch_size: int = 32) -> Prediction:
        """Classify (question, answer) pairs. Batches are length-bucketed; results keep the input order."""
        if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Iterable):
            raise PredictorError(
                f"pairs must be a sequence of (question, answer) tuples, got {type(pairs).__name__}"
            )
        questions, answers = [], []
        for i, pair in enumerate(pairs):
            if isinstance(pair, np.ndarray) and pair.ndim == 1:  # a row of a 2-column array of pairs
                pair = tuple(pair.tolist())
            if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
                raise PredictorError(
                    f"pair {i}: expected a (question, answer) pair, got {type(pair).__name__}"
                )
            questions.append(_check_text(pair[0], i, "question"))
            answers.append(_check_text(pair[1], i, "answer"))
        return self._predict(questions, answers, batch_size)

    def predict_qa(
        self, questions: Sequence[str], answers: Sequence[str], batch_size: int = 32
    ) -> Prediction:
        for name, value in (("questions", questions), ("answers", answers)):
            if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
                raise PredictorError(f"{name} must be a sequence of str, got {type(value).__name__}")
        questions, answers = list(questions), list(answers)
        if len(questions) != len(answers):
            raise PredictorError(f"{len(questions)} questions but {len(answers)} answers")
        for i, (q, a) in enumerate(zip(questions, answers, strict=True)):
            _check_text(q, i, "question")
            _check_text(a, i, "answer")
        return self._predict(questions, answers, batch_size)

    def predict_encoded(self, qa: Sequence, aq: Sequence, batch_size: int = 32) -> Prediction:
        """Classify pairs already tokenized by `self.encoder.tokenize(questions, answers)` (both orders).
        A server tokenizes each request once on arrival (it needs the token counts to size its batches)
        and hands the encodings here instead of tokenizing the same texts a second time. Anything else (a
        list of ids, another tokenizer's encodings with ids past this bundle's vocabulary) is refused."""
        qa, aq = _encodings(qa, "qa"), _encodings(aq, "aq")
        if len(qa) != len(aq):
            raise PredictorError(f"{len(qa)} question-first encodings but {len(aq)} answer-first ones")
        batch_size = _batch_size(batch_size)
        return self._prediction(self._logits(qa, aq, batch_size, self.encoder.id_bound))

    def _predict(self, questions: list[str], answers: list[str], batch_size: int) -> Prediction:
        """Tokenized and run TOKENIZE_SLICE pairs at a time: a call's memory beyond its texts and results
        stays that of one slice's tokens (2-12 kB a pair while held), however many pairs it has."""
        batch_size = _batch_size(batch_size)
        logits = np.empty((len(questions), len(self.label_names)), dtype=np.float32)
        for start in range(0, len(questions), TOKENIZE_SLICE):
            stop = start + TOKENIZE_SLICE
            try:
                qa, aq = self.encoder.tokenize(questions[start:stop], answers[start:stop])
            except TokenizerError as exc:
                raise PredictorError(str(exc)) from None
            logits[start:stop] = self._logits(qa, aq, batch_size)
        return self._prediction(logits)

    def _logits(self, qa: list, aq: list, batch_size: int, id_bound: int | None = None) -> np.ndarray:
        """With `id_bound`, the fed ids are checked first (encodings from outside: `_check_ids`)."""
        logits = np.empty((len(qa), len(self.label_names)), dtype=np.float32)
        for idx, one_question in self._batches(qa, aq, batch_size):
            feed = self.encoder.collate(
                [qa[idx[0]]] if one_question else [qa[i] for i in idx], [aq[i] for i in idx]
            )
            if id_bound is not None:
                _check_ids(feed, id_bound)
            logits[idx] = self._run(feed)
        return logits

    def _batches(self, qa: list, aq: list, batch_size: int):
        """(pair indices, whether they share one question fed once) for each run: the pairs of a question
        shared by at least `shared_question_pairs` of them or by all (when `question_once`) bucketed by answer
        length, then the others bucketed by the longer order's length."""
        least = min(self._shared_question_pairs, max(2, len(qa)))
        groups = shared_question_groups(qa, self.encoder, least) if self._question_once else []
        for group in groups:
            lengths = [self.encoder.kept_length(aq[i]) for i in group]
            for idx in bucketed_batches(lengths, batch_size, self.max_batch_tokens):
                yield [group[j] for j in idx], True
        taken = {i for group in groups for i in group}
        rest = [i for i in range(len(qa)) if i not in taken] if taken else range(len(qa))
        lengths = [self.encoder.fed_length(qa[i], aq[i]) for i in rest]
        for idx in bucketed_batches(lengths, batch_size, self.max_batch_tokens):
            yield [rest[j] for j in idx], False

    def _prediction(self, logits: np.ndarray) -> Prediction:
        probabilities = softmax(logits)  # (0, labels) for no pairs
        return Prediction(probabilities.argmax(-1).astype(np.int64), probabilities, self.label_names)

    def _run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        try:
            return self.session.run(feed)
        except SessionClosed:
            raise PredictorError("this PairClassifier is closed; load the bundle again") from None
        except BackendError as exc:  # a graph that cannot run these inputs: one line, not the library's
            raise type(exc)(f"variant {self.variant}: {exc}") from None

    def rank(
        self, query: str, texts: Iterable[str], top_k: int | None = None, batch_size: int = 32
    ) -> list[tuple[int, float]]:
        """Rerank `texts` (any iterable of str, read once) against `query`: (index into texts, match
        probability) pairs, best first (ties keep the input order), at most `top_k` of them."""
        if isinstance(texts, (str, bytes)):
            raise PredictorError(f"texts must be a list of str, not a single {type(texts).__name__}")
        if not isinstance(texts, Iterable):
            raise PredictorError(f"texts must be a list of str, got {type(texts).__name__}")
        if isinstance(texts, Set):  # the returned indices would point into no order
            raise PredictorError(
                f"texts must be a list of str, not a {type(texts).__name__} (it has no order)"
            )
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, Integral) or top_k < 0):
            raise PredictorError(
                f"top_k must be a non-negative int or None, got {type(top_k).__name__} {top_k!r}"
            )
        _check_text(query, None, "query")
        texts = list(texts)  # any iterable of str: a list, a generator, a 1-d numpy array of str
        for i, text in enumerate(texts):
            _check_text(text, None, f"texts[{i}]")
        # checked above, with their names: straight to the shared path (predict would check them again)
        scores = self._predict([query] * len(texts), texts, batch_size).match_probability
        top_k = None if top_k is None else int(top_k)
        order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
        return [(i, float(scores[i])) for i in order[:top_k]]


def _device_plans(request: _Request) -> list[DevicePlan]:
    """CUDA first where it may run (then the CPU when allowed or when CUDA was only "auto"), else the CPU."""
    if request.backend == OPENVINO:
        if request.device == "cuda":
            raise DeviceError("backend 'openvino' runs on the CPU; use device='cpu' or backend='onnxruntime'")
        return [plan_device("cpu")]
    try:
        plan = plan_device(request.device)
    except DeviceError:
        if not request.allow_fallback:
            raise
        log.warning("CUDA unavailable; falling back to the CPU as allowed")
        return [plan_device("cpu")]
    return [plan, plan_device("cpu")] if plan.device == "cuda" else [plan]


def _settings(plan: DevicePlan, request: _Request, threads: int, name: str) -> SessionSettings:
    return SessionSettings(
        threads=threads,
        device=plan.device,
        cpu_arena=request.cpu_arena,
        spinning=LEDGER.claimed <= threads,  # other predictors live here: don't burn their cores spinning
        precision=OPENVINO_PRECISION.get(name, "f32"),
        cache_dir=_openvino_cache(name),
        cuda_graphs=request.cuda_graphs,
    )


def _openvino_cache(name: str) -> str | None:
    """OpenVINO's compiled-model cache folder for variant `name`, or None; one folder per inference
    precision, since OpenVINO's cache key leaves the precision out (an fp32 load would import a bf16 blob of
    the same graph). bf16 only where OpenVINO maps the weights (POSIX): on an AMX machine (Xeon family 6
    model 207) the loads that imported a cached bf16 blob while reading the weights in (ENABLE_MMAP off)
    crashed ("double free or corruption") or answered 50 % of 40 pairs; with the weights mapped, three
    imports on the same CPU model answered bit for bit like a fresh compile (README: OpenVINO on AMX).
    Not for openvino-int8 (its cached import has not been checked on such a machine) nor, where the
    weights are read (Windows), for bf16: those compile at every load. Every load still checks its
    answers, and `auto` measures and soaks a cached candidate as imported (`_open_as_later_loads`)."""
    if BACKEND.get(name) != OPENVINO or name in NO_MODEL_CACHE:
        return None
    precision = OPENVINO_PRECISION.get(name, "f32")
    if precision != "f32" and not sessions.MAPPED_FILES_REMOVABLE:
        return None
    folder = calibration.openvino_cache_dir(precision)
    return None if folder is None else str(folder)


NO_MODEL_CACHE = ("openvino-int8",)


def _open_as_later_loads(
    bundle: Path, manifest: Manifest, name: str, plan: DevicePlan, request: _Request, threads: int
):
    """_open_variant, as every later load will run it: an OpenVINO candidate that was just compiled into
    the model cache is opened again, so what `auto` times and soaks is the blob later loads import (not
    when no blob was written: later loads compile too, as this one did)."""
    cache = _openvino_cache(name) if plan.device == "cpu" else None
    before = _blobs(cache)
    session = _open_variant(bundle, manifest, name, plan, request, threads)
    if getattr(session, "backend", None) != OPENVINO or session.loaded_from_cache or _blobs(cache) == before:
        return session
    session.close()
    return _open_variant(bundle, manifest, name, plan, request, threads)


def _blobs(folder: str | None) -> dict[str, int]:
    """The compiled models in an OpenVINO cache folder, by name, with their modification times."""
    if folder is None:
        return {}
    try:
        return {e.name: e.stat().st_mtime_ns for e in os.scandir(folder) if e.name.endswith(".blob")}
    except OSError:
        return {}


def _open_variant(
    bundle: Path, manifest: Manifest, name: str, plan: DevicePlan, request: _Request, threads: int
):
    info = manifest.variants[name]
    settings = _settings(plan, request, threads, name)
    try:
        with sessions.backend_imported_meanwhile(BACKEND[name]):  # while the weights are copied and hashed
            session = _open_checked(bundle, info, name, settings, request.verify)
    except BackendUnavailable:
        raise  # the environment, not the bundle: `auto` tries the other candidates
    except BackendError as exc:
        raise BundleError(f"{bundle / info.file}: {exc}") from None
    graph = bundle / info.file
    _check_apart(graph, session, manifest.contract)  # the graph is what the manifest
    _check_labels(graph, session, manifest)  # says, before it is run (each closes the session it refuses)
    try:  # answers as at export (AnswerMismatch: computed differently here; `auto` tries the others)
        moved = check_answers(session, manifest.answer_check, name, info.precision)
    except BackendUnavailable:
        session.close()
        raise
    except (BackendError, KeyError, ValueError) as exc:  # a graph that cannot take the manifest's batch
        session.close()
        raise BundleError(f"{graph}: the answer check cannot run ({first_line(exc)})") from None
    except BaseException:
        session.close()
        raise
    if moved is not None:
        log.info("%s: check pairs answered as at export (max |Δprob| %.2g)", name, moved)
    return session


def _open_checked(bundle: Path, info, name: str, settings: SessionSettings, verify: bool):
    """A session over the variant's files, built from copies nobody else can change, each hashed once. Weight
    files are copied into a private folder the backend then opens (`_open_from_private_copy`); without
    room for one, on Windows, or with an ONNX Runtime that cannot take a folder, they are read into memory
    and handed over as verified bytes (`_open_from_memory`: slower, and more memory while it builds)."""
    graph = read_verified(bundle, info.file, None)
    listed = dict(zip(info.external_data, info.external_sha256, strict=True))
    if listed and verify:  # the graph is small when its weights lie beside it: checked here and now
        _check_digest(bundle / info.file, info.sha256, hashlib.sha256(graph).hexdigest())
    if listed and weights_folder_supported(BACKEND[name]):
        try:
            return _open_from_private_copy(bundle, name, settings, verify, graph, listed)
        except CopyFailed as exc:
            log.info("no private copy of the weights (%s): reading them into memory", exc)
    return _open_from_memory(bundle, info, name, settings, verify, graph, listed)


def _open_from_private_copy(bundle: Path, name: str, settings, verify: bool, graph: bytes, listed: dict):
    """The kernel copies the weight files into a private folder (runtime/external_weights.py) while a second
    thread hashes each copy as it grows; the backend maps the copies while the hashing finishes (hashlib
    lets go of the GIL). The session is handed out only once every digest matches the manifest (on a
    mismatch it is closed and the load fails, whatever the build made of the copies) and what it mapped is
    those very copies. CopyFailed: no copy could be made."""
    copy = PrivateCopy({file: listed_path(bundle, file) for file in listed})
    try:

        def copied() -> WeightsFolder:
            copy.copy()  # while the other thread hashes the copies as they grow
            return WeightsFolder(graph, copy.folder)

        session = _build_checked(
            copied,
            lambda: [(bundle / f, want, copy.sha256(f)) for f, want in listed.items() if verify],
            name,
            settings,
            stop=copy.abandon,
        )
        try:
            copy.settle()  # what was mapped is what was hashed; resident from the start
        except BaseException:
            session.close()
            raise
        return session
    finally:
        copy.remove()  # what the backend mapped lives on, unnamed, until the session closes


def _open_from_memory(bundle: Path, info, name: str, settings, verify: bool, graph: bytes, listed: dict):
    """The weight files read into memory and handed over as verified bytes (no room for a private copy)."""
    weights: dict[str, bytes] = {}
    read = threading.Event()

    def read_then_hash() -> list[tuple[Path, str, str]]:
        try:
            weights.update({file: read_verified(bundle, file, None) for file in listed})
            hashed = [(f, listed[f], weights[f]) for f in listed] or [(info.file, info.sha256, graph)]
        finally:
            read.set()  # the hashing starts right away, before the build below can take the GIL
        return [(bundle / f, want, hashlib.sha256(data).hexdigest()) for f, want, data in hashed if verify]

    def source():
        read.wait()  # (weights is incomplete if a read failed: the digests then say why)
        return ExternalWeights(graph, weights) if listed else graph

    return _build_checked(source, read_then_hash, name, settings)


def _build_checked(source, digests, name: str, settings: SessionSettings, stop=lambda: None):
    """Build a session from `source()` while a second thread computes `digests()` ((path, wanted, actual)
    triples); the session is handed out only if every digest matches. `stop()` releases the second thread
    when the build ends early (it may be waiting for bytes that will not come)."""
    backend = BACKEND[name]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pairbert-sha256") as pool:
        try:
            future = pool.submit(digests)
            session = open_session(backend, source(), settings)
        except Exception:
            stop()
            _check_all(future)  # a damaged file: say so, not what the parser hit
            raise
        except BaseException:  # an interrupt goes on as it is, once the second thread is released
            stop()
            raise
        try:
            _check_all(future)
        except BaseException:
            session.close()
            raise
    return session


def _check_apart(path: Path, session, contract: GraphContract) -> None:
    """A manifest saying the orders come at their own lengths (or batch sizes) must describe a graph that
    takes them so: ONNX Runtime plans its buffers on its axis names, and tied ones fail deep inside a run."""
    if session.backend != ONNXRUNTIME:
        return
    inputs = tuple(TensorSpec(i.name, i.type, tuple(i.shape)) for i in session.session.get_inputs())
    graph = GraphContract(inputs, ())
    for axis, what, apart in ((1, "sequence", orders_padded_apart), (0, "batch", orders_batched_apart)):
        if apart(contract) and not apart(graph):  # the manifest's rule, on the graph's own axes
            session.close()
            axes = sorted({spec.axes[axis] for spec in inputs if len(spec.axes) == 2}, key=str)
            raise BundleError(
                f"{path}: the manifest gives each order its own {what} axis but the graph's inputs have "
                f"{axes}; re-export the bundle"
            )


def _check_labels(path: Path, session, manifest: Manifest) -> None:
    """The graph gives one logit per label the manifest names (the manifest's own contract is checked
    against its labels when it is read; this checks the graph itself)."""
    width = session.output_width()
    if width is not None and width != len(manifest.labels):
        session.close()
        raise BundleError(
            f"{path}: the graph gives {width} logits per pair but the manifest names {len(manifest.labels)} "
            "labels; re-export the bundle"
        )


def _check_all(future) -> None:
    for args in future.result():
        _check_digest(*args)


def _check_digest(path: Path, expected: str, actual: str) -> None:
    if actual != expected:
        raise checksum_mismatch(path, expected, actual)


def _open_on_a_device(bundle: Path, manifest: Manifest, request: _Request, threads: int, encoder):
    """(session, variant, device, how it was chosen) on the first device plan that runs."""
    vocab = encoder.tokenizer.get_vocab_size()
    problem = feed_problem(manifest.answer_check, encoder.id_bound)  # the bound predict_encoded holds to
    if problem:
        raise BundleError(f"{bundle / MANIFEST_FILE}: field 'answer_check': {problem}")
    for plan in _device_plans(request):
        opened = _open(bundle, manifest, plan, request, threads, vocab)
        if opened is not None:
            session, name, choice = opened
            return session, name, plan.device, choice
    raise DeviceError("no device could run this bundle")  # pragma: no cover - the CPU plan opens or raises


def _open(bundle: Path, manifest: Manifest, plan: DevicePlan, request: _Request, threads: int, vocab: int):
    """(session, variant, how it was chosen) on `plan`'s device, or None when CUDA turns out not to run."""
    if request.variant != "auto":
        name = variant_key(request.backend, request.variant)
        if name not in manifest.variants and request.variant in manifest.variants:  # optimized on openvino
            raise PredictorError(
                f"variant {request.variant!r} runs on {BACKEND.get(request.variant)}, not on backend "
                f"{request.backend!r}"
            )
        info = require_variant(bundle, manifest, name)
        if name not in BACKEND:  # a name this pairbert has no runtime for (a newer export, a renamed file)
            raise BundleError(f"{bundle}: variant {name!r} is in this bundle but this pairbert cannot run it")
        if not info.passed_parity:
            log.warning(
                "variant %s did not pass its parity gate (%s): its results may differ from the model's",
                name,
                "not validated on this kind of machine" if info.validated_on == "none" else "forced",
            )
        elif _overflows_here(name, info):
            log.warning(
                "variant %s has 8-bit weights, which overflow on this CPU (no VNNI): its results may differ "
                "from its gate's; re-export the bundle for 7-bit weights",
                name,
            )
        if request.backend not in ("auto", BACKEND.get(name)):
            raise PredictorError(
                f"variant {name!r} runs on {BACKEND.get(name)}, not on backend {request.backend!r}"
            )
        return _on_cuda_or_none(
            plan, request, _open_variant(bundle, manifest, name, plan, request, threads), name, "asked"
        )
    tiers = candidate_tiers(manifest, plan.device, request.backend)
    if not tiers:
        by_name = [
            n
            for n, info in manifest.variants.items()
            if n in BY_NAME_ONLY
            and info.passed_parity
            and plan.device in DEVICES[n]
            and request.backend in ("auto", BACKEND[n])
        ]
        raise BundleError(
            f"{bundle}: no variant that passed its parity gate runs on {plan.device}"
            f"{'' if request.backend == 'auto' else ' with ' + request.backend} "
            f"(has: {', '.join(manifest.variants)})"
            + (f"; {', '.join(by_name)} loads only by name: variant={by_name[0]!r}" if by_name else "")
        )
    if len(tiers) > 1:
        log.info(
            "auto: tries %s (%s)",
            " before ".join(", ".join(t) for t in tiers),
            _tier_reasons(manifest, tiers),
        )
    for tier, names in enumerate(tiers):
        if _overflows_here(names[0], manifest.variants[names[0]]):
            log.warning("auto: %s has 8-bit weights, which overflow on this CPU; re-export it", names[0])
        try:
            return _open_first(bundle, manifest, names, plan, request, threads, vocab)
        except BackendUnavailable as exc:
            if tier == len(tiers) - 1:
                raise
            following = ", ".join(tiers[tier + 1])
            log.warning("auto: none of %s runs here (%s); trying %s", ", ".join(names), exc, following)
    raise AssertionError("unreachable")  # pragma: no cover


def _tier_reasons(manifest: Manifest, tiers: list[list[str]]) -> str:
    reasons = [f"labels agreeing on {AUTO_MIN_AGREEMENT:.1%} of the gate's pairs first"]
    if _overflows_here(tiers[-1][0], manifest.variants[tiers[-1][0]]):  # (such a tier is always the last)
        reasons.append("int8 with 8-bit weights, which overflow on this CPU, last")
    return "; ".join(reasons)


def _open_first(bundle: Path, manifest: Manifest, names: list[str], plan, request: _Request, threads, vocab):
    """The fastest of `names` (measured on the CPU), or the first that opens in their fixed order."""
    if request.calibrate and plan.device == "cpu" and len(names) > 1:
        return _calibrated(bundle, manifest, names, plan, request, threads, vocab)
    for index, name in enumerate(names):
        try:
            session = _open_variant(bundle, manifest, name, plan, request, threads)
        except BackendUnavailable as exc:
            if index == len(names) - 1:
                raise
            log.warning("auto: %s skipped (%s)", name, exc)
            continue
        return _on_cuda_or_none(plan, request, session, name, "fixed order")
    raise AssertionError("unreachable")  # pragma: no cover


def _on_cuda_or_none(plan: DevicePlan, request: _Request, session, name: str, how: str):
    """(session, name, choice), or None when a CUDA plan's session does not really run on CUDA."""
    if plan.device == "cuda" and session.provider != CUDA_PROVIDER:
        # The CUDA provider is installed but does not really run here (no GPU, missing libraries).
        if request.device == "cuda" and not request.allow_fallback:
            raise DeviceError(
                f"CUDA was asked for but the session got {session.provider} (it needs a GPU, its "
                "driver, and the CUDA and cuDNN libraries onnxruntime-gpu was built for: "
                f"{GPU_LIBS_INSTALL} brings those); pass allow_fallback=True (--allow-fallback) to run "
                "on the CPU"
            )
        log.warning("CUDA does not run here (%s); loading the CPU variant instead", session.provider)
        session.close()
        return None
    return session, name, {"how": how}


def measure_candidate(session, manifest: Manifest, name: str, vocab: int, progress=None) -> tuple[dict, dict]:
    """(timings, soak) of an open candidate: its calibration times (runtime/calibration.py), then the soak,
    which raises calibration.Inconsistent when its answers move from one call to the next. `progress(event)`
    hears of the end of the timing (a child's sign of life)."""
    apart = orders_padded_apart(manifest.contract)
    names = manifest.contract.input_names
    timings = calibration.time_candidate(session.run, names, vocab, apart)
    if progress is not None:
        progress({"timed": name})
    check = manifest.answer_check
    expected = check.get("probabilities", {}).get(name)
    precision = manifest.variants[name].precision
    soaked = calibration.soak(session.run, names, vocab, precision, apart, check.get("feed"), expected)
    if getattr(session, "backend", None) == OPENVINO:
        soaked["from_cache"] = session.loaded_from_cache  # what later loads import, or compiled each time
    return timings, soaked


@dataclass
class _Measured:
    """What calibration found: timings of the candidates that ran, soak figures, and why others did not."""

    timings: dict
    soak: dict
    skipped: dict  # name -> reason (could not run now, or answered wrongly)
    lasting: set  # of skipped and crashed: will fail so again here (a wrong answer, a crash)
    crashed: dict  # name -> how the child process measuring it died (measured in a child only)
    isolated: bool

    def skip(self, name: str, reason: str, lasting: bool = False) -> None:
        """Leave `name` out for `reason`; `lasting`: it will fail so again here (a wrong answer)."""
        self.skipped[name] = reason
        if lasting:
            self.lasting.add(name)

    def why_not(self) -> str:
        return "; ".join(f"{n}: {why}" for n, why in {**self.skipped, **self.crashed}.items())


def _calibrated(
    bundle: Path,
    manifest: Manifest,
    names: list[str],
    plan: DevicePlan,
    request: _Request,
    threads: int,
    vocab: int,
):
    """The fastest of `names` on this CPU: from the cache, or measured now, in a child process where one can
    be started (a candidate that crashes it is left out), else here; then the winner is loaded."""
    # the manifest as loaded and checked (it lists every file's sha256): no second read of manifest.json
    key = calibration.cache_key(manifest.to_json().encode(), threads, plan.device, names)
    cached = calibration.read_cache().get(key)
    if isinstance(cached, dict) and cached.get("choice") in names and calibration.still_good(cached):
        name = cached["choice"]
        try:
            session = _open_variant(bundle, manifest, name, plan, request, threads)
            return session, name, {"how": "measured (cached)", **cached}
        except BackendUnavailable as exc:
            log.warning("auto: cached choice %s cannot run now (%s); measuring the others", name, exc)
    started = time.perf_counter()
    measured, opened = None, None
    if os.environ.get(calibration.IN_PROCESS_ENV, "") in ("", "0"):
        measured = _measure_in_child(bundle, manifest, names, request, threads, vocab)
    if measured is None:
        measured, opened = _measure_here(bundle, manifest, names, plan, request, threads, vocab)
    for name, why in measured.skipped.items():
        log.warning("auto: %s skipped (%s)", name, why)
    for name, why in measured.crashed.items():
        log.warning("auto: %s left out: the child process measuring it %s", name, why)
    if not measured.timings:
        raise BackendUnavailable(measured.why_not())
    timings, best = dict(measured.timings), calibration.fastest(measured.timings)
    while opened is None or opened[0] != best:
        if opened is not None:  # measured here: the leader, kept open, lost a near-tie to a closed one
            opened[1].close()
            opened = None
        try:
            opened = (best, _open_variant(bundle, manifest, best, plan, request, threads))
        except BackendUnavailable as exc:  # measured a moment ago; the next fastest then
            log.warning("auto: %s cannot be opened again (%s)", best, exc)
            measured.skip(best, str(exc))
            del timings[best]
            if not timings:
                raise
            best = calibration.fastest(timings)
    entry = {
        "choice": best,
        "timings_s": measured.timings,
        "soak": measured.soak,
        "isolated": measured.isolated,
        "skipped": measured.skipped,
        "crashed": measured.crashed,
        "cpu": calibration.cpu_signature(),
        "threads": threads,
        "measured_in_s": round(time.perf_counter() - started, 2),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    # a candidate that could not run now is measured again next time; one that answers wrongly or crashes
    # here will do so again (same bundle, CPU and libraries: the cache key)
    if set(measured.skipped) | set(measured.crashed) <= measured.lasting:
        calibration.remember(key, entry)
    log.info("auto measured %s: %s", ", ".join(names), best)
    return opened[1], best, {"how": "measured", **entry}


def _measure_here(bundle: Path, manifest: Manifest, names, plan, request: _Request, threads: int, vocab: int):
    """Calibration in this process: (_Measured, (name, its open session)); one session open at a time, the
    leader's kept open (a near-tie lost earlier can be won once a faster one moves the best: it is then
    loaded again by the caller)."""
    measured = _Measured({}, {}, {}, set(), {}, isolated=False)
    leader = None
    try:
        for name in names:
            try:
                session = _open_as_later_loads(bundle, manifest, name, plan, request, threads)
            except BackendUnavailable as exc:
                measured.skip(name, str(exc), lasting=isinstance(exc, AnswerMismatch))
                continue
            try:
                timed = measure_candidate(session, manifest, name, vocab)
                measured.timings[name], measured.soak[name] = timed
            except calibration.Inconsistent as exc:
                session.close()
                measured.skip(name, str(exc), lasting=True)
                continue
            except BaseException:
                session.close()
                raise
            if calibration.fastest(measured.timings) == name:
                if leader is not None:
                    leader[1].close()
                leader = (name, session)
            else:
                session.close()
    except BaseException:  # an error or an interrupt: nothing opened here stays open
        if leader is not None:
            leader[1].close()
        raise
    return measured, leader


# A child gets CHILD_HELLO_SECONDS to start (import pairbert and say so), then CHILD_STEP_SECONDS for each
# step (load with its answer check, timing, soak: ~1-2 s each for MiniLM on 2 cores) before it counts as
# hung and is killed, and CHILD_EXIT_SECONDS to exit after its result (what it measured is kept).
CHILD_HELLO_SECONDS = 30
CHILD_STEP_SECONDS = 120
CHILD_EXIT_SECONDS = 10
# Deaths that are the candidate's own doing and recur (same bundle, CPU, libraries): remembered. Anything else
# (SIGKILL from the OOM killer, SIGTERM or SIGINT from a service manager, an exit status) is not.
CRASH_SIGNALS = ("SIGSEGV", "SIGABRT", "SIGBUS", "SIGILL", "SIGFPE")
WINDOWS_CTRL_C = 0xC000013A  # STATUS_CONTROL_C_EXIT; other NTSTATUS codes >= 0xC0000000 are crashes


class _NoChild(Exception):
    """No child process could measure (it cannot start, or what started is not a Python running pairbert)."""


def _can_start_child() -> str | None:
    """Why no child can be started here (None: one can)."""
    import sys

    if not sys.executable:
        return "sys.executable is empty (an embedded interpreter)"
    if getattr(sys, "frozen", False):  # a frozen app's executable runs the app, not `python -c`
        return "a frozen application (sys.frozen)"
    name = os.path.basename(sys.executable).lower()
    if not name.startswith(("python", "pypy")):  # uwsgi, an embedding host: it would run itself again
        return f"sys.executable is {sys.executable}, not a Python interpreter"
    return None


def _measure_in_child(bundle: Path, manifest: Manifest, names, request: _Request, threads: int, vocab: int):
    """Calibration with one child process per candidate (runtime/calibration_child.py): a _Measured, or None
    when no child could run pairbert here (the caller then measures in this process). A candidate whose
    child dies, at any point up to its exit, or shows no sign of life in time, is left out; one whose child
    crashed (a signal: `_is_crash`) is run once more in a new child, and remembered as crashing only if it
    crashes again."""
    import dataclasses
    import subprocess  # (lazy: a load with the cache warm never starts a child)
    import tempfile

    why = _can_start_child()
    if why:
        log.warning("auto: no child process to measure in (%s); measuring here", why)
        return None
    try:
        tempdir = tempfile.gettempdir()
    except OSError:  # none usable: the child finds none either, and OpenVINO is skipped there as here
        tempdir = None
    job = {
        "bundle": str(bundle),
        "manifest_sha256": hashlib.sha256(manifest.to_json().encode()).hexdigest(),
        "request": dataclasses.asdict(request),
        "threads": threads,
        "claimed": LEDGER.claimed,
        "tempdir": tempdir,
        "vocab": vocab,
    }
    no_child = (_NoChild, OSError, subprocess.SubprocessError, ValueError, RuntimeError)
    measured = _Measured({}, {}, {}, set(), {}, isolated=True)
    for index, name in enumerate(names):
        try:
            got, stderr, status = _child_that_starts({**job, "name": name})
        except no_child as exc:
            if index == 0:
                log.warning("auto: no child process to measure in (%s); measuring here", exc)
                return None
            for rest in names[index:]:  # measured again next time
                measured.skip(rest, f"no child process to measure it in ({exc})")
            return measured
        if not _take_child_result(measured, name, got, stderr, status):
            continue
        first = measured.crashed.pop(name)  # a crash signal: once more in a new child
        log.warning("auto: %s crashed its child (%s); measuring it once more", name, first)
        try:
            got, stderr, status = _child_that_starts({**job, "name": name})
        except no_child as exc:
            measured.crashed[name] = f"{first}; no child to measure it again ({exc})"
            continue  # (never in this process after a crash)
        if _take_child_result(measured, name, got, stderr, status):  # twice: it crashes here
            measured.lasting.add(name)
        if name in measured.timings:  # a crash that comes and goes is a crash: left out, not remembered
            del measured.timings[name], measured.soak[name]
        second = measured.crashed.get(name) or measured.skipped.get(name) or "ran"
        measured.crashed[name] = f"{first}; then, once more: {second}"
    return measured


def _child_that_starts(job: dict) -> tuple[list[dict], str, int | None]:
    """`_run_child`, once more with a longer start-up allowance if the first showed no sign of life (a cold
    page cache, a loaded machine). _NoChild when what started is not a Python running this pairbert."""
    import pairbert

    mine = os.path.realpath(pairbert.__file__)
    for hello_seconds in (CHILD_HELLO_SECONDS, 4 * CHILD_HELLO_SECONDS):
        got, stderr, status = _run_child(job, hello_seconds)
        hello = next((e["hello"] for e in got if "hello" in e), None)
        if hello is not None:
            if os.path.realpath(str(hello)) != mine:
                raise _NoChild(f"it runs another pairbert ({hello}, not {mine})")
            return got, stderr, status
        if status is not None:  # it ended without a hello: not a Python that can run this pairbert
            break
    raise _NoChild(f"it did not start pairbert ({_death(status, stderr)})")


def _take_child_result(
    measured: _Measured, name: str, got: list[dict], stderr: str, status: int | None
) -> bool:
    """Record what one child said and how it ended; True when it died by a crash signal (`_is_crash`).
    status None: it was killed for showing no sign of life in time."""
    from . import calibration_child

    final = next((e for e in got if calibration_child.is_final(e)), None)
    if final is not None and "error" in final:  # a fault of the bundle: the load fails as it would here
        raise BundleError(final["message"])
    if final is not None and "skipped" in final:
        measured.skip(name, final["reason"], lasting=final["mismatch"])
        return False
    if final is not None and status in (0, None):  # (hung at its exit after its result: not held against it)
        measured.timings[name], measured.soak[name] = final["timings_s"], final["soak"]
        return False
    step = "after its result" if final else f"while {_last_step(got)}"
    measured.crashed[name] = f"{_death(status, stderr)} ({step})"  # "killed by SIGABRT: ... (while soaking)"
    return _is_crash(status)


def _last_step(got: list[dict]) -> str:
    steps = [key for e in got for key in e if key in ("hello", "loaded", "timed")]
    return {None: "starting", "hello": "loading", "loaded": "timing", "timed": "soaking"}[
        steps[-1] if steps else None
    ]


def _is_crash(status: int | None) -> bool:
    """The candidate's own crash (recurs), not a kill from outside or an exit status."""
    import signal

    if status is None:
        return False
    if os.name == "nt":
        code = status & 0xFFFFFFFF
        return code >= 0xC0000000 and code != WINDOWS_CTRL_C
    return status < 0 and any(getattr(signal, n, None) == -status for n in CRASH_SIGNALS)


def _run_child(job: dict, hello_seconds: float) -> tuple[list[dict], str, int | None]:
    """Run one measuring child: (its events, the end of its stderr, its exit status, or None when it was
    killed for showing no sign of life in time: `hello_seconds` to start, CHILD_STEP_SECONDS a step,
    CHILD_EXIT_SECONDS to exit after its result). OSError/SubprocessError/ValueError: it cannot start.
    The child's stdin stays open while it runs: it exits when that closes, so it does not outlive a caller
    killed outright."""
    import collections
    import queue
    import signal
    import subprocess
    import sys

    from . import calibration_child

    posix = os.name == "posix"
    flags = subprocess._args_from_interpreter_flags()  # -I, -E, -s ... as this interpreter was started
    path = [p for p in sys.path if isinstance(p, str)]
    child = subprocess.Popen(
        [sys.executable, *flags, "-c", calibration_child.launch(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, calibration.IN_PROCESS_ENV: "1"},  # a load inside it never starts another
        start_new_session=posix,  # a terminal's Ctrl-C reaches the caller only; the caller ends the child
        creationflags=0 if posix else subprocess.CREATE_NEW_PROCESS_GROUP,
    )

    def kill() -> None:
        try:
            os.killpg(child.pid, signal.SIGKILL) if posix else child.kill()  # with whatever it started
        except OSError:
            pass

    lines: queue.SimpleQueue = queue.SimpleQueue()
    tail: collections.deque = collections.deque(maxlen=40)

    def read_events() -> None:
        for line in child.stdout:
            lines.put(line.decode(errors="replace"))
        lines.put(None)

    def read_stderr() -> None:
        for line in child.stderr:
            tail.append(line.decode(errors="replace"))

    got, hung, readers = [], False, []
    try:  # from the moment it exists: on every way out (an interrupt too) the child and what it started go
        for read in (read_events, read_stderr):
            readers.append(threading.Thread(target=read, daemon=True))
            readers[-1].start()
        try:
            child.stdin.write(json.dumps(job).encode() + b"\n")
            child.stdin.flush()
        except OSError:  # it died at once: its status and stderr say why
            pass
        deadline = time.monotonic() + hello_seconds
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                hung = True
                break
            if line is None:
                break
            for event in calibration_child.events(line):
                got.append(event)
                final = calibration_child.is_final(event)
                deadline = time.monotonic() + (CHILD_EXIT_SECONDS if final else CHILD_STEP_SECONDS)
        if not hung:
            try:
                child.wait(timeout=CHILD_EXIT_SECONDS)
            except subprocess.TimeoutExpired:
                hung = True
    finally:
        if hung or child.poll() is None:
            kill()
        status = child.wait()
        try:
            child.stdin.close()
        except OSError:
            pass
        for reader in readers:
            reader.join(timeout=CHILD_EXIT_SECONDS)  # (the pipes end with the process group)
    return got, "".join(tail)[-8000:], None if hung else status


def _death(status: int | None, stderr: str) -> str:
    """How a child ended, with the line of its stderr that says most: the C library's or the loader's own
    words (glibc's "double free or corruption" comes before faulthandler's "Fatal Python error"), else the
    last line."""
    import re

    if status is None:
        how = "showed no sign of life in time, killed"
    elif status < 0:
        how = killed_by(status)
    else:
        how = f"exited with status {status:#x}" if status > 0xFFFF else f"exited with status {status}"
    lines = [line.strip() for line in reversed(stderr.splitlines()) if line.strip()]  # the last first
    said = ""
    for telling in (
        r"corruption|free\(\)|malloc|segmentation fault|illegal instruction|terminate called|bad_alloc",
        r"^Fatal Python error",
        r"error",
    ):
        said = said or next((line for line in lines if re.search(telling, line, re.IGNORECASE)), "")
    said = said or (lines[0] if lines else "")
    return f"{how}: {said[:200]}" if said else how
