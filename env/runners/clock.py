"""Runners that decide when results come back: :class:`VirtualClockRunner` plays a schedule on a simulated clock
(scale experiments), :class:`OrderedRunner` hands results back in a recorded order (a reproducible
asynchronous run).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from typing import Any

from nasrl.env.evaluators.base import EvalResult, Evaluator
from nasrl.env.runners.local import Job, OnResult, longest_first, round_options, safe_evaluate
from nasrl.env.spaces.space import Architecture

# --- a simulated clock, and a recorded order ----------------------------------------------------------------


class VirtualClockRunner:
    """``workers`` simulated workers on a virtual clock: a child's result is computed at once (in this
    process), and is handed back when the clock reaches its start plus ``duration(arch, seed)`` simulated
    seconds (default: the evaluator's ``duration``, :class:`nasrl.env.runners.durations.SimulatedDurations`). The
    schedule is what real workers would do with children that take exactly those times, played without
    waiting: a search of hours takes seconds, and one seed gives one schedule. A child starts on the worker
    that frees first (a round's children longest first, as the real runners do).

    ``now`` is the simulated time, ``busy`` the simulated worker-seconds spent training; their ratio to
    ``workers * now`` is :attr:`utilisation`."""

    def __init__(
        self, evaluator: Evaluator, workers: int, duration: Callable[[Architecture, int], float] | None = None
    ) -> None:
        if evaluator.wait:
            raise ValueError(
                "VirtualClockRunner simulates the waiting itself: give it an evaluator that does not wait "
                "(SimulatedDurations(..., wait=False))"
            )
        if duration is None and type(evaluator).duration is Evaluator.duration:  # the default: no durations
            raise ValueError(
                f"VirtualClockRunner needs each child's duration: {type(evaluator).__name__} has no duration(arch, "
                "seed); wrap it in nasrl.env.runners.durations.SimulatedDurations or pass duration="
            )
        self.evaluator = evaluator
        self.workers = workers
        self.duration: Callable[[Architecture, int], float | None] = duration or evaluator.duration
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
        duration = self.duration(arch, seed)
        if duration is None:  # an override of Evaluator.duration that has none for this child
            raise ValueError(f"VirtualClockRunner: {type(self.evaluator).__name__}.duration gave None for {arch}")
        seconds = float(duration)
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
