"""Training several children at once: in worker processes on this machine, or as Ray tasks.

A runner takes a list of jobs (architecture, child seed) and returns their results in the same order,
whatever order they finish in; with the seed fixed per child, a search gives the same results whatever
the number of workers. Parallel runners start the jobs longest first (by the evaluator's ``cost``, if it
has one), so that a round does not end with its slowest child training alone while the other workers
idle, and pass each result on as soon as it is known. A child whose worker dies is retried
``max_retries`` times, then recorded as a failed child; the search goes on.

- :class:`InProcessRunner`: one child after another in this process (``search.workers=1``).
- :class:`ProcessRunner`: ``search.workers=N`` processes, torch threads per process set so that the
  cores are not oversubscribed. Children of an evaluator on CUDA (``device=cuda``, or ``auto`` on a GPU
  machine) train on GPU ``i mod (GPUs)`` in worker ``i``; an explicit ``cuda:N`` keeps them all on GPU N.
- :class:`RayRunner`: ``search.backend=ray``, one Ray task per child (``ray.address`` unset starts a local
  Ray; ``auto`` or ``ray://...`` joins a cluster), asking Ray for ``cpus_per_child`` CPUs and
  ``gpus_per_child`` GPUs (a fraction shares a GPU); Ray picks the GPU. Ray is the optional extra
  ``pip install -e ".[ray]"``.

An evaluator whose children depend on the results before them (early stopping, ``env/stopping.py``) has
``round_options()``: every runner asks for them once, when it starts a round, in this process (where the
evaluator's state is), and passes them with each job to ``evaluate(arch, seed, **options)``, wherever it
trains (the evaluator that worker processes and Ray tasks hold was copied when they started).

The asynchronous search (``search.mode=async``) uses the same runners one child at a time:
``submit(tag, job)`` starts a child and ``next_result()`` returns ``(tag, result)`` of whichever child
finishes first. :class:`VirtualClockRunner` plays that schedule on a simulated clock (scale experiments,
``env/simulated.py``), and :class:`OrderedRunner` hands results back in a recorded order, which makes an
asynchronous run reproducible.
"""

from __future__ import annotations

import ctypes
import heapq
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, ProcessPoolExecutor, as_completed, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, cast

import torch

from nasrl.env.device import worker_device
from nasrl.env.evaluation import EvalResult, Evaluator, available_cores, torch_threads
from nasrl.env.space import Architecture

Job = tuple[Architecture, int]  # (architecture, child seed)
OnResult = Callable[[int, EvalResult], None] | None  # called with (job index, result) as soon as a result is known


def round_options(evaluator: Evaluator) -> dict[str, Any]:
    """The keyword arguments of ``evaluate`` for every child of a round starting now (the evaluator's
    ``round_options()``; none for an evaluator without it)."""
    options = getattr(evaluator, "round_options", None)
    return dict(options()) if options is not None else {}


def safe_evaluate(
    evaluator: Evaluator, arch: Architecture, seed: int, options: dict[str, Any] | None = None
) -> EvalResult:
    """``evaluator.evaluate(arch, seed, **options)``, with an exception turned into a failed result (a broken
    child is a recorded failure, not a crashed search). No options: the plain two-argument call, which every
    evaluator accepts."""
    try:
        if options:
            return cast(Any, evaluator).evaluate(arch, seed, **options)  # the Evaluator protocol has no options
        return evaluator.evaluate(arch, seed)
    except Exception as exc:
        return EvalResult(0.0, failed=True, reason=f"{type(exc).__name__}: {exc}")


def longest_first(evaluator: Evaluator, jobs: Sequence[Job]) -> list[int]:
    """Indices of ``jobs``, the most expensive first by ``evaluator.cost`` (ties, and an evaluator without
    ``cost``, keep the proposal order). Starting the longest jobs first keeps every worker busy until
    near the end of a round (longest-processing-time-first scheduling)."""
    cost = getattr(evaluator, "cost", None)
    if cost is None:
        return list(range(len(jobs)))

    def estimate(arch: Architecture) -> float:
        try:
            return float(cost(arch))
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
    """The CUDA device ``evaluator`` trains on (its ``device`` attribute, as the trainers of ``nasrl.env``
    have), or None: the CPU, or an evaluator that does not say."""
    device = getattr(evaluator, "device", None)
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
        cast(Any, evaluator).device = placed  # the Evaluator protocol has no device
        torch.cuda.set_device(placed)  # what else this process puts on "cuda" goes there too


