"""Evaluators: what turns a finished architecture into a score, and the contract every evaluator meets.

The environment is handed an evaluator object (a Hydra ``_target_``), so real child training, a lookup
table or a fast synthetic score are interchangeable. Every evaluator subclasses :class:`Evaluator`, which
declares the two methods each must have (``evaluate(arch, seed, **round_options) -> EvalResult`` and
``fingerprint()``, what keys the evaluation cache) and, by name, every optional capability the search asks
about, each with the default of an evaluator that lacks it. Callers just call: none probes an evaluator.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from nasrl.env.spaces.networks import count_flops, count_parameters
from nasrl.env.spaces.space import Architecture, SearchSpace
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


class Evaluator(ABC):
    """What turns an architecture into an :class:`EvalResult`: the contract between an evaluator and the environment,
    the runners and the search loop.

    A subclass must define :meth:`evaluate` and :meth:`fingerprint`. Every other member is an optional capability:
    its default here is what an evaluator without it means, and a subclass overrides the ones it has (a class
    attribute or a property for the flags). :class:`~nasrl.env.childnet.ChildNetEnv` refuses an object that does
    not subclass this class, in one line, rather than guess at what it can do: a capability the search would
    otherwise have to probe for is then declared, with its meaning, in exactly one place (here).
    """

    # --- what every evaluator does ---------------------------------------------------------------------------

    @abstractmethod
    def evaluate(self, arch: Architecture, seed: int, **round_options: Any) -> EvalResult:
        """Train (or look up) and score ``arch`` with child seed ``seed``. ``round_options``: what
        :meth:`round_options` gave for this child's round (an evaluator without them is called with none)."""

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """Everything that determines this evaluator's results (settings, data), JSON-serialisable: part of the
        evaluation cache's key, so two evaluators with one fingerprint must give one result per (arch, seed)."""

    # --- how its results are used ----------------------------------------------------------------------------

    @property
    def cacheable(self) -> bool:
        """Whether a result may be cached and reused (False: a score that changes, as shared weights train)."""
        return True

    @property
    def shares_weights(self) -> bool:
        """Whether the children are views of one set of shared weights (``env/evaluators/weight_sharing.py``):
        the search driver (``run_search``) then runs ENAS's schedule (``controller/weight_sharing.py``), not rounds."""
        return False

    @property
    def reward_is_accuracy(self) -> bool:
        """Whether the reward is made from ``val_accuracy`` (False: from ``EvalResult.score``, as a language
        model's perplexity-based score); TensorBoard then draws ``search/val_accuracy`` apart from the reward."""
        return True

    @property
    def score_label(self) -> str:
        """What a score of this evaluator measures, for printouts (shared weights: ``score``)."""
        return "validation accuracy"

    @property
    def summary_columns(self) -> tuple[str, ...]:
        """The ``EvalResult.metrics`` a strategy benchmark (``nasrl-benchmark``) summarises for the architecture each
        search reports, the first the one it tests; none (the default): the benchmark cannot run on it."""
        return ()

    def describe_data(self) -> str | None:
        """The name of the data the children are scored on (a data set, a corpus, a table's file name without
        its suffix), for the run's hparams (``env.dataset``); None: no data set (a synthetic score)."""
        return None

    # --- state kept across children (early stopping) ---------------------------------------------------------

    def use_space(self, space: SearchSpace) -> None:
        """Called by the environment with its search space (weight sharing builds its supernet from it)."""
        return None

    def start(self, seed: int) -> None:
        """Called by the search once, with its seed, before a resume restores the evaluator's state (weight
        sharing draws its shared weights' initial values here); default nothing."""
        return None

    def round_options(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`evaluate` for every child of a round starting now, computed once per round
        in the search's process and sent with each child (early stopping's thresholds); default none."""
        return {}

    def observe(self, key: str, result: EvalResult) -> None:
        """Called by the environment with every result it reads (``key``: its cache key), e.g. for early
        stopping's curves; default: nothing."""
        return None

    @property
    def keeps_state(self) -> bool:
        """Whether a resumed search needs :meth:`state_dict` in its checkpoint (False: it keeps nothing, and the
        checkpoint is the one a search without it writes)."""
        return False

    def state_dict(self) -> dict[str, Any]:
        """What a resumed search restores with :meth:`load_state_dict` (only asked for with ``keeps_state``)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` gave."""
        return None

    # --- scheduling: where and how long ----------------------------------------------------------------------

    # where children train; runners put a worker's children on its own GPU by setting it. None: not said
    device: torch.device | None = None

    def cost(self, arch: Architecture) -> float:
        """A relative estimate of how long ``arch`` takes to evaluate: runners start a round's costliest children
        first (longest-processing-time-first). Default 0 for all: the proposal order."""
        return 0.0

    def duration(self, arch: Architecture, seed: int) -> float | None:
        """Simulated training seconds of ``arch`` for a virtual clock
        (:class:`~nasrl.env.runners.clock.VirtualClockRunner`); None: its children take real time."""
        return None

    # whether evaluate itself waits a simulated duration in wall time (SimulatedDurations(wait=True)): a virtual
    # clock, which plays the durations without waiting, refuses such an evaluator
    wait: bool = False

    # --- costs: what lets the environment count a child's parameters, FLOPs and latency ----------------------

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """The shape of one input example of the children (no batch dimension), for an evaluator that builds
        them with :meth:`build`; None: it does not build them, and their costs cannot be counted."""
        return None

    def build(self, arch: Architecture) -> torch.nn.Module:
        """The child network of ``arch``, with fresh weights (only for an evaluator with an ``input_shape``)."""
        raise NotImplementedError(f"{type(self).__name__} does not build its children (its input_shape is None)")

    def count_costs(self, arch: Architecture) -> dict[str, int] | None:
        """``params`` and ``flops`` of ``arch`` without building it (a table's, free); None: count them on
        :meth:`build`'s network. Asked only of an evaluator with an ``input_shape``."""
        return None

    def counted_costs(self, arch: Architecture) -> dict[str, int]:
        """``params`` and ``flops`` (torch's convention, 2 per multiply-add, one example) of ``arch``: those of
        :meth:`count_costs`, or counted on :meth:`build`'s network. Once per architecture and process: the
        environment's costs, longest-first scheduling (:meth:`cost`) and simulated durations all ask here, so a
        child is built once to be counted (in the search's process, before it trains: a cost limit decides
        there) and once to be trained. The build draws its initial weights inside ``fork_rng``: counting moves
        no random state of the search."""
        known: dict[tuple[int, ...], dict[str, int]] = self.__dict__.setdefault("_counted_costs", {})
        if arch.tokens not in known:
            counted = self.count_costs(arch)
            if counted is None:
                if self.input_shape is None:
                    raise ValueError(f"{type(self).__name__} cannot count the costs of its children: no input_shape")
                with torch.random.fork_rng(devices=[]):
                    model = self.build(arch)
                example = torch.zeros(1, *self.input_shape)
                counted = {"params": count_parameters(model), "flops": count_flops(model, example)}
            known[arch.tokens] = {"params": int(counted["params"]), "flops": int(counted["flops"])}
        return known[arch.tokens]


