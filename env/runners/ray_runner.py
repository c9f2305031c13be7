"""Children as Ray tasks (``search.backend=ray``): one task per child, on this machine or a cluster.
Ray is the optional extra ``pip install -e ".[ray]"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nasrl.env.evaluators.base import EvalResult, Evaluator
from nasrl.env.runners.local import (
    Job,
    OnResult,
    cuda_device_of,
    longest_first,
    round_options,
    safe_evaluate,
    worker_died,
)
from nasrl.env.spaces.space import Architecture

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
        evaluator.device = torch.device("cuda")
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


def check_gpus_per_child(evaluator: Evaluator, gpus_per_child: float) -> None:
    """``search.ray.gpus_per_child`` must fit the evaluator's device (see :class:`RayRunner`); one-line errors."""
    if not (isinstance(gpus_per_child, (int, float)) and gpus_per_child >= 0):
        raise ValueError(f"search.ray.gpus_per_child must be a number >= 0 (e.g. 0.25 or 1), got {gpus_per_child!r}")
    device = evaluator.device
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
