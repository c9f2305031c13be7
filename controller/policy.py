"""The policy interface that every search strategy meets (LSTM + REINFORCE, random, evolution, yours).

The search loop (``controller/search.py``) drives a policy through the environment, one step at a time::

    policy.start_episode()
    while not done:
        action = policy.act(obs)                      # obs from env.step: the token protocol of env/childnet.py
        obs, reward, done, _, info = env.step(action)
    metrics = policy.end_episode(reward, info)        # learn; return scalars to log (may be empty)

To train children in parallel, the loop may play up to ``proposals_per_round()`` episodes (start/act)
before it calls ``end_episode`` for each of them, in the same order.

A sampled episode whose architecture only trains shared weights ends with ``discard_episode()`` instead
of ``end_episode``. Plus ``state_dict()`` / ``load_state_dict()`` so a checkpoint taken between two episodes resumes the
policy exactly. A policy is built by Hydra from ``conf/controller/*.yaml`` with two extra keyword
arguments: ``spec`` (a :class:`TokenSpec` read off the environment) and ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from nasrl.env.childnet import token_env


@dataclass(frozen=True)
class TokenSpec:
    """What a policy needs to know of an environment that follows the token protocol."""

    decision_names: tuple[str, ...]  # index = obs["decision"]
    decision_kinds: tuple[str, ...]  # "categorical" or "skip"
    choice_labels: tuple[tuple[str, ...], ...]  # labels of the valid choices of each decision type
    num_actions: int  # K: size of the action space
    max_depth: int  # number of values obs["layer"] can take

    @classmethod
    def from_env(cls, env: gym.Env) -> TokenSpec:
        """The spec of ``env``, whose ``unwrapped`` must be a :class:`~nasrl.env.childnet.TokenEnv`."""
        types = token_env(env).decision_types
        return cls(
            decision_names=tuple(t.name for t in types),
            decision_kinds=tuple(t.kind for t in types),
            choice_labels=tuple(t.labels for t in types),
            num_actions=int(env.action_space.n),  # type: ignore[attr-defined]
            max_depth=int(env.observation_space["layer"].n),  # type: ignore[index]
        )


class Policy:
    """Base class of search strategies; subclass it and override the methods below."""

    # how many times the policy has updated itself (the LSTM: REINFORCE steps); None: it does not count them,
    # and the search takes the results fed back instead. A result's staleness is counted in these units
    updates: int | None = None

    def __init__(self, spec: TokenSpec, seed: int = 0) -> None:
        self.spec = spec
        self.seed = seed

    def start_episode(self) -> None:
        """Called before the first ``act`` of each episode."""

    def act(self, obs: dict[str, Any]) -> int:
        """Return a token among ``obs["action_mask"]``."""
        raise NotImplementedError

    def end_episode(self, reward: float, info: dict[str, Any]) -> dict[str, float]:
        """Called with the last step's reward and info; return metrics to log (``{}`` if none).
        With several episodes proposed, it comes once per episode: oldest first in rounds, and in the order
        their children finish in ``search.mode=async`` (``info["tokens"]`` says which episode it is)."""
        return {}

    def discard_episode(self) -> None:
        """Forget the episode started last without learning from it: weight sharing's shared-weights phase
        samples architectures from the frozen policy (``controller/weight_sharing.py``)."""

    def proposals_per_round(self) -> int | None:
        """How many episodes may be proposed before the result of the first is fed back (their children
        are trained at once). 1 (the default) is always safe; ``None``: any number, because the
        proposals do not depend on results."""
        return 1

    def choice_probabilities(self) -> dict[str, list[float]]:
        """Mean probability the policy gave each choice of each decision type lately (for TensorBoard)."""
        return {}

    def position_probabilities(self) -> list[tuple[str, list[str], list[float]]]:
        """Per decision position at the last update (for TensorBoard): a label (``depth``, ``layer 2 /
        filters``; ``layer 3 / skip`` gathers that layer's skip decisions), the labels of its lines and the
        mean probability of each (a skip line: the probability that the earlier layer feeds this one).
        ``[]``: the policy has no probabilities."""
        return []

    def greedy_probability(self) -> float | None:
        """The probability the policy now gives its most likely architecture, decoded greedily (tends to 1 as
        it converges); None where it has no such number."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def valid_actions(obs: dict[str, Any]) -> np.ndarray:
    """Indices of the actions valid in ``obs``."""
    return np.flatnonzero(np.asarray(obs["action_mask"]))