def _evaluate_in_worker(arch: Architecture, seed: int, options: dict[str, Any]) -> EvalResult:
    return safe_evaluate(_worker_evaluator, arch, seed, options)


class ProcessRunner:
    """Trains up to ``workers`` jobs at once in a pool of spawned processes (started on first use, kept for
    the whole search). A dead worker breaks the whole pool, so the jobs it took down cannot tell which of
    them killed it: they are retried one at a time in a fresh pool, where a job that breaks the pool is
    the culprit; after ``max_retries`` such retries it is recorded as failed. An evaluator on CUDA trains in
    worker i on GPU i mod (GPUs) (see :func:`nasrl.env.device.worker_device`)."""

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


# --- Ray --------------------------------------------------------------------------------------------------


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ValueError(
            'search.backend=ray needs Ray, which is not installed; install the extra: pip install -e ".[ray]" '
            "(or pip install 'ray>=2.9'), or use search.backend=local"
        ) from None
    return ray


def _evaluate_task(
    evaluator: Evaluator, arch: Architecture, seed: int, threads: int, options: dict[str, Any] | None = None
) -> EvalResult:
    torch.set_num_threads(threads)
    if cuda_device_of(evaluator) is not None:
        # Ray shows a task only the GPU it was given (CUDA_VISIBLE_DEVICES): that one is "cuda"
        cast(Any, evaluator).device = torch.device("cuda")
    return safe_evaluate(evaluator, arch, seed, options)


class RayRunner:
    """One Ray task per child. Ray retries a task whose worker process died (``max_retries``); a child
    still lost after that is a failed result. ``address=None`` starts a local Ray with ``num_cpus`` CPUs
    (all by default) and shuts it down at :meth:`close`; a Ray already initialised in this process is
    used as it is. Each child asks for ``cpus_per_child`` CPUs and ``gpus_per_child`` GPUs (0.25: four
    children share a GPU); an evaluator on CUDA needs ``gpus_per_child > 0``, and one on the CPU 0, so that
    Ray neither puts GPU children where it has no GPU to give nor holds GPUs that no child uses."""

    def __init__(
        self,
        evaluator: Evaluator,
        address: str | None = None,
        num_cpus: int | None = None,
        cpus_per_child: int = 1,
        max_retries: int = 2,
        gpus_per_child: float = 0,
    ) -> None:
        check_gpus_per_child(evaluator, gpus_per_child)
        ray = import_ray()
        self.ray = ray
        self.evaluator = evaluator
        self.max_retries = max_retries
        self.cpus_per_child = cpus_per_child
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(
                address=address if address is not None else "local",  # None would join a cluster started here
                num_cpus=num_cpus if address is None else None,
                include_dashboard=False,
                logging_level="warning",
                configure_logging=True,
            )
        self._evaluator_ref = ray.put(evaluator)  # shipped once, not with every task
        self._task = ray.remote(num_cpus=cpus_per_child, num_gpus=gpus_per_child, max_retries=max_retries)(
            _evaluate_task
        )
        self._refs: dict[Any, int] = {}  # asynchronous children in flight: object ref -> tag

    def submit(self, tag: int, job: Job) -> None:
        options = round_options(self.evaluator)
        self._refs[self._task.remote(self._evaluator_ref, *job, self.cpus_per_child, options)] = tag

    def next_result(self) -> tuple[int, EvalResult]:
        (ref,), _ = self.ray.wait(list(self._refs), num_returns=1)
        return self._refs.pop(ref), self._get(ref)

    @property
    def in_flight(self) -> int:
        return len(self._refs)

    def _get(self, ref: Any) -> EvalResult:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:  # the worker died in every attempt, or Ray lost the task
            detail = " ".join(str(exc).split())[:300]
            return worker_died(self.max_retries + 1, f"{type(exc).__name__}: {detail}")

    def run(self, jobs: Sequence[Job], on_result: OnResult = None) -> list[EvalResult]:
        options = round_options(self.evaluator)
        refs = {
            self._task.remote(self._evaluator_ref, *jobs[i], self.cpus_per_child, options): i
            for i in longest_first(self.evaluator, jobs)
        }
        results: list[EvalResult | None] = [None] * len(jobs)
        pending = list(refs)
        while pending:
            (ref,), pending = self.ray.wait(pending, num_returns=1)
            i = refs[ref]
            results[i] = result = self._get(ref)
            if on_result is not None:
                on_result(i, result)
        return results  # type: ignore[return-value]

    def close(self) -> None:
        if self._owns_ray and self.ray.is_initialized():
            self.ray.shutdown()


