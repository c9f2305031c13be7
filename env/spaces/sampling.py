"""Uniform draws from a search space: one valid token sequence, or a set of distinct architectures.

Each token is uniform among the choices valid at its step, drawn with ``rng.integers``: the same draws, from a
generator in the same state, as ``controller=random`` makes through the environment's action mask (its
``rng.choice`` over the valid actions ``0 .. n-1`` takes one ``integers(n)`` each), so a seed gives the
architectures that random search with that seed proposes first.
"""

from __future__ import annotations

import numpy as np

from nasrl.env.spaces.space import Architecture, SearchSpace


def random_tokens(space: SearchSpace, rng: np.random.Generator) -> list[int]:
    """A uniformly drawn valid token sequence of ``space``."""
    tokens: list[int] = []
    while allowed := space.allowed(tokens):
        # allowed is 0 .. n-1 unless constraints rule some out: then the same draw as rng.choice(allowed)
        tokens.append(int(allowed[rng.integers(len(allowed))]))
    return tokens


def sample_distinct(space: SearchSpace, count: int, rng: np.random.Generator | int) -> list[Architecture]:
    """``count`` distinct architectures of ``space`` in the order they were first drawn (a draw seen before is
    skipped); ``rng`` is a generator or the seed of a new one."""
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= space.size():
        raise ValueError(f"count must be an integer from 0 to the space's {space.size()} architectures, got {count!r}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    archs: dict[tuple[int, ...], Architecture] = {}
    while len(archs) < count:
        tokens = random_tokens(space, rng)
        if tuple(tokens) not in archs:
            archs[tuple(tokens)] = space.decode(tokens)
    return list(archs.values())
