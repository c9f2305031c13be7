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
  ``reward_transform(val_accuracy)``. Its ``info`` holds the decoded architecture and the scores.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from env.cache import EvaluationCache, cache_key
from env.evaluation import ChildTrainer, EvalResult, Evaluator
from env.rewards import get_reward_transform
from env.space import Architecture, Decision, DecisionType, SearchSpace, load_space


class ChildNetEnv(gym.Env):
    """A Gymnasium environment whose episodes emit an architecture token by token.

    Args:
        space: search space name (``conf/space/NAME.yaml``), YAML path, dict or :class:`SearchSpace`.
        evaluator: object with ``evaluate(arch, seed)``; default trains the child with :class:`ChildTrainer`.
        dataset: data set for the default evaluator (name or ``load_dataset`` kwargs).
        training: keyword arguments of the default :class:`ChildTrainer` (epochs, lr, batch_size, ...).
        reward_transform: ``identity``, ``cube`` or a callable applied to the validation accuracy.
        failure_reward: reward of a child whose training failed (NaN loss, an exception).
        cache: path of a SQLite evaluation cache, an :class:`EvaluationCache`, or None for one in memory.
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
    ) -> None:
        self.space = load_space(space)
        if evaluator is None:
            ds = dict(dataset) if isinstance(dataset, dict) else {"name": dataset}
            evaluator = ChildTrainer(dataset=ds, **(training or {}))
        self.evaluator = evaluator
        self.reward_transform = get_reward_transform(reward_transform)
        self.failure_reward = float(failure_reward)
        self.cache = cache if isinstance(cache, EvaluationCache) else EvaluationCache(cache)
        self._fingerprint = (
            evaluator.fingerprint() if hasattr(evaluator, "fingerprint") else {"evaluator": repr(evaluator)}
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
        n = len(dtype.choices)
        try:
            token = int(action)
        except (TypeError, ValueError):
            raise ValueError(
                f"action {action!r} is not an integer; decision '{dtype.name}' accepts 0..{n - 1}"
            ) from None
        if token != action or not 0 <= token < n:
            raise ValueError(
                f"invalid action {action!r} for decision '{dtype.name}' (layer {self._decision.layer}, "
                f"position {len(self._tokens)}): valid actions are 0..{n - 1} ({', '.join(dtype.labels)})"
            )
        self._tokens.append(token)
        self._decision = self.space.next_decision(self._tokens)
        if self._decision is not None:
            return self._observation(), 0.0, False, False, {}
        return self._finish()

    def action_masks(self) -> np.ndarray:
        """Boolean mask of the actions valid now (the masked-RL convention, e.g. sb3-contrib)."""
        return self._mask().astype(bool)

    def describe(self, arch: Architecture) -> str:
        """The readable form of ``arch`` in ``info["architecture"]`` and the run files."""
        return arch.describe()

    # --- internals -------------------------------------------------------------------------------

    def child_seed(self, tokens: tuple[int, ...]) -> int:
        digest = hashlib.sha256(f"{self._seed_base}:{list(tokens)}".encode()).hexdigest()
        return int(digest[:8], 16)

    def _finish(self) -> tuple[dict, float, bool, bool, dict]:
        tokens = tuple(self._tokens)
        arch = self.space.decode(tokens)
        seed = self.child_seed(tokens)
        key = cache_key(self.space.to_dict(), self._fingerprint, tokens, seed)
        result = self.cache.get(key)
        reused = result is not None
        if result is None:
            try:
                result = self.evaluator.evaluate(arch, seed)
            except Exception as exc:  # a broken child is a recorded failure, not a crashed search
                result = EvalResult(0.0, failed=True, reason=f"{type(exc).__name__}: {exc}")
            self.cache.put(key, result)
        reward = self.failure_reward if result.failed else float(self.reward_transform(result.val_accuracy))
        info = {
            "architecture": self.describe(arch),
            "tokens": list(tokens),
            "arch": arch.to_dict(),
            "val_accuracy": result.val_accuracy,
            "params": result.params,
            "train_seconds": result.seconds,
            "failed": result.failed,
            "reason": result.reason,
            "reused": reused,
            "child_seed": seed,
            **result.metrics,
        }
        return self._observation(), reward, True, False, info

    def _mask(self) -> np.ndarray:
        mask = np.zeros(self.num_actions, dtype=np.int8)
        if self._decision is not None:
            mask[: len(self.decision_types[self._decision.type_index].choices)] = 1
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
