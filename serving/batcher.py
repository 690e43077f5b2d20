"""Cross-request dynamic batching: pairs from concurrent requests coalesce into one predictor call.

One asyncio task collects queued requests into a run, bounded by a token budget, a pair budget and a wait
(no pair waits more than `max_wait_ms` for company), and hands the run to one worker thread, so the event
loop never blocks on ONNX Runtime. The predictor length-buckets the run into padded-token-capped batches.
Each request's future gets exactly its own rows back.

How long to wait: the run waits for as many pairs as the largest of the last few runs had (the concurrency
the server has been seeing), or the budget, or the deadline, whichever comes first. So a lone client never
waits (its runs have one pair), and 32 clients are gathered into runs of ~32 instead of the ragged runs a
no-wait batcher makes while the previous run's answers are still being written out.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

RECENT_RUNS = 8


class QueueFull(Exception):
    """More pairs are waiting than the server accepts: answer 503 with Retry-After."""


class NotRunning(Exception):
    """The batcher is stopping or not started."""


@dataclass(eq=False)  # compared by identity: the queue removes one job, not an equal one
class _Job:
    questions: list[str]
    answers: list[str]
    tokens: int
    future: asyncio.Future
    enqueued: float

    @property
    def size(self) -> int:
        return len(self.questions)


@dataclass
class BatcherStats:
    """What the metrics endpoint reads; updated by the batcher's task only."""

    runs: int = 0
    pairs: int = 0
    queued_pairs: int = 0
    observers: list = field(default_factory=list)  # callables (pairs, tokens) called after each run


class DynamicBatcher:
    def __init__(
        self,
        predict: Callable[[list[str], list[str]], np.ndarray],
        *,
        batching: bool = True,
        max_wait_ms: float = 5.0,
        max_batch_tokens: int = 4096,
        max_batch_pairs: int = 256,
        max_queue_pairs: int = 4096,
    ):
        """`predict(questions, answers)` returns float32 probabilities [n, labels]; it runs on the worker
        thread, one call at a time. The batcher only concatenates the per-pair items it is given (texts, or
        as in the app the encodings made on arrival) and splits the rows back."""
        self._predict = predict
        self.batching = batching
        self.max_wait = max_wait_ms / 1000
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_pairs = max_batch_pairs
        self.max_queue_pairs = max_queue_pairs
        self.stats = BatcherStats()
        self._queue: deque[_Job] = deque()
        self._arrived = asyncio.Event()
        self._recent: deque[int] = deque(maxlen=RECENT_RUNS)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pairbert-predict")
        self._task: asyncio.Task | None = None
        self._accepting = False
        self._busy = False

    async def run_on_worker(self, fn: Callable[[], object]) -> object:
        """Run `fn` on the thread that runs the predictor (warm-up: that thread's first runs allocate its
        memory arena and ORT's per-thread state, which then count as idle, not as growth under load)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def start(self) -> None:
        self._accepting = True
        self._task = asyncio.get_running_loop().create_task(self._serve(), name="pairbert-batcher")

    def check_room(self, n: int) -> None:
        """Raise NotRunning or QueueFull unless a request of n pairs would be queued now (`submit` checks
        again; the app asks first so that a refused request is not tokenized)."""
        if not self._accepting:
            raise NotRunning("the server is stopping")
        queued = self.stats.queued_pairs
        if queued + n > self.max_queue_pairs:
            raise QueueFull(
                f"the queue is full: {queued} pairs are waiting and this request's {n} would pass "
                f"the limit of {self.max_queue_pairs}; retry later"
            )

    async def submit(self, questions: list[str], answers: list[str], tokens: int) -> np.ndarray:
        """Queue one request's pairs; returns its probabilities [n, labels] once its run is done."""
        self.check_room(len(questions))
        loop = asyncio.get_running_loop()
        job = _Job(questions, answers, tokens, loop.create_future(), loop.time())
        self._queue.append(job)
        self.stats.queued_pairs += job.size
        self._arrived.set()
        try:
            return await job.future
        except asyncio.CancelledError:  # the client went away, or the graceful shutdown ran out
            self._withdraw(job)
            raise

    def _withdraw(self, job: _Job) -> None:
        """A cancelled request's pairs are never run: out of the queue now (its place frees for others), or,
        taken into a run still gathering, skipped by `_execute`."""
        job.future.cancel()
        if job in self._queue:
            self._queue.remove(job)
            self.stats.queued_pairs -= job.size

    async def close(self) -> None:
        """Stop taking requests, finish what is queued (withdrawn requests are not run), then stop the worker
        thread."""
        self._accepting = False
        if self._task is not None:
            while (self._queue or self._busy) and not self._task.done():
                await asyncio.sleep(0.005)
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=True)

    async def _serve(self) -> None:
        while True:
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            jobs: list[_Job] = []
            try:
                jobs = await self._collect()
                if jobs:
                    await self._execute(jobs)
            except Exception as exc:  # a bug here must fail these requests, not leave every later one hanging
                log.exception("batcher failed on a run of %d request(s)", len(jobs))
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)

    def _target(self) -> int:
        return min(self.max_batch_pairs, max(self._recent, default=1))

    async def _collect(self) -> list[_Job]:
        """Take queued jobs in arrival order within the budgets; wait (bounded) for more up to the target."""
        loop = asyncio.get_running_loop()
        jobs: list[_Job] = []
        pairs = tokens = 0
        deadline = self._queue[0].enqueued + self.max_wait if self._queue else loop.time()
        target = self._target()
        while True:
            while self._queue:
                job = self._queue[0]
                over = pairs + job.size > self.max_batch_pairs or tokens + job.tokens > self.max_batch_tokens
                if jobs and (over or not self.batching):
                    return jobs
                jobs.append(self._queue.popleft())
                pairs += job.size
                tokens += job.tokens
                if (
                    not self.batching or over
                ):  # a job over the budget alone runs alone (the predictor splits it)
                    return jobs
            remaining = deadline - loop.time()
            if pairs >= target or remaining <= 0:
                return jobs
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def _execute(self, jobs: list[_Job]) -> None:
        self.stats.queued_pairs -= sum(job.size for job in jobs)
        jobs = [job for job in jobs if not job.future.done()]  # withdrawn while the run gathered
        if not jobs:
            return
        pairs = sum(job.size for job in jobs)
        tokens = sum(job.tokens for job in jobs)
        self._recent.append(pairs)
        questions = [q for job in jobs for q in job.questions]
        answers = [a for job in jobs for a in job.answers]
        loop = asyncio.get_running_loop()
        self._busy = True
        try:
            probabilities = await loop.run_in_executor(self._pool, self._predict, questions, answers)
        except Exception as exc:  # every request of the run gets the error; the server keeps serving
            log.exception("prediction failed for a run of %d pairs", pairs)
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        finally:
            self._busy = False
        start = 0
        for job in jobs:
            if not job.future.done():  # a client that went away cancelled its future
                job.future.set_result(probabilities[start : start + job.size])
            start += job.size
        self.stats.runs += 1
        self.stats.pairs += pairs
        for observe in self.stats.observers:
            observe(pairs, tokens)
