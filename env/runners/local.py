"""Children trained in this process or in worker processes on this machine (:class:`InProcessRunner`,
:class:`ProcessRunner`), and what every runner shares: :func:`safe_evaluate` (a broken child is a failed result),
:func:`round_options` and :func:`longest_first`. The package's docstring (``env/runners/__init__.py``) describes
the runners together."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, ProcessPoolExecutor, as_completed, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import torch

from nasrl.env.evaluators.base import EvalResult, Evaluator
from nasrl.env.evaluators.device import worker_device
from nasrl.env.spaces.space import Architecture
from nasrl.env.threads import available_cores, torch_threads

Job = tuple[Architecture, int]  # (architecture, child seed)
OnResult = Callable[[int, EvalResult], None] | None  # called with (job index, result) as soon as a result is known


def round_options(evaluator: Evaluator) -> dict[str, Any]:
    """The keyword arguments of ``evaluate`` for every child of a round starting now (the evaluator's
    ``round_options()``, a copy; none by default)."""
    return dict(evaluator.round_options())


def safe_evaluate(
    evaluator: Evaluator, arch: Architecture, seed: int, options: dict[str, Any] | None = None
) -> EvalResult:
    """``evaluator.evaluate(arch, seed, **options)``, with an exception turned into a failed result (a broken
    child is a recorded failure, not a crashed search). No options: the plain two-argument call."""
    try:
        return evaluator.evaluate(arch, seed, **(options or {}))
    except Exception as exc:
        return EvalResult(0.0, failed=True, reason=f"{type(exc).__name__}: {exc}")


def longest_first(evaluator: Evaluator, jobs: Sequence[Job]) -> list[int]:
    """Indices of ``jobs``, the most expensive first by ``evaluator.cost`` (ties, and an evaluator whose
    ``cost`` is the default 0, keep the proposal order). Starting the longest jobs first keeps every worker
    busy until near the end of a round (longest-processing-time-first scheduling)."""

    def estimate(arch: Architecture) -> float:
        try:
            return float(evaluator.cost(arch))
        except Exception:  # a child that cannot even be built fails at once when it is evaluated
            return 0.0

    costs = [estimate(arch) for arch, _ in jobs]
    return sorted(range(len(jobs)), key=lambda i: -costs[i])


def worker_died(attempts: int, detail: str) -> EvalResult:
    return EvalResult(0.0, failed=True, reason=f"worker died in each of {attempts} attempts ({detail})")


class InProcessRunner:
    """Trains the jobs one after another in this process, each with up to all cores' torch threads.
    Asynchronously, a submitted child trains when its result is asked for, oldest first."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator
        self._queue: deque[tuple[int, Job, dict[str, Any]]] = deque()

    def submit(self, tag: int, job: Job) -> None:
        self._queue.append((tag, job, round_options(self.evaluator)))

    def next_result(self) -> tuple[int, EvalResult]:
        tag, (arch, seed), options = self._queue.popleft()
        with torch_threads(available_cores()):
            return tag, safe_evaluate(self.evaluator, arch, seed, options)

    @property
    def in_flight(self) -> int:
        return len(self._queue)

    def run(self, jobs: Sequence[Job], on_result: OnResult = None) -> list[EvalResult]:
        results = []
        options = round_options(self.evaluator)  # once per round, as the other runners do
        with torch_threads(available_cores()):  # the search loop itself runs on one thread
            for i, (arch, seed) in enumerate(jobs):
                results.append(safe_evaluate(self.evaluator, arch, seed, options))
                if on_result is not None:
                    on_result(i, results[-1])
        return results

    def close(self) -> None:
        pass


# --- processes on this machine ---------------------------------------------------------------------------

_worker_evaluator: Any = None
_worker_index: int | None = None  # this worker process's number in its pool: 0, 1, ... in the order they start


def cuda_device_of(evaluator: Evaluator) -> torch.device | None:
    """The CUDA device ``evaluator`` trains on (its ``device``), or None: the CPU, or an evaluator that does
    not say."""
    device = evaluator.device
    return device if isinstance(device, torch.device) and device.type == "cuda" else None


def _init_worker(evaluator: Evaluator, threads: int, counter: Any = None, parent: int | None = None) -> None:
    """Runs once in each worker process. ``counter``: a shared integer that numbers the workers as they
    start (an initializer is not told its index), so that worker i can train on GPU i mod (GPUs). ``parent``:
    the search's process id; on Linux the worker ends with it, even when it is killed (SIGKILL) and cannot
    stop its workers, which would otherwise wait for jobs forever, holding their memory."""
    global _worker_evaluator, _worker_index
    if parent is not None and sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: SIGTERM when the parent exits
        if os.getppid() != parent:  # it exited before the line above
            os._exit(0)
    _worker_evaluator = evaluator
    torch.set_num_threads(threads)
    if counter is None:
        return
    with counter.get_lock():
        _worker_index = counter.value
        counter.value += 1
    device = cuda_device_of(evaluator)
    if device is not None:
        placed = worker_device(device, _worker_index)
        evaluator.device = placed
        torch.cuda.set_device(placed)  # what else this process puts on "cuda" goes there too


def _evaluate_in_worker(arch: Architecture, seed: int, options: dict[str, Any]) -> EvalResult:
    return safe_evaluate(_worker_evaluator, arch, seed, options)


