"""Runners: training several children at once, in worker processes on this machine, as Ray tasks, or on a
virtual clock. :func:`make_runner` picks one from ``search.workers`` and ``search.backend``.

A runner takes a list of jobs (architecture, child seed) and returns their results in the same order,
whatever order they finish in; with the seed fixed per child, a search gives the same results whatever
the number of workers. Parallel runners start the jobs longest first (by the evaluator's ``cost``, if it
has one), so that a round does not end with its slowest child training alone while the other workers
idle, and pass each result on as soon as it is known. A child whose worker dies is retried
``max_retries`` times, then recorded as a failed child; the search goes on.

- :class:`~.local.InProcessRunner`: one child after another in this process (``search.workers=1``).
- :class:`~.local.ProcessRunner`: ``search.workers=N`` processes, torch threads per process set so that the
  cores are not oversubscribed. Children of an evaluator on CUDA (``device=cuda``, or ``auto`` on a GPU
  machine) train on GPU ``i mod (GPUs)`` in worker ``i``; an explicit ``cuda:N`` keeps them all on GPU N.
- :class:`~.ray_runner.RayRunner`: ``search.backend=ray``, one Ray task per child (``ray.address`` unset starts a local
  Ray; ``auto`` or ``ray://...`` joins a cluster), asking Ray for ``cpus_per_child`` CPUs and
  ``gpus_per_child`` GPUs (a fraction shares a GPU); Ray picks the GPU. Ray is the optional extra
  ``pip install -e ".[ray]"``.

An evaluator whose children depend on the results before them (early stopping, ``env/evaluators/stopping.py``) has
``round_options()``: every runner asks for them once, when it starts a round, in this process (where the
evaluator's state is), and passes them with each job to ``evaluate(arch, seed, **options)``, wherever it
trains (the evaluator that worker processes and Ray tasks hold was copied when they started).

The asynchronous search (``search.mode=async``) uses the same runners one child at a time:
``submit(tag, job)`` starts a child and ``next_result()`` returns ``(tag, result)`` of whichever child
finishes first. :class:`~.clock.VirtualClockRunner` plays that schedule on a simulated clock (scale experiments,
``env/runners/durations.py``), and :class:`~.clock.OrderedRunner` hands results back in a recorded order, which makes an
asynchronous run reproducible.
"""

from __future__ import annotations

from typing import Any

from nasrl.env.evaluators.base import Evaluator
from nasrl.env.runners.local import InProcessRunner, ProcessRunner
from nasrl.env.runners.ray_runner import RayRunner


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
