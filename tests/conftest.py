"""Shared test helpers: a tiny synthetic space, random valid token sequences, and running the scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from env.space import SearchSpace

ROOT = Path(__file__).resolve().parent.parent

# 10 decisions of 5 choices each: 5**10 (9.7 million) architectures, for controller tests without training.
TOY_SPACE = {
    "name": "toy",
    "network": "mlp",
    "depth": 5,
    "layer": [
        {"name": "units", "choices": [8, 16, 24, 32, 40]},
        {"name": "activation", "choices": ["relu", "tanh", "elu", "gelu", "sigmoid"]},
    ],
}
TOY_TARGET = [3, 1, 4, 1, 0, 2, 4, 3, 2, 0]


def random_tokens(space: SearchSpace, rng: np.random.Generator) -> list[int]:
    """A uniformly drawn valid token sequence of ``space``."""
    tokens: list[int] = []
    while (d := space.next_decision(tokens)) is not None:
        tokens.append(int(rng.integers(len(space.decision_types[d.type_index].choices))))
    return tokens


def chain_cnn1d_tokens(space: SearchSpace, layers: list[dict]) -> list[int]:
    """Tokens of a plain chain (layer i fed by layer i-1) of the cnn1d space with the given layer values."""
    tokens = [space.depths.index(len(layers))]
    for i, layer in enumerate(layers):
        tokens += [1 if j == i - 1 else 0 for j in range(i)]
        for d in space.layer_decisions:
            tokens.append(list(d.choices).index(layer[d.name]))
    return tokens


def run_script(script: str, *overrides: str, cwd: Path, timeout: float = 600, env: dict | None = None):
    """Run ``scripts/<script>`` as a user would, in ``cwd``; return the CompletedProcess."""
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


@pytest.fixture
def toy_space() -> dict:
    return dict(TOY_SPACE)
