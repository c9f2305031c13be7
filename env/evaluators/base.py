"""Evaluators: what turns a finished architecture into a score.

The environment is handed an evaluator object (a Hydra ``_target_``), so real child training, a lookup
table or a fast synthetic score are interchangeable. An evaluator has one method,
``evaluate(arch, seed) -> EvalResult``, and a ``fingerprint()`` naming everything that determines its
results (used to key the evaluation cache). It may also have ``cost(arch) -> float``, a relative estimate
of how long ``arch`` takes to evaluate: parallel runners start a round's most expensive children first.

An evaluator whose results depend on the children before them (early stopping, ``env/evaluators/stopping.py``) also has
``round_options() -> dict``, keyword arguments of ``evaluate`` that runners compute once per round in the
search's process and send with every child, and ``observe(key, result)``, called by the environment with
every result it reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch

from nasrl.env.spaces.space import Architecture
from nasrl.env.threads import torch_threads


@dataclass
class EvalResult:
    """The outcome of evaluating one architecture."""

    val_accuracy: float
    params: int = 0
    seconds: float = 0.0
    failed: bool = False
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)  # extra reported numbers (never the reward)
    score: float | None = None  # what the reward is made from when it is not val_accuracy (language models)
    curve: list[float] = field(default_factory=list)  # validation accuracy after each epoch, when measured

    @property
    def stopped(self) -> bool:
        """Early stopping ended this child's training (``metrics["stopped"]``): ``val_accuracy`` is partial."""
        return bool(self.metrics.get("stopped", 0))

    @property
    def reward_input(self) -> float:
        """The number the environment's reward transform is applied to."""
        return self.val_accuracy if self.score is None else self.score

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Evaluator(Protocol):
    def evaluate(self, arch: Architecture, seed: int) -> EvalResult: ...

    def fingerprint(self) -> dict[str, Any]: ...


def require_positive(values: dict[str, Any], prefix: str = "", nullable: tuple[str, ...] = ()) -> None:
    """Refuse a count below 1 in one line naming the setting (``prefix`` + key); ``nullable`` keys may be None."""
    for key, value in values.items():
        if key in nullable and value is None:
            continue
        if value < 1:
            accepted = "a positive integer or null" if key in nullable else "a positive integer"
            raise ValueError(f"{prefix}{key} must be {accepted}, got {value!r}")


class ThreadedEvaluator:
    """Base of the evaluators that train: :meth:`evaluate` runs ``_evaluate`` with ``num_threads`` torch
    threads (None: what the runner gives each child) and records them in ``metrics["torch_threads"]``.
    :meth:`on_device` keeps one copy of the data on ``self.device`` per process; it is not pickled, so worker
    processes make their own, on their own device (a process without that GPU could not load it)."""

    num_threads: int | None = 1
    device: torch.device = torch.device("cpu")
    _on_device: tuple[torch.device, tuple[torch.Tensor, ...]] | None = None

    def on_device(self, tensors: Callable[[], tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
        """The tensors that ``tensors()`` gives (the same ones at every call) on ``self.device``, made and copied
        there once per process, and again only if the device changes, as when a worker process is given its own
        GPU. CPU: no copy."""
        if self._on_device is None or self._on_device[0] != self.device:
            self._on_device = (self.device, tuple(t.to(self.device) for t in tensors()))
        return self._on_device[1]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_on_device": None}

    def evaluate(self, arch: Architecture, seed: int, **options: Any) -> EvalResult:
        """``_evaluate(arch, seed, **options)`` on ``num_threads`` threads; ``options``: a round's options."""
        threads = self.num_threads or torch.get_num_threads()
        with torch_threads(threads):
            result = self._evaluate(arch, seed, **options)
        result.metrics["torch_threads"] = threads
        return result

    def _evaluate(self, arch: Architecture, seed: int) -> EvalResult:
        """Train and score ``arch``; a subclass that takes a round's options adds them as keyword arguments."""
        raise NotImplementedError
