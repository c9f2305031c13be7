"""``nasrl/ChildNet-v0``: designing a network is an episode, one layer hyperparameter per step.

The token protocol (what any policy in ``controller/`` relies on, and what another environment must
offer to be searched by the same loop):

- ``action_space`` is ``Discrete(K)``, K the largest number of choices of any decision; the choices
  valid now are ``obs["action_mask"]`` (also ``env.action_masks()``). Any other action raises
  ``ValueError``.
- ``obs`` is a dict: ``position`` (step index), ``decision`` (index into ``env.decision_types``, one
  per kind of decision), ``layer`` (layer the decision belongs to), ``source`` (for a skip decision,
  1 + the earlier layer it asks about, else 0), ``prev_token`` (K at the first step) and
  ``action_mask``.
- Every step but the last rewards 0; the last trains the child (through the evaluator) and rewards
  ``reward_transform(val_accuracy)``, or of the evaluator's ``score`` where it gives one (a language
  model's ``c / perplexity**2``). Its ``info`` holds the decoded architecture and the scores.

The evaluator subclasses :class:`~nasrl.env.evaluators.base.Evaluator` (anything else is refused in one line),
which declares what the environment asks of it. One may hold weights for the whole space (weight sharing,
``env/evaluators/weight_sharing.py``): the environment hands every evaluator the space (``evaluator.use_space``)
and, as that one's ``cacheable = False`` says, never caches its scores, which change as the shared weights train.

To train many children at once, the search loop calls :meth:`ChildNetEnv.defer_training` and plays a round
of episodes whose last steps only queue their children (reward 0, ``info["deferred"]``; the architecture is
decoded and its costs counted there, once), trains the queue with :meth:`ChildNetEnv.train_deferred` (in
parallel, through a runner of ``env/runners/``), and turns each queued episode into its reward and info with
:meth:`ChildNetEnv.complete`, which returns what the last step would have returned had it trained the child
itself. The asynchronous search takes each queued child at once (:meth:`ChildNetEnv.take_deferred`), trains it,
hands its result back (:meth:`ChildNetEnv.store_result`) and completes its episode when it is done. Why the
reward of a queued episode does not come from ``env.step``: Gymnasium's step must return a reward at once, and
a child trained in parallel has none yet; ``complete`` is the one place that finishes such an episode.

What the search loop (``controller/``) reads of an environment beyond Gymnasium's API is :class:`TokenEnv`;
the loop takes ``env.unwrapped`` through :func:`token_env` once, which names what an environment lacks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from nasrl.env.evaluators.base import EvalResult, Evaluator, require_evaluator
from nasrl.env.evaluators.cache import EvaluationCache, cache_key
from nasrl.env.evaluators.child_trainer import ChildTrainer
from nasrl.env.evaluators.cost import COST_NAMES, CostMeter, LatencySettings, can_measure
from nasrl.env.evaluators.cost_table import CostTable
from nasrl.env.rewards import REWARD_TRANSFORMS, CostObjective, get_reward_transform
from nasrl.env.runners.local import InProcessRunner, Job, safe_evaluate
from nasrl.env.spaces.space import Architecture, Decision, DecisionType, SearchSpace, load_space


@runtime_checkable
class TokenEnv(Protocol):
    """What the search loop (``controller/``) needs of an environment besides Gymnasium's ``reset``/``step`` and
    the token protocol above: :class:`ChildNetEnv` has it all; another environment declares it to be searched."""

    evaluator: Evaluator  # what trains the children (the runners are built around it)
    space: SearchSpace  # decodes tokens (weight sharing samples through it; its name goes to the hparams)
    decision_types: list[DecisionType]  # index = obs["decision"]: what a policy is built for (TokenSpec)

    @property
    def reward_is_accuracy(self) -> bool:
        """Whether every reward is the validation accuracy itself (TensorBoard then draws it once)."""
        ...

    @property
    def recorded_costs(self) -> tuple[str, ...]:
        """The costs a child's info may hold, by name: the fronts of ``pareto.csv`` and ``pareto.png``."""
        ...

    def defer_training(self) -> None:
        """Last steps queue their children instead of training them (a round, or the asynchronous search)."""
        ...

    def train_deferred(self, runner: Any = None) -> int:
        """Train the queued children with ``runner`` and keep their results for :meth:`complete`."""
        ...

    def take_deferred(self, stop: bool = False) -> dict[str, Job]:
        """The children queued since the last call (cache key -> job); ``stop`` ends deferring."""
        ...

    def store_result(self, key: str, result: EvalResult) -> None:
        """Keep a result that a runner trained (``key``: the queued child's), for :meth:`complete`."""
        ...

    def complete(self, info: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        """The reward and info of a deferred episode (``info`` of its last step), from its child's stored result."""
        ...


# what token_env's message lists: the protocol's attributes, then its property and methods
TOKEN_ENV_MEMBERS = (*TokenEnv.__annotations__, *(name for name in vars(TokenEnv) if not name.startswith("_")))


def token_env(env: gym.Env) -> TokenEnv:
    """``env.unwrapped`` as the :class:`TokenEnv` the search loop drives: the one checked conversion, at the loop's
    entry; an environment that lacks part of it is refused in one line naming what is missing."""
    base = env.unwrapped
    if not isinstance(base, TokenEnv):
        missing = [name for name in TOKEN_ENV_MEMBERS if not hasattr(base, name)]
        raise TypeError(
            f"{type(base).__name__} cannot be searched: it lacks {missing} of nasrl.env.childnet.TokenEnv "
            "(subclass ChildNetEnv, or define them)"
        )
    require_evaluator(base.evaluator, f"{type(base).__name__}.evaluator")
    return base


# objective.prune's tables, by (cost table, its mtime and size, metric, limit, space): see ChildNetEnv._prune
_WITHIN_LIMIT: dict[tuple, dict[tuple[int, ...], tuple[int, ...]]] = {}


class ChildNetEnv(gym.Env):
    """A Gymnasium environment whose episodes emit an architecture token by token.

    Args:
        space: search space name (``env/spaces/NAME.yaml``), YAML path, dict or :class:`SearchSpace`.
        evaluator: a :class:`~nasrl.env.evaluators.base.Evaluator`; anything else is refused in one line, not
            adapted (:func:`~nasrl.env.evaluators.base.require_evaluator` says why). Default: :class:`ChildTrainer`.
        dataset: data set for the default evaluator (name or ``load_dataset`` kwargs).
        training: keyword arguments of the default :class:`ChildTrainer` (epochs, lr, batch_size, ...).
        reward_transform: ``identity``, ``cube`` or a callable applied to the validation accuracy (or to
            the evaluator's ``EvalResult.score``, where it gives one).
        failure_reward: reward of a child whose training failed (NaN loss, an exception).
        cache: path of a SQLite evaluation cache, an :class:`EvaluationCache`, or None for one in memory.
        objective: how the reward weighs accuracy against a cost (:class:`~nasrl.env.rewards.CostObjective`;
            None: accuracy alone). Whatever it says, a child whose evaluator builds networks reports its
            ``params`` and ``flops`` in ``info`` (and ``latency_ms`` when the objective measures latency).
            In ``constraint`` mode a child over the limit is decided before training: it is neither trained
            nor queued, gets ``failure_reward``, and ``info`` says why (``reason``, ``over_limit`` 1). It is
            not a failed child (``failed`` False), so a controller that proposes many cannot stop the search
            through ``search.max_consecutive_failures``; it does count toward ``search.budget``.
        cost_table: measured costs joined to the architectures (:class:`~nasrl.env.evaluators.cost_table.CostTable`,
            whose key function maps an architecture to its row): ``objective.metric`` may then name any of its
            columns, and that column's value is each child's cost, recorded under the column's name in ``info``
            (``history.csv``'s ``metrics``) beside ``params`` and ``flops``. Only the objective's column is
            recorded: the others stay in the table, one lookup away by the same key. The tabular environments
            build it from their settings (``NASBench201Env``'s ``costs``, ``costs_key``).
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        space: str | Path | dict[str, Any] | SearchSpace = "cnn1d",
        evaluator: Evaluator | None = None,
        dataset: str | dict[str, Any] = "mnist1d",
        training: dict[str, Any] | None = None,
        reward_transform: str | Callable[[float], float] = "identity",
        failure_reward: float = 0.0,
        cache: str | Path | EvaluationCache | None = None,
        objective: CostObjective | None = None,
        cost_table: CostTable | None = None,
    ) -> None:
        self.space = load_space(space)
        if evaluator is None:
            ds = dict(dataset) if isinstance(dataset, dict) else {"name": dataset}
            evaluator = ChildTrainer(dataset=ds, **(training or {}))
        self.evaluator: Evaluator = require_evaluator(evaluator)
        evaluator.use_space(self.space)  # weight sharing builds its supernet for the space
        self.cacheable = evaluator.cacheable  # False: a score that changes (shared weights)
        self.reward_transform = get_reward_transform(reward_transform)
        self.failure_reward = float(failure_reward)
        self.cache = cache if isinstance(cache, EvaluationCache) else EvaluationCache(cache)
        self._fingerprint = evaluator.fingerprint()
        self.objective = objective if objective is not None else CostObjective()
        self.cost_table = cost_table
        self.table_metric = self._table_metric()  # the objective's metric when the cost table gives it, else None
        # objective.prune: prefix -> the choices after which an architecture within the limit remains
        self._within_limit = self._prune() if self.objective.prune else None
        self.costs: CostMeter | None = None  # None: an evaluator whose children's costs cannot be counted
        if can_measure(evaluator):
            o = self.objective
            latency = LatencySettings(o.latency_batch_size, o.latency_repeats, o.latency_warmup, o.latency_threads)
            self.costs = CostMeter(evaluator, self.space.to_dict(), latency, store=self.cache)
        elif (self.objective.active and self.table_metric is None) or self.objective.record_latency:
            raise ValueError(
                f"env.objective needs the costs of children, and {type(evaluator).__name__} cannot build its "
                "children to count them (ChildTrainer and the NAS-Bench-201 table can): set "
                "env.objective.metric=null and env.objective.record_latency=false"
            )

        self.decision_types: list[DecisionType] = self.space.decision_types
        self.num_actions = self.space.num_actions
        self.max_length = self.space.max_length
        max_depth = self.space.max_depth
        self.action_space = spaces.Discrete(self.num_actions)
        self.observation_space = spaces.Dict(
            {
                "position": spaces.Discrete(self.max_length),
                "decision": spaces.Discrete(len(self.decision_types)),
                "layer": spaces.Discrete(max_depth),
                "source": spaces.Discrete(max_depth + 1),
                "prev_token": spaces.Discrete(self.num_actions + 1),
                "action_mask": spaces.MultiBinary(self.num_actions),
            }
        )
        self._tokens: list[int] = []
        self._decision: Decision | None = None
        self._seed_base: int | None = None
        self._deferred: dict[str, Job] | None = None  # cache key -> job, while the last steps queue children
        # cache key -> a queued child: what its episode's last step decoded and counted, and once trained its
        # result; complete() builds the reward from these
        self._pending: dict[str, _Queued] = {}

    @property
    def reward_is_accuracy(self) -> bool:
        """Whether every trained child's reward is its validation accuracy itself (the identity transform, no cost
        term, and an evaluator whose reward is not made from another score, as a language model's is: those set
        ``reward_is_accuracy = False``): TensorBoard then leaves out ``search/val_accuracy``, a second copy of
        ``search/reward``."""
        identity = self.reward_transform is REWARD_TRANSFORMS["identity"] and not self.objective.active
        return identity and self.evaluator.reward_is_accuracy

    @property
    def recorded_costs(self) -> tuple[str, ...]:
        """``params``, ``flops`` and ``latency_ms`` (those the evaluator's children have), and the cost table's
        column that the objective weighs (the only one of the table recorded)."""
        return COST_NAMES if self.table_metric is None else (*COST_NAMES, self.table_metric)

    # --- Gymnasium API -------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        if seed is not None or self._seed_base is None:
            # Child seeds derive from this draw and the tokens, so one seed gives one result per architecture.
            self._seed_base = int(self.np_random.integers(2**31 - 1))
        self._tokens = []
        self._decision = self.space.next_decision(self._tokens)
        return self._observation(), {}

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        if self._decision is None:
            raise RuntimeError("the episode is over: call reset() before step()")
        dtype = self.decision_types[self._decision.type_index]
        n = self.space.num_choices(self._decision)
        try:
            token = int(action)
        except (TypeError, ValueError):
            raise ValueError(
                f"action {action!r} is not an integer; decision '{dtype.name}' accepts 0..{n - 1}"
            ) from None
        if token != action or not 0 <= token < n:
            raise ValueError(
                f"invalid action {action!r} for decision '{dtype.name}' (layer {self._decision.layer}, "
                f"position {len(self._tokens)}): valid actions are 0..{n - 1} ({', '.join(dtype.labels[:n])})"
            )
        if (allowed := self._allowed()) is not None and token not in allowed:
            rule = "the space's constraints" if self._within_limit is None else "the objective's limit (prune)"
            raise ValueError(
                f"invalid action {action!r} for decision '{dtype.name}' (layer {self._decision.layer}, "
                f"position {len(self._tokens)}): {rule} allow only {list(allowed)} "
                f"({', '.join(dtype.labels[a] for a in allowed)})"
            )
        self._tokens.append(token)
        self._decision = self.space.next_decision(self._tokens)
        if self._decision is not None:
            return self._observation(), 0.0, False, False, {}
        return self._finish()

    def action_masks(self) -> np.ndarray:
        """Boolean mask of the actions valid now (the masked-RL convention, e.g. sb3-contrib)."""
        return self._mask().astype(bool)

    def defer_training(self) -> None:
        """From now until :meth:`train_deferred` (or ``take_deferred(stop=True)``), a last step whose child is not in
        the cache queues the child instead of training it: it returns reward 0 and an info with ``deferred`` True,
        which :meth:`complete` turns into the episode's reward and info once the child is trained."""
        self._deferred = {}

    def train_deferred(self, runner: Any = None) -> int:
        """Train the queued children with ``runner`` (default: one after another here), keep their results for
        :meth:`complete`, and go back to training at the last step. Returns how many children were trained."""
        queued, self._deferred = self._deferred or {}, None
        keys = list(queued)
        runner = runner or InProcessRunner(self.evaluator)
        # each result is stored as soon as it is known, so an interrupted round keeps its finished children
        runner.run(list(queued.values()), on_result=lambda i, result: self.store_result(keys[i], result))
        return len(keys)

    def take_deferred(self, stop: bool = False) -> dict[str, Job]:
        """The children queued since :meth:`defer_training` or the last call (cache key -> job). Training stays
        deferred (the asynchronous search submits each child as soon as its episode ends) until ``stop``."""
        queued, self._deferred = self._deferred or {}, None if stop else {}
        return queued

    def store_result(self, key: str, result: EvalResult) -> None:
        """Keep the result of a queued child that a runner trained (a round's, or one at a time in the asynchronous
        search): in the cache, so a resumed search does not train it again, and for :meth:`complete`."""
        self.cache.put(key, result)
        self._pending[key].result = result

    def complete(self, info: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        """The reward and info of a deferred episode (``info``: its last step's) whose child's result was stored:
        exactly what that last step would have returned had it trained the child itself. Of several episodes that
        queued the same child, the first completed is the one that trained it (``cached`` False), the others
        read its result (``cached`` True), as they would have from the cache."""
        key = info["pending"]
        queued = self._pending[key]
        assert queued.result is not None, f"complete() before store_result() of {key}"
        cached, queued.read = queued.read, True
        queued.episodes -= 1
        if queued.episodes == 0:  # every episode that queued it is complete
            del self._pending[key]
        return self._outcome(queued.arch, queued.seed, queued.costs, key, queued.result, cached)

    def describe(self, arch: Architecture) -> str:
        """The readable form of ``arch`` in ``info["architecture"]`` and the run files."""
        return arch.describe()

    # --- internals -------------------------------------------------------------------------------

    def _table_metric(self) -> str | None:
        """The objective's metric if it is a column of the cost table (checked: a metric that is neither a counted
        cost nor a column is refused, and so is a column named like a counted cost, which would be ambiguous)."""
        table, metric = self.cost_table, self.objective.metric
        if table is None:
            self.objective.check_metric()
            return None
        self.objective.check_metric(table.columns, str(table.path))
        if metric in CostObjective.METRICS and metric in table.columns:
            raise ValueError(
                f"env.objective.metric={metric!r} is ambiguous: nasrl counts it and the cost table {table.path} has a "
                "column of that name; rename the column in the file"
            )
        return metric if metric in table.columns else None

    def _prune(self) -> dict[tuple[int, ...], tuple[int, ...]]:
        """For ``objective.prune``: every prefix of an architecture within the limit -> the choices after it that
        lead to one, from the cost table's value of every architecture of the space (enumerated once per process
        for a table, metric, limit and space: a benchmark builds an environment per search)."""
        metric, target = self.objective.metric, self.objective.target
        if self.table_metric is None or self.cost_table is None:
            raise ValueError(
                f"env.objective.prune=true needs the limit's metric from a cost table (env.costs), so that every "
                f"architecture's cost is known before the search; got env.objective.metric={metric!r}"
            )
        if (size := self.space.size()) > CostObjective.MAX_PRUNED:
            raise ValueError(
                f"env.objective.prune=true enumerates the space, and '{self.space.name}' has {size:,} architectures "
                f"(at most {CostObjective.MAX_PRUNED:,}); set env.objective.prune=false"
            )
        assert target is not None and metric is not None
        path = self.cost_table.path.resolve()
        stat = path.stat()
        key = (
            str(path),
            stat.st_mtime_ns,
            stat.st_size,
            metric,
            target,
            json.dumps(self.space.to_dict(), sort_keys=True),
        )
        if key not in _WITHIN_LIMIT:
            within: dict[tuple[int, ...], set[int]] = {}
            for tokens in self.space.sequences():
                if self.cost_table.costs(self.space.decode(tokens), (metric,))[metric] <= target:
                    for i in range(len(tokens)):
                        within.setdefault(tokens[:i], set()).add(tokens[i])
            _WITHIN_LIMIT[key] = {prefix: tuple(sorted(choices)) for prefix, choices in within.items()}
        if not _WITHIN_LIMIT[key]:
            raise ValueError(
                f"no architecture of '{self.space.name}' has {metric} <= {target:g} (env.objective.target): "
                f"the search has nothing to propose; raise the limit"
            )
        return _WITHIN_LIMIT[key]

    def _allowed(self) -> tuple[int, ...] | None:
        """The choices valid now where something rules some out (the space's constraints, ``objective.prune``),
        else None (every choice of the decision)."""
        if self._within_limit is not None:
            return self._within_limit[tuple(self._tokens)]
        return self.space.allowed(self._tokens) if self.space.constraints else None

    def child_seed(self, tokens: tuple[int, ...]) -> int:
        digest = hashlib.sha256(f"{self._seed_base}:{list(tokens)}".encode()).hexdigest()
        return int(digest[:8], 16)

    def _finish(self) -> tuple[dict, float, bool, bool, dict]:
        tokens = tuple(self._tokens)
        arch = self.space.decode(tokens)
        seed = self.child_seed(tokens)
        costs = self.costs.costs(arch, self.objective.measures_latency) if self.costs is not None else {}
        if self.table_metric is not None:
            assert self.cost_table is not None
            costs |= self.cost_table.costs(arch, (self.table_metric,))
        metric = self.objective.metric  # None: accuracy alone
        limit = self.objective.over_limit(costs[metric]) if metric is not None else ""
        if limit:  # decided before training and before queueing: nothing is trained for this child (not failed)
            info = self._info(arch, seed, EvalResult(0.0, reason=limit), costs, cached=False, over_limit=1)
            return self._observation(), self.failure_reward, True, False, info
        key = cache_key(self.space.to_dict(), self._fingerprint, tokens, seed)
        result = self.cache.get(key) if self.cacheable else None
        if result is None and self._deferred is not None and self.cacheable:
            self._deferred[key] = (arch, seed)
            queued = self._pending.setdefault(key, _Queued(arch, seed, costs))
            queued.episodes += 1
            return self._observation(), 0.0, True, False, {"tokens": list(tokens), "deferred": True, "pending": key}
        # cached: the result was paid for before this episode asked for it (another episode, run or session)
        cached = result is not None
        if result is None:
            result = safe_evaluate(self.evaluator, arch, seed)
            if self.cacheable:
                self.cache.put(key, result)
        reward, info = self._outcome(arch, seed, costs, key, result, cached)
        return self._observation(), reward, True, False, info

    def _outcome(
        self, arch: Architecture, seed: int, costs: dict[str, float], key: str, result: EvalResult, cached: bool
    ) -> tuple[float, dict[str, Any]]:
        """The reward and info of a finished episode whose child's ``result`` is known (trained now, cached, or
        trained by a runner for a queued episode)."""
        self.evaluator.observe(key, result)  # e.g. early stopping's curves
        metric = self.objective.metric
        reward = self.failure_reward if result.failed else float(self.reward_transform(result.reward_input))
        extra: dict[str, Any] = {}
        if metric is not None and self.objective.mode == "constraint":
            extra["over_limit"] = 0
        elif metric is not None:
            extra["cost_factor"] = self.objective.factor(costs[metric])
            reward = reward if result.failed else reward * extra["cost_factor"]
        return reward, self._info(arch, seed, result, costs, cached, **extra)

    def _info(
        self, arch: Architecture, seed: int, result: EvalResult, costs: dict[str, float], cached: bool, **extra: Any
    ) -> dict[str, Any]:
        """The last step's info: the architecture, the evaluator's result and the child's costs."""
        return {
            "architecture": self.describe(arch),
            "tokens": list(arch.tokens),
            "arch": arch.to_dict(),
            "val_accuracy": result.val_accuracy,
            "params": result.params or int(costs.get("params", 0)),
            "train_seconds": result.seconds,
            "failed": result.failed,
            "reason": result.reason,
            "cached": cached,
            "child_seed": seed,
            **result.metrics,
            **{k: v for k, v in costs.items() if k != "params"},  # params has its own key
            **extra,
        }

    def _mask(self) -> np.ndarray:
        mask = np.zeros(self.num_actions, dtype=np.int8)
        if self._decision is None:
            return mask
        if (allowed := self._allowed()) is not None:  # the choices after which the rules can still be met
            mask[list(allowed)] = 1
        else:
            mask[: self.space.num_choices(self._decision)] = 1
        return mask

    def _observation(self) -> dict[str, Any]:
        d = self._decision
        return {
            "position": np.int64(min(len(self._tokens), self.max_length - 1)),
            "decision": np.int64(d.type_index if d else 0),
            "layer": np.int64(d.layer if d else 0),
            "source": np.int64(d.source + 1 if d else 0),
            "prev_token": np.int64(self._tokens[-1] if self._tokens else self.num_actions),
            "action_mask": self._mask(),
        }


@dataclass
class _Queued:
    """A child queued by deferred episodes: what their last step decoded and counted, how many await it, its
    result once a runner trained it, and whether an episode read that result already (the others read it as
    cached)."""

    arch: Architecture
    seed: int
    costs: dict[str, float]
    episodes: int = 0
    result: EvalResult | None = None
    read: bool = False
