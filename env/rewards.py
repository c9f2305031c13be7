"""Reward transforms: map a validation accuracy in [0, 1] to the reward the controller sees."""

from __future__ import annotations

from collections.abc import Callable

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
