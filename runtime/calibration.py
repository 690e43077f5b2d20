"""`auto` by measurement: time every parity-passing candidate on this CPU once, remember the fastest.

The cache (a JSON file in the user's cache folder) is keyed by the bundle's manifest digest (every file's
sha256 is in it), this CPU's signature, the thread count, the library versions and the way of choosing (the
candidates in their tie-break order, the timed shapes, `rule()`), so a changed bundle, CPU, library or rule
is measured again. The workload is two fixed shapes, a single short pair (latency) and 16 pairs of
45 tokens (throughput); the candidate with the smallest product of the two times wins. Each candidate is then
soaked (`soak`): rows of varied lengths, alone and in mixed batches, must get the same answers every time, or
the candidate is not used. The measuring runs in a child process (runtime/calibration_child.py), so a
candidate that crashes the process on this machine is left out instead of taking the caller down.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .answer_check import TOLERANCE as ANSWER_TOLERANCE
from .answer_check import AnswerMismatch
from .devices import cpu_info

log = logging.getLogger(__name__)

CACHE_ENV = "PAIRBERT_CACHE_DIR"
CACHE_FILE = "calibration.json"
# (pairs, tokens): one short pair (latency) and a batch (throughput). The lengths sit between OpenVINO's
# length buckets (24, 48), as real traffic does, so its padding is part of what is timed.
SHAPES = ((1, 21), (16, 45))
REPEATS = 5
TOLERANCE = 0.05  # candidates within 5 % of the fastest are tied; the preference order breaks the tie
# Set (to anything but "" or "0") to measure in the calling process instead of a child process: for hosts
# that cannot start one (sys.executable is not Python, a sandbox without fork); a crash then takes the caller.
IN_PROCESS_ENV = "PAIRBERT_CALIBRATE_IN_PROCESS"
# Set to measure again whatever the cache holds. A choice made while a candidate crashed is trusted for
# CRASH_MEMORY_DAYS only: the host (a VM moved to another machine), not only the libraries, may change that.
RECALIBRATE_ENV = "PAIRBERT_RECALIBRATE"
CRASH_MEMORY_DAYS = 7

# The soak: SOAK_ROWS rows of SOAK_TOKENS lengths (and the manifest's check pairs), each alone first, then
# drawn into batches of SOAK_BATCHES sizes, round after round until SOAK_SECONDS have passed (at most
# SOAK_ROUNDS); every row must answer as it did alone. On an AMX machine pairbert's bf16 sessions crashed
# (double free) within seconds of a benchmark stage's varied shapes, or answered 50 % of 40 pairs wrongly
# after their first calls (README: OpenVINO on an AMX machine); a fault that sets in later than the soak
# is not caught by it.
SOAK_ROWS = 12
SOAK_TOKENS = (5, 64)
SOAK_BATCHES = (3, 8, 32, 1, 16, 5, 32, 2)
SOAK_SECONDS = 0.5
SOAK_ROUNDS = 20
# How far a row's probabilities may move with the rows it is batched with: as far as a load may move them
# from the export's (runtime/answer_check.py), except int8, whose activations are quantized with one scale
# per batch, so a row's answer depends on its neighbours. Measured with these rows on the make-demo MiniLM
# (AMD EPYC family 26): int8 moved 0.095, openvino-bf16 0.011, the fp32 graphs 4e-7.
SOAK_TOLERANCE = {**ANSWER_TOLERANCE, "int8": 0.25}


class Inconsistent(AnswerMismatch):
    """A candidate answers the same row differently from one call to the next (beyond its precision)."""


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pairbert"


def openvino_cache_dir(precision: str) -> Path | None:
    """Where OpenVINO keeps the models it compiled for one inference precision (CACHE_DIR: a second load
    reads the compiled blob instead of compiling again), made if need be: `openvino/<precision>/` in the
    cache folder above. None, with a warning, when that folder cannot be written (read-only home, a file in
    the way): OpenVINO then compiles without a cache, as before."""
    folder = cache_dir() / "openvino" / precision
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as exc:
        log.warning("cannot write the OpenVINO model cache in %s (%s); compiling without it", folder, exc)
        return None
    return folder


def cpu_signature() -> str:
    """The CPU model and the instruction-set features that change which kernels run."""
    model, flags = cpu_info()
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni")
    kept = " ".join(f for f in flags or () if f in wanted)
    return f"{model or platform.processor() or platform.machine()} [{kept}] x{os.cpu_count()}"


def _versions() -> str:
    """Which runtimes are installed, cheaply (importlib.metadata alone costs 30 ms of a 0.5 s cold start, and
    importing OpenVINO far more): where each package lies, with its __init__'s size and time (pip writes
    the files anew on every install or upgrade, and onnxruntime-gpu installs its own)."""
    import importlib.util

    found = []
    for name in ("onnxruntime", "openvino"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin is not None:
            stat = os.stat(spec.origin)
            found.append(f"{name}@{spec.origin}:{stat.st_size}:{stat.st_mtime_ns}")
    return ",".join(found)


def cache_key(manifest_bytes: bytes, threads: int, device: str, candidates: list[str]) -> str:
    """Changes with the bundle (its manifest), the CPU, the thread count, the device, the libraries and the
    way of choosing (the candidates in their tie-break order, the timed shapes)."""
    parts = [
        hashlib.sha256(manifest_bytes).hexdigest(),
        cpu_signature(),
        f"threads={threads}",
        device,
        _versions(),
        f"candidates={','.join(candidates)} {rule()}",
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def rule() -> str:
    """How `auto` chooses, as part of the cache key: a changed rule is measured again. Includes the lengths
    the timed shapes are padded to (OpenVINO's buckets), since they change what is timed."""
    from .shapes import CPU_SEQUENCE_BUCKETS, bucket

    padded = [bucket(tokens, CPU_SEQUENCE_BUCKETS) for _, tokens in SHAPES]
    apart = [aq_tokens(tokens) for _, tokens in SHAPES]
    soak = (
        f"soak={SOAK_ROWS}x{SOAK_TOKENS} batches={SOAK_BATCHES} for {SOAK_SECONDS}s/{SOAK_ROUNDS} rounds "
        f"within={sorted(SOAK_TOLERANCE.items())}"
    )
    return (
        f"shapes={SHAPES} padded={padded} aq-apart={apart} each-order-to-its-bucket fastest-of-{REPEATS} "
        f"tolerance={TOLERANCE} {soak} openvino-measured-as-imported"
    )


def aq_tokens(tokens: int) -> int:
    """The AQ order's length in a timed shape when the graph takes the orders at their own lengths (as a
    service feeds them: the answer segment apart from the question's)."""
    return max(4, tokens // 3)


def read_cache() -> dict:
    path = cache_dir() / CACHE_FILE
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def still_good(entry: dict) -> bool:
    """Whether a cached choice may be used: not when RECALIBRATE_ENV is set, nor when a candidate crashed or
    answered wrongly while it was measured more than CRASH_MEMORY_DAYS ago (or at a time that is unreadable
    or in the future): the host, not only the libraries, decides those."""
    from datetime import datetime, timezone

    if os.environ.get(RECALIBRATE_ENV, "") not in ("", "0"):
        return False
    if not entry.get("crashed") and not entry.get("skipped"):
        return True
    try:
        age = datetime.now(timezone.utc) - datetime.fromisoformat(entry["measured_at"])
    except (KeyError, TypeError, ValueError):
        return False
    return age.total_seconds() >= 0 and age.days < CRASH_MEMORY_DAYS


def remember(key: str, entry: dict) -> None:
    """Add an entry, atomically (a failed write only costs a re-measurement next time)."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        data = read_cache()
        data[key] = entry
        tmp = folder / f".{CACHE_FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, folder / CACHE_FILE)
    except OSError as exc:
        log.warning(
            "cannot write the calibration cache in %s (%s); auto will measure again next time", folder, exc
        )


def synthetic_feed(
    input_names: list[str], pairs: int, tokens: int, vocab: int, aq: int | None = None
) -> dict[str, np.ndarray]:
    """Random ids below `vocab` (the timing does not depend on which ids), full masks, two segments; the AQ
    order at `aq` tokens when given (graphs that take the orders at their own lengths)."""
    by_order = {}
    for order, length in (("qa", tokens), ("aq", aq or tokens)):
        rng = np.random.default_rng(pairs * 1000 + length)
        by_order[order] = _segments(rng.integers(0, vocab, size=(pairs, length), dtype=np.int64))
    return _by_input(by_order, input_names)


def _segments(ids: np.ndarray) -> dict[str, np.ndarray]:
    """One order's inputs for `ids` (a row or a batch of rows): a full mask, the second half segment 1."""
    types = np.zeros_like(ids)
    types[..., ids.shape[-1] // 2 :] = 1
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": types}


def _by_input(by_order: dict[str, dict[str, np.ndarray]], input_names: list[str]) -> dict[str, np.ndarray]:
    """{"qa": {"input_ids": …}, …} as the graph's inputs ("qa_input_ids", …)."""
    return {name: by_order[name.split("_", 1)[0]][name.split("_", 1)[1]] for name in input_names}


def time_candidate(
    run: Callable[[dict], np.ndarray], input_names: list[str], vocab: int, apart: bool = False
) -> dict:
    """Fastest seconds per call at each calibration shape (after one warm-up call each). The minimum, not the
    median: anything else running on the machine only ever adds time, so the fastest of the repeats is the
    best estimate of what the candidate itself costs (seen here: with another process busy, the medians
    ranked ONNX Runtime's fp32 and optimized graphs differently from one load to the next)."""
    timings = {}
    for pairs, tokens in SHAPES:
        feed = synthetic_feed(input_names, pairs, tokens, vocab, aq_tokens(tokens) if apart else None)
        run(feed)
        samples = []
        for _ in range(REPEATS):
            t = time.perf_counter()
            run(feed)
            samples.append(time.perf_counter() - t)
        timings[f"{pairs}x{tokens}"] = float(min(samples))
    return timings


def soak(
    run: Callable[[dict], np.ndarray],
    input_names: list[str],
    vocab: int,
    precision: str,
    apart: bool = False,
    check: dict | None = None,
    expected: list | None = None,
) -> dict:
    """Run rows of varied lengths (random ids, and the manifest's check pairs, `check`) alone, then in mixed
    batches drawn from them; every row must answer in a batch as it did alone, and the check pairs as at
    export (`expected`, the manifest's probabilities for this variant, when it has some), within
    SOAK_TOLERANCE of the precision. Returns {"calls", "max_moved"}; raises Inconsistent otherwise (also for
    answers that are not finite)."""
    from .predictor import softmax  # (the one copy; predictor imports this module)

    rng = np.random.default_rng(20261127)
    lengths = rng.integers(*SOAK_TOKENS, SOAK_ROWS)
    rows = [_random_row(input_names, int(n), vocab, apart, rng) for n in lengths]
    checked = _rows_of(check or {}, input_names)
    rows += checked
    alone = [softmax(np.asarray(run(_collate([row], input_names)), np.float64))[0] for row in rows]
    worst, calls = 0.0, len(rows)
    if checked and expected is not None and len(expected) == len(checked):  # as at export, not only as
        exported = [np.asarray(e, np.float64) for e in expected]  # a moment ago
        worst = _moved(alone[SOAK_ROWS:], exported)
        alone[SOAK_ROWS:] = exported
    started, rounds = time.perf_counter(), 0
    while rounds < 1 or (rounds < SOAK_ROUNDS and time.perf_counter() - started < SOAK_SECONDS):
        rounds += 1
        for size in SOAK_BATCHES:
            pick = rng.integers(0, len(rows), size)
            got = softmax(np.asarray(run(_collate([rows[i] for i in pick], input_names)), np.float64))
            calls += 1
            worst = max(worst, _moved(list(got), [alone[i] for i in pick]))
    allowed = SOAK_TOLERANCE.get(precision, 0.05)
    if worst > allowed:
        raise Inconsistent(
            f"answers the same pairs differently from one call to the next here (max |Δprob| {worst:.3f} "
            f"over {calls} calls, allowed {allowed:g} for {precision}), so it is not used"
        )
    return {"calls": calls, "max_moved": worst}


def _moved(got: list, reference: list) -> float:
    """The largest |Δprob| between two lists of probability rows (inf if any is not finite)."""
    if not got:
        return 0.0
    got, reference = np.stack(got), np.stack(reference)
    if not (np.isfinite(got).all() and np.isfinite(reference).all()):
        return float("inf")
    return float(np.abs(got - reference).max())


def _random_row(input_names: list[str], tokens: int, vocab: int, apart: bool, rng) -> dict[str, np.ndarray]:
    """One pair's feed, unpadded: random ids, a full mask, two segments; the AQ order at its own length when
    the graph takes the orders apart."""
    by_order = {}
    for order, length in (("qa", tokens), ("aq", aq_tokens(tokens) if apart else tokens)):
        by_order[order] = _segments(rng.integers(0, vocab, size=length, dtype=np.int64))
    return _by_input(by_order, input_names)


def _rows_of(feed: dict, input_names: list[str]) -> list[dict[str, np.ndarray]]:
    """The rows of a padded feed (the manifest's check batch), each order cut to its mask's length."""
    if not feed or any(name not in feed for name in input_names):
        return []
    arrays = {name: np.asarray(feed[name], np.int64) for name in input_names}
    rows = []
    for r in range(len(next(iter(arrays.values())))):
        masks = [name for name in input_names if name.endswith("attention_mask")]
        lengths = {name.split("_", 1)[0]: int(arrays[name][r].sum()) for name in masks}
        rows.append({name: arrays[name][r, : lengths[name.split("_", 1)[0]]] for name in input_names})
    return rows


def _collate(rows: list[dict[str, np.ndarray]], input_names: list[str]) -> dict[str, np.ndarray]:
    """Rows padded to the longest of each order (id 0, mask 0, type 0 beyond a row's length)."""
    width = {}
    for name in input_names:
        order = name.split("_", 1)[0]
        width[order] = max(width.get(order, 1), *(len(row[name]) for row in rows))
    feed = {}
    for name in input_names:
        batch = np.zeros((len(rows), width[name.split("_", 1)[0]]), np.int64)
        for i, row in enumerate(rows):
            batch[i, : len(row[name])] = row[name]
        feed[name] = batch
    return feed


def _relative(timings: dict[str, dict]) -> dict[str, float]:
    """Each candidate's time over the best one's, per shape (the geometric mean of its per-shape ratios)."""
    score = {name: float(np.prod(list(t.values()))) for name, t in timings.items()}
    best = min(score.values())
    shapes = max(1, len(next(iter(timings.values()))))  # each score is a product of len(SHAPES) times
    return {name: (score[name] / best) ** (1 / shapes) for name in timings}


def fastest(timings: dict[str, dict], tolerance: float | None = None) -> str:
    """The candidate with the smallest product of its times (each shape weighs the same). Candidates within
    `tolerance` of the best count as tied (timing noise): the first of them in `timings`' order wins, which
    is the fixed preference order (for example the pre-fused `optimized` graph loads faster than `fp32`)."""
    relative, tolerance = _relative(timings), TOLERANCE if tolerance is None else tolerance
    return next(n for n in timings if relative[n] <= 1 + tolerance)
