"""Regularized ("aging") evolution, Real et al. (AAAI 2019).

The first ``population_size`` episodes are random. After that, each episode samples ``sample_size``
members of the population, takes the best as parent, and emits the parent's tokens with one position
mutated to another valid choice; the child joins the population and the oldest member leaves.
Defaults (P=10, S=3) are those the NAS-Bench-201 paper used for its REA baseline.

With ``batch_size`` B > 1, each round after the first population proposes B children at once, each
from its own tournament on the population as it stood at the start of the round, so ``search.workers``
can train them together (a synchronous form of Real et al.'s parallel workers); the B children then
join and the B oldest leave. B = 1 is the sequential algorithm.

It acts token by token through the action mask like every policy: where a mutation (say of the depth
token) makes a planned token invalid or the sequence longer, the rest is drawn uniformly.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from nasrl.controller.policy import Policy, TokenSpec, valid_actions


class EvolutionPolicy(Policy):
    """Regularized ("aging") evolution: tournaments on a population of recent children (the module's docstring
    has the algorithm).

    Args:
        population_size: P, the children kept: the first P episodes are random, and after that each new child
            joins and the oldest member leaves, whatever its reward (aging). At least 1.
        sample_size: S, the members drawn (without replacement) for each tournament; the one with the highest
            reward is the parent. From 1 to ``population_size``.
        batch_size: B, children proposed per round once the population is full, each from its own tournament
            on the population as it stood at the start of the round, so ``search.workers`` can train them
            together; 1 is the sequential algorithm. From 1 to ``population_size``.
    """

    def __init__(
        self, spec: TokenSpec, seed: int = 0, population_size: int = 10, sample_size: int = 3, batch_size: int = 1
    ) -> None:
        super().__init__(spec, seed)
        if population_size < 1 or not 1 <= sample_size <= population_size:
            raise ValueError(
                f"evolution needs population_size >= 1 and 1 <= sample_size <= population_size, "
                f"got {population_size} and {sample_size}"
            )
        if not 1 <= batch_size <= population_size:
            raise ValueError(
                f"evolution's batch_size must be an integer from 1 to population_size={population_size}, "
                f"got {batch_size!r}"
            )
        self.population_size = population_size
        self.sample_size = sample_size
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.population: deque[tuple[list[int], float]] = deque()
        self._plan: list[int] | None = None
        self._mutate_at = -1
        self._position = 0
        self._proposed = 0  # episodes started and not yet ended

    def proposals_per_round(self) -> int:
        # the random first population can be trained at once; after that, batch_size mutants at a time
        to_fill = self.population_size - len(self.population) - self._proposed
        return to_fill if to_fill > 0 else self.batch_size

    def start_episode(self) -> None:
        self._position = 0
        self._proposed += 1
        if len(self.population) + self._proposed - 1 < self.population_size or len(self.population) < self.sample_size:
            # still filling the population at random (asynchronously, workers do not wait for a tournament)
            self._plan = None
            return
        picks = self.rng.choice(len(self.population), size=self.sample_size, replace=False)
        parent = max((self.population[i] for i in picks), key=lambda member: member[1])[0]
        self._plan = list(parent)
        self._mutate_at = int(self.rng.integers(len(parent)))

    def act(self, obs: dict[str, Any]) -> int:
        valid = valid_actions(obs)
        t, self._position = self._position, self._position + 1
        if self._plan is None or t >= len(self._plan):
            return int(self.rng.choice(valid))
        planned = self._plan[t]
        if t == self._mutate_at:
            others = valid[valid != planned]
            return int(self.rng.choice(others)) if len(others) else planned
        return planned if planned in valid else int(self.rng.choice(valid))

    def discard_episode(self) -> None:
        self._proposed = max(0, self._proposed - 1)

    def end_episode(self, reward: float, info: dict[str, Any]) -> dict[str, float]:
        self._proposed = max(0, self._proposed - 1)
        self.population.append((list(info["tokens"]), float(reward)))
        if len(self.population) > self.population_size:
            self.population.popleft()  # aging: the oldest dies, not the worst
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "population": list(self.population), "proposed": self._proposed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.population = deque((list(t), float(r)) for t, r in state["population"])
        self._proposed = int(state.get("proposed", 0))
