"""What a child network costs: its parameters, the FLOPs of one forward pass, its latency on this machine.

Conventions (docs/guides/cost-aware-search.md states them too):

- ``params``: the number of parameters (every element of every ``nn.Parameter``).
- ``flops``: one forward pass of one example in eval mode, counted by ``torch.utils.flop_counter.FlopCounterMode``,
  which counts 2 per multiply-add (a convolution or a matrix product) and nothing for element-wise
  operations, normalisation or pooling. Published figures usually count multiply-adds (MACs): half of these.
- ``latency_ms``: the median wall time of ``repeats`` forward passes of a batch of ``batch_size`` random
  inputs, after ``warmup`` passes, in eval mode without gradients, on the CPU with ``threads`` torch threads
  (default 1, the children's default). It is a measurement of this machine at that moment: other work on
  the cores (children trained in parallel, other people's jobs) makes it slower and noisier.

:class:`CostMeter` measures each architecture once per environment, and keeps latencies in the evaluation
cache's SQLite file, so a resumed or repeated search reads them instead of measuring them again.
"""

from __future__ import annotations

import hashlib
import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import torch

from nasrl.env.evaluators.base import Evaluator
from nasrl.env.evaluators.cache import EvaluationCache
from nasrl.env.spaces.space import Architecture
from nasrl.env.threads import torch_threads

COST_NAMES = ("params", "flops", "latency_ms")


def measure_latency_ms(
    model: torch.nn.Module, batch: torch.Tensor, repeats: int = 20, warmup: int = 3, threads: int = 1
) -> float:
    """Median milliseconds of ``repeats`` forward passes of ``batch`` (after ``warmup`` untimed ones), in eval
    mode, without gradients, with ``threads`` torch threads."""
    model.eval()
    times = []
    with torch_threads(threads), torch.no_grad():
        for _ in range(warmup):
            model(batch)
        for _ in range(repeats):
            start = time.perf_counter()
            model(batch)
            times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


@dataclass(frozen=True)
class LatencySettings:
    """How latency is measured (see the module's docstring); part of the key of a stored latency."""

    batch_size: int = 1
    repeats: int = 20
    warmup: int = 3
    threads: int = 1

    def __post_init__(self) -> None:
        for key in ("batch_size", "repeats", "threads"):
            if getattr(self, key) < 1:
                raise ValueError(f"env.objective.latency_{key} must be a positive integer, got {getattr(self, key)!r}")
        if self.warmup < 0:
            raise ValueError(f"env.objective.latency_warmup must be 0 or more, got {self.warmup!r}")


def can_measure(evaluator: Evaluator) -> bool:
    """Whether the costs of the evaluator's children can be counted: it builds them (it has an ``input_shape``),
    and scores each child on its own (weight sharing does not: its children are views of one network, with no
    training of their own to compare against their cost)."""
    if evaluator.shares_weights or not evaluator.cacheable:
        return False
    return evaluator.input_shape is not None


@lru_cache(maxsize=1)
def machine_id() -> str:
    """The processor latencies were measured on, so a cache file moved to another machine measures again."""
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{platform.machine()} {model or platform.processor()}".strip()


class CostMeter:
    """Measures each architecture's costs once and remembers them.

    ``params`` and ``flops`` are the evaluator's ``counted_costs(arch)`` (counted once per architecture and
    process, see :meth:`~nasrl.env.evaluators.base.Evaluator.counted_costs`). ``latency_ms`` is measured only
    when asked for, and also kept in ``store`` (the environment's evaluation cache) under a key naming the
    space, the network builder, the tokens, the measurement settings, torch's version and the processor.
    """

    def __init__(
        self,
        evaluator: Evaluator,
        space: dict[str, Any],
        latency: LatencySettings | None = None,
        store: EvaluationCache | None = None,
    ) -> None:
        shape = evaluator.input_shape
        if not can_measure(evaluator) or shape is None:
            raise ValueError(f"{type(evaluator).__name__} cannot build its children: their costs cannot be counted")
        self.build: Callable[[Architecture], torch.nn.Module] = evaluator.build
        self.counted_costs: Callable[[Architecture], dict[str, int]] = evaluator.counted_costs
        self.input_shape: tuple[int, ...] = tuple(int(s) for s in shape)
        self.latency = latency or LatencySettings()
        self.store = store
        self._network = {"space": space, "builder": type(evaluator).__name__, "input_shape": list(self.input_shape)}
        self._known: dict[tuple[int, ...], dict[str, float]] = {}

    def costs(self, arch: Architecture, with_latency: bool = False) -> dict[str, float]:
        """``params`` and ``flops`` of ``arch`` (ints), and ``latency_ms`` with ``with_latency``."""
        known = self._known.setdefault(arch.tokens, {})
        if "params" not in known:
            known.update(self.counted_costs(arch))
        if with_latency and "latency_ms" not in known:
            known["latency_ms"] = self._latency(arch)
        return {k: known[k] for k in COST_NAMES if k in known and (k != "latency_ms" or with_latency)}

    def _model(self, arch: Architecture) -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):  # building draws initial weights: not from the search's RNG
            return self.build(arch)

    def _latency(self, arch: Architecture) -> float:
        key = self._latency_key(arch.tokens)
        if self.store is not None and (stored := self.store.get_costs(key)) is not None:
            return float(stored["latency_ms"])
        model = self._model(arch)
        generator = torch.Generator().manual_seed(0)
        batch = torch.randn(self.latency.batch_size, *self.input_shape, generator=generator)
        s = self.latency
        value = measure_latency_ms(model, batch, repeats=s.repeats, warmup=s.warmup, threads=s.threads)
        if self.store is not None:
            self.store.put_costs(key, {"latency_ms": value})
        return value

    def _latency_key(self, tokens: Sequence[int]) -> str:
        blob = {
            **self._network,
            "tokens": list(tokens),
            "latency": asdict(self.latency),
            "torch": torch.__version__,
            "machine": machine_id(),
        }
        return "latency:" + hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()