class ProcessRunner:
    """Trains up to ``workers`` jobs at once in a pool of spawned processes (started on first use, kept for
    the whole search). A dead worker breaks the whole pool, so the jobs it took down cannot tell which of
    them killed it: they are retried one at a time in a fresh pool, where a job that breaks the pool is
    the culprit; after ``max_retries`` such retries it is recorded as failed. An evaluator on CUDA trains in
    worker i on GPU i mod (GPUs) (see :func:`nasrl.env.evaluators.device.worker_device`)."""

    def __init__(self, evaluator: Evaluator, workers: int, threads_per_worker: int | None = None, max_retries: int = 2):
        self.evaluator = evaluator
        self.workers = workers
        self.threads = threads_per_worker or max(1, available_cores() // workers)
        self.max_retries = max_retries
        self._pool: ProcessPoolExecutor | None = None
        self._futures: dict[Future, tuple[int, Job, dict[str, Any], int]] = {}  # -> (tag, job, options, attempts)
        self._ready: deque[tuple[int, EvalResult]] = deque()

    def _start(self) -> ProcessPoolExecutor:
        # spawn, not fork: a forked copy of a process that already ran torch's thread pool can hang
        context = multiprocessing.get_context("spawn")
        counter = context.Value("i", 0)  # numbers this pool's workers (a fresh pool counts from 0 again)
        return ProcessPoolExecutor(
            self.workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(self.evaluator, self.threads, counter, os.getpid()),
        )

    def run(self, jobs: Sequence[Job], on_result: OnResult = None) -> list[EvalResult]:
        results: list[EvalResult | None] = [None] * len(jobs)
        options = round_options(self.evaluator)  # retried jobs keep their round's options
        broken = self._run_together(jobs, list(range(len(jobs))), results, on_result, options)
        for i in broken:
            for _ in range(self.max_retries):
                if not self._run_together(jobs, [i], results, on_result, options):
                    break
            else:
                results[i] = died = worker_died(
                    1 + self.max_retries, "BrokenProcessPool: its worker process was killed"
                )
                if on_result is not None:
                    on_result(i, died)
        return results  # type: ignore[return-value]

    def _run_together(
        self,
        jobs: Sequence[Job],
        todo: list[int],
        results: list[EvalResult | None],
        on_result: OnResult,
        options: dict[str, Any] | None = None,
    ) -> list[int]:
        """Run ``todo`` in the pool, filling ``results``; return the jobs lost to a broken pool."""
        if self._pool is None:
            self._pool = self._start()
        order = [todo[k] for k in longest_first(self.evaluator, [jobs[i] for i in todo])]
        futures = {self._pool.submit(_evaluate_in_worker, *jobs[i], options or {}): i for i in order}
        lost = []
        for future in as_completed(futures):
            i = futures[future]
            try:
                results[i] = result = future.result()
            except BrokenProcessPool:
                lost.append(i)
                continue
            if on_result is not None:
                on_result(i, result)
        self._restart_if_broken()
        return sorted(lost)

    def submit(self, tag: int, job: Job) -> None:
        self._submit(tag, job, round_options(self.evaluator), 1)

    def _submit(self, tag: int, job: Job, options: dict[str, Any], attempt: int) -> None:
        if self._pool is None:
            self._pool = self._start()
        self._futures[self._pool.submit(_evaluate_in_worker, *job, options)] = (tag, job, options, attempt)

    def next_result(self) -> tuple[int, EvalResult]:
        """The first child to finish. A dead worker breaks the pool and every child in flight with it: they
        all restart in a fresh pool, each such loss counting as an attempt (unlike a round, the one that
        killed the worker cannot be told apart), and a child lost ``1 + max_retries`` times is failed."""
        while not self._ready:
            done, _ = wait(list(self._futures), return_when=FIRST_COMPLETED)
            lost = []
            for future in done:
                tag, job, options, attempt = self._futures.pop(future)
                try:
                    self._ready.append((tag, future.result()))
                except (BrokenProcessPool, CancelledError):  # cancelled: by the restart of a broken pool
                    lost.append((tag, job, options, attempt))
            if lost:  # the rest of the pool's futures are broken too: collect them now
                for future in list(self._futures):
                    if future.cancelled() or (future.done() and isinstance(future.exception(), BrokenProcessPool)):
                        lost.append(self._futures.pop(future))
                self._restart_if_broken()
            for tag, job, options, attempt in sorted(lost, key=lambda item: item[0]):
                if attempt > self.max_retries:
                    detail = "BrokenProcessPool: a worker process was killed while it trained"
                    self._ready.append((tag, worker_died(attempt, detail)))
                else:
                    self._submit(tag, job, options, attempt + 1)
        return self._ready.popleft()

    @property
    def in_flight(self) -> int:
        return len(self._futures) + len(self._ready)

    def _restart_if_broken(self) -> None:
        pool = self._pool
        if pool is not None and getattr(pool, "_broken", False):
            pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        """Stop the workers now; a child still training (the search was interrupted) is abandoned, its
        round is redone on resume."""
        if self._pool is not None:
            processes = list(getattr(self._pool, "_processes", {}).values())  # private, but no public handle
            self._pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.terminate()
                process.join(timeout=10)
            self._pool = None
        self._futures.clear()
        self._ready.clear()
