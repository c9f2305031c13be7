"""Random search (Li & Talwalkar 2019): every token uniform among the choices valid at its step."""

from __future__ import annotations

from typing import Any

import numpy as np

from nasrl.controller.policy import Policy, TokenSpec, valid_actions


class RandomPolicy(Policy):
    """Uniform over the valid choices of each decision; learns nothing.

    An architecture drawn again costs no training (the environment's cache returns its result) and does
    not count against ``search.budget``, so the budget is spent on distinct architectures.
    """

    def __init__(self, spec: TokenSpec, seed: int = 0) -> None:
        super().__init__(spec, seed)
        self.rng = np.random.default_rng(seed)

    def proposals_per_round(self) -> None:
        return None  # nothing is learned, so any number of architectures can be trained at once

    def act(self, obs: dict[str, Any]) -> int:
        return int(self.rng.choice(valid_actions(obs)))

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