# --- a simulated clock, and a recorded order ----------------------------------------------------------------


class VirtualClockRunner:
    """``workers`` simulated workers on a virtual clock: a child's result is computed at once (in this
    process), and is handed back when the clock reaches its start plus ``duration(arch, seed)`` simulated
    seconds (default: the evaluator's ``duration``, :class:`nasrl.env.simulated.SimulatedDurations`). The
    schedule is what real workers would do with children that take exactly those times, played without
    waiting: a search of hours takes seconds, and one seed gives one schedule. A child starts on the worker
    that frees first (a round's children longest first, as the real runners do).

    ``now`` is the simulated time, ``busy`` the simulated worker-seconds spent training; their ratio to
    ``workers * now`` is :attr:`utilisation`."""

    def __init__(
        self, evaluator: Evaluator, workers: int, duration: Callable[[Architecture, int], float] | None = None
    ) -> None:
        if getattr(evaluator, "wait", False):
            raise ValueError(
                "VirtualClockRunner simulates the waiting itself: give it an evaluator that does not wait "
                "(SimulatedDurations(..., wait=False))"
            )
        duration = duration or getattr(evaluator, "duration", None)
        if duration is None:
            raise ValueError(
                f"VirtualClockRunner needs each child's duration: {type(evaluator).__name__} has no duration(arch, "
                "seed); wrap it in nasrl.env.simulated.SimulatedDurations or pass duration="
            )
        self.evaluator = evaluator
        self.workers = workers
        self.duration = duration
        self.now = 0.0
        self.busy = 0.0
        self._free_at = [0.0] * workers  # a heap: when each worker is next free
        self._events: list[tuple[float, int, int, EvalResult]] = []  # (finish, sequence, tag, result)
        self._sequence = 0

    @property
    def utilisation(self) -> float:
        """Simulated worker-seconds spent training / (workers x simulated seconds so far)."""
        return self.busy / (self.workers * self.now) if self.now > 0 else 0.0

    def submit(self, tag: int, job: Job, options: dict[str, Any] | None = None) -> None:
        """Start ``job`` on the worker that frees first; ``options``: its round's (default: asked for now)."""
        arch, seed = job
        options = round_options(self.evaluator) if options is None else options
        result = safe_evaluate(self.evaluator, arch, seed, options)
        seconds = float(self.duration(arch, seed))
        start = max(self.now, heapq.heappop(self._free_at))
        heapq.heappush(self._free_at, start + seconds)
        heapq.heappush(self._events, (start + seconds, self._sequence, tag, result))
        self._sequence += 1
        self.busy += seconds

    def next_result(self) -> tuple[int, EvalResult]:
        finish, _, tag, result = heapq.heappop(self._events)
        self.now = max(self.now, finish)
        return tag, result

    @property
    def in_flight(self) -> int:
        return len(self._events)

    def run(self, jobs: Sequence[Job], on_result: OnResult = None) -> list[EvalResult]:
        """A round: every job starts as soon as a worker is free, longest first by ``cost``; the round ends
        when its last child does."""
        options = round_options(self.evaluator)  # once per round, as the other runners do
        for i in longest_first(self.evaluator, jobs):
            self.submit(i, jobs[i], options)
        results: list[EvalResult | None] = [None] * len(jobs)
        while self._events:
            i, results[i] = self.next_result()
            if on_result is not None:
                on_result(i, results[i])  # type: ignore[arg-type]
        return results  # type: ignore[return-value]

    def close(self) -> None:
        pass


