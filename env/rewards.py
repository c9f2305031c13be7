"""Rewards: the transform of a validation accuracy in [0, 1], and the objective that weighs it against a cost.

The environment's reward for a child is ``reward_transform(accuracy) * objective.factor(cost)``
(:class:`CostObjective`; with no cost metric the factor is 1, the accuracy alone).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

REWARD_TRANSFORMS: dict[str, Callable[[float], float]] = {
    "identity": lambda acc: acc,
    "cube": lambda acc: acc**3,  # Zoph & Le (2017): sharpens differences between good architectures
}


def get_reward_transform(name: str | Callable[[float], float]) -> Callable[[float], float]:
    """The transform called ``name``, or ``name`` itself if it is already a callable."""
    if callable(name):
        return name
    if name not in REWARD_TRANSFORMS:
        raise ValueError(f"unknown reward transform '{name}'; accepted are {sorted(REWARD_TRANSFORMS)}")
    return REWARD_TRANSFORMS[name]


class CostObjective:
    """Accuracy against cost: MnasNet's reward ``acc * (cost / target) ** w`` (Tan et al. 2019), or a limit.

    Args:
        metric: the cost weighed: ``params``, ``flops`` (one forward pass of one example, 2 per multiply-add),
            ``latency_ms`` (measured on this machine) or a column of the environment's cost table (``env.costs``,
            measured elsewhere: ``fpga`` of NAS-Bench-201's ``latency_ms.csv``); None: accuracy alone (the factor
            is 1). The environment checks the name (:meth:`check_metric`): only it knows its cost table.
        target: the target or limit T, in the metric's unit; needed when ``metric`` is set.
        mode: ``soft``: factor ``(cost / T) ** w`` on both sides of T (MnasNet's soft setting, w = -0.07:
            twice the cost is worth about 5% of the accuracy); ``hard``: 1 up to T and ``(cost / T) ** w_over``
            above it (MnasNet's hard setting: w = 0 under T, -1 over it); ``constraint``: a child whose cost
            is over T gets the environment's ``failure_reward`` without being trained, the others their
            accuracy.
        w: the soft exponent (<= 0).
        w_over: the hard exponent above T (<= 0).
        prune: ``constraint`` mode with a cost table's column as ``metric`` (every architecture's cost known before
            any is evaluated): the action mask rules out each choice after which no architecture within the limit
            remains, so a search proposes only architectures within it and spends no budget on the others
            (``ChildNetEnv`` enumerates the space once; at most :data:`MAX_PRUNED` architectures). Off: a child
            over the limit is proposed, gets ``failure_reward`` and counts toward the budget.
        record_latency: measure every child's latency even when ``metric`` is not ``latency_ms`` (so
            ``history.csv`` and ``pareto.csv`` have it); latency is measured only for this or that metric.
        latency_batch_size, latency_repeats, latency_warmup, latency_threads: how latency is measured: the
            median of ``latency_repeats`` forward passes of a batch of ``latency_batch_size`` random inputs,
            after ``latency_warmup`` passes, with ``latency_threads`` torch threads (``env/evaluators/cost.py``).

    A subclass may change :meth:`factor` (another trade-off) and keep everything else.
    """

    METRICS = ("params", "flops", "latency_ms")
    MAX_PRUNED = 1_000_000  # architectures that ``prune`` may enumerate
    MODES = ("soft", "hard", "constraint")

    def __init__(
        self,
        metric: str | None = None,
        target: float | None = None,
        mode: str = "soft",
        w: float = -0.07,
        w_over: float = -1.0,
        prune: bool = False,
        record_latency: bool = False,
        latency_batch_size: int = 1,
        latency_repeats: int = 20,
        latency_warmup: int = 3,
        latency_threads: int = 1,
    ) -> None:
        if metric is not None and (not isinstance(metric, str) or not metric):
            raise ValueError(f"env.objective.metric must be a cost's name or null (accuracy alone), got {metric!r}")
        if mode not in self.MODES:
            raise ValueError(f"env.objective.mode must be one of {list(self.MODES)}, got {mode!r}")
        if metric is not None and (target is None or not math.isfinite(target) or target <= 0):
            raise ValueError(
                f"env.objective.target must be a positive number (in {metric}) when env.objective.metric is set, "
                f"got {target!r}"
            )
        for key, value in (("w", w), ("w_over", w_over)):
            if not math.isfinite(value) or value > 0:
                raise ValueError(f"env.objective.{key} must be a number <= 0 (a penalty on cost), got {value!r}")
        self.metric = metric
        self.target = None if target is None else float(target)
        self.mode = mode
        self.w = float(w)
        self.w_over = float(w_over)
        if prune and mode != "constraint":
            raise ValueError(f"env.objective.prune=true needs env.objective.mode=constraint (a limit), got {mode!r}")
        self.prune = bool(prune)
        self.record_latency = bool(record_latency)
        self.latency_batch_size = latency_batch_size
        self.latency_repeats = latency_repeats
        self.latency_warmup = latency_warmup
        self.latency_threads = latency_threads

    def check_metric(self, columns: Sequence[str] = (), table: str = "") -> None:
        """Refuse a ``metric`` that is neither a counted cost nor one of ``columns`` (the cost table ``table``'s),
        in one line listing both."""
        if self.metric is None or self.metric in self.METRICS or self.metric in columns:
            return
        accepted = f"one of {list(self.METRICS)}"
        if columns:
            accepted += f", a column of the cost table {table} {list(columns)}"
        raise ValueError(f"env.objective.metric must be {accepted} or null (accuracy alone), got {self.metric!r}")

    @property
    def active(self) -> bool:
        """Whether the reward depends on a cost."""
        return self.metric is not None

    @property
    def measures_latency(self) -> bool:
        """Whether each child's latency is measured (for the reward or for the record)."""
        return self.metric == "latency_ms" or self.record_latency

    def factor(self, cost: float) -> float:
        """What the transformed accuracy is multiplied by, for a child of ``cost`` (1 without a metric, and in
        ``constraint`` mode, where a child over the limit is not trained at all, see :meth:`over_limit`)."""
        if self.metric is None or self.mode == "constraint":
            return 1.0
        assert self.target is not None
        if not cost > 0:
            raise ValueError(f"a child's {self.metric} must be positive to weigh it against the target, got {cost!r}")
        ratio = cost / self.target
        if self.mode == "soft":
            return ratio**self.w
        return 1.0 if ratio <= 1.0 else ratio**self.w_over

    def reward(self, value: float, cost: float) -> float:
        """The reward of a child whose transformed accuracy is ``value`` and whose cost is ``cost``."""
        return value * self.factor(cost)

    def over_limit(self, cost: float) -> str:
        """In ``constraint`` mode, why a child of ``cost`` gets the failure reward without training (e.g.
        ``params 123456 over the limit 100000``); '' when it is trained."""
        if self.metric is None or self.mode != "constraint" or self.target is None or cost <= self.target:
            return ""
        return f"{self.metric} {_number(cost)} over the limit {_number(self.target)}"


def _number(value: float) -> str:
    """A count as an integer, a measurement with 3 decimals."""
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"
