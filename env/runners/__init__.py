"""Runners: what trains a round's children, one after another, in worker processes, as Ray tasks, or on a
virtual clock. :func:`make_runner` picks one from ``search.workers`` and ``search.backend``.
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