def require_evaluator(evaluator: Any, setting: str = "env.evaluator") -> Evaluator:
    """``evaluator`` itself if it subclasses :class:`Evaluator`, else a one-line ``ValueError`` naming ``setting``.
    Refused, not adapted: what an object of another class can do would have to be guessed at (by probing it),
    and a guess that is wrong changes results silently (an uncached score cached, a stopping rule not fed)."""
    if not isinstance(evaluator, Evaluator):
        raise ValueError(
            f"{setting}: {type(evaluator).__name__} must subclass nasrl.env.evaluators.base.Evaluator (define "
            "evaluate(arch, seed, **round_options) and fingerprint(); the optional capabilities have defaults there)"
        )
    return evaluator


def require_positive(values: dict[str, Any], prefix: str = "", nullable: tuple[str, ...] = ()) -> None:
    """Refuse a count below 1 in one line naming the setting (``prefix`` + key); ``nullable`` keys may be None."""
    for key, value in values.items():
        if key in nullable and value is None:
            continue
        if value < 1:
            accepted = "a positive integer or null" if key in nullable else "a positive integer"
            raise ValueError(f"{prefix}{key} must be {accepted}, got {value!r}")


class ThreadedEvaluator(Evaluator):
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

    def evaluate(self, arch: Architecture, seed: int, **round_options: Any) -> EvalResult:
        """``_evaluate(arch, seed, **round_options)`` on ``num_threads`` threads."""
        threads = self.num_threads or torch.get_num_threads()
        with torch_threads(threads):
            result = self._evaluate(arch, seed, **round_options)
        result.metrics["torch_threads"] = threads
        return result

    def _evaluate(self, arch: Architecture, seed: int) -> EvalResult:
        """Train and score ``arch``; a subclass that takes a round's options adds them as keyword arguments."""
        raise NotImplementedError