class OrderedRunner:
    """Hands back the results of ``runner`` in a recorded order of tags (``completions.txt`` of an
    asynchronous run folder), whatever order its children finish in: an asynchronous search given the same
    order is the same search. ``start`` skips the part of the order that a resumed run has already fed.
    Past the end of the order, results come as they finish."""

    def __init__(self, runner: Any, order: Sequence[int], start: int = 0) -> None:
        self.runner = runner
        self.evaluator = runner.evaluator
        self.order = list(order)
        self.position = start
        self._submitted: set[int] = set()
        self._finished: dict[int, EvalResult] = {}

    def submit(self, tag: int, job: Job) -> None:
        self._submitted.add(tag)
        self.runner.submit(tag, job)

    def next_result(self) -> tuple[int, EvalResult]:
        if self.position >= len(self.order):
            tag, result = self._finished.popitem() if self._finished else self.runner.next_result()
            self._submitted.discard(tag)
            return tag, result
        tag = self.order[self.position]
        if tag not in self._submitted:
            raise ValueError(
                f"the recorded order's completion {self.position} is proposal {tag}, which is not in flight "
                f"(in flight: {sorted(self._submitted)}): this search differs from the recorded one"
            )
        while tag not in self._finished:
            finished, result = self.runner.next_result()
            self._finished[finished] = result
        self.position += 1
        self._submitted.discard(tag)
        return tag, self._finished.pop(tag)

    @property
    def in_flight(self) -> int:
        return len(self._submitted)

    def run(self, jobs: Sequence[Job], on_result: OnResult = None) -> list[EvalResult]:
        return self.runner.run(jobs, on_result)

    def close(self) -> None:
        self.runner.close()


def check_gpus_per_child(evaluator: Evaluator, gpus_per_child: float) -> None:
    """``search.ray.gpus_per_child`` must fit the evaluator's device (see :class:`RayRunner`); one-line errors."""
    if not (isinstance(gpus_per_child, (int, float)) and gpus_per_child >= 0):
        raise ValueError(f"search.ray.gpus_per_child must be a number >= 0 (e.g. 0.25 or 1), got {gpus_per_child!r}")
    device = getattr(evaluator, "device", None)
    if not isinstance(device, torch.device):
        return  # an evaluator that does not say where it trains: the user's own choice stands
    if device.type == "cuda" and gpus_per_child == 0:
        raise ValueError(
            f"children train on {device}, but search.ray.gpus_per_child=0 gives Ray tasks no GPU; "
            "set search.ray.gpus_per_child (e.g. 0.25: four children share a GPU, 1: a GPU each)"
        )
    if device.type != "cuda" and gpus_per_child > 0:
        raise ValueError(
            f"search.ray.gpus_per_child={gpus_per_child}, but children train on {device}; "
            "set env.evaluator.device=cuda (or auto on a GPU machine), or search.ray.gpus_per_child=0"
        )


def make_runner(
    evaluator: Evaluator,
    workers: int = 1,
    backend: str = "local",
    max_retries: int = 2,
    ray: dict[str, Any] | None = None,
) -> InProcessRunner | ProcessRunner | RayRunner:
    """The runner for ``search.workers`` / ``search.backend`` (``local`` or ``ray``)."""
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"search.workers must be a positive integer, got {workers!r}")
    if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
        raise ValueError(f"search.max_retries must be a non-negative integer, got {max_retries!r}")
    if backend == "ray":
        return RayRunner(evaluator, max_retries=max_retries, **(ray or {}))
    if backend != "local":
        raise ValueError(f"search.backend must be one of ['local', 'ray'], got {backend!r}")
    if workers == 1:
        return InProcessRunner(evaluator)
    return ProcessRunner(evaluator, workers, max_retries=max_retries)
