"""From a Hydra config to the objects of a search: seeding, the environment, the policy, the runner (shared by
the commands in ``scripts/`` and by anyone who builds a search from a config).
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from nasrl.controller.policy import Policy, TokenSpec
from nasrl.env.childnet import token_env
from nasrl.env.runners import make_runner
from nasrl.env.runners.local import InProcessRunner


def seed_everything(seed: int) -> None:
    """The one seeding block: Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_env(env_cfg: DictConfig, run_dir: Path | None = None) -> gym.Env:
    """Instantiate the environment; ``cache: null`` puts the evaluation cache at ``run_dir/cache.sqlite``."""
    extra: dict[str, Any] = {}
    if "cache" in env_cfg and env_cfg.cache is None and run_dir is not None:
        extra["cache"] = str(run_dir / "cache.sqlite")
    elif env_cfg.get("cache") is not None:
        extra["cache"] = str(Path(env_cfg.cache).expanduser())
    evaluator = env_cfg.get("evaluator")
    if evaluator is not None and not isinstance(evaluator, Mapping):  # its schema field is Any (conf/schema.py)
        example = "env.evaluator._target_=my_pkg.MyEvaluator"
        raise ValueError(f"env.evaluator must be a mapping with a _target_ ({example}), got {evaluator!r}")
    with _plain_errors():
        return instantiate(env_cfg, _convert_="all", **extra)


def build_policy(controller_cfg: DictConfig, env: gym.Env, seed: int) -> Policy:
    # _partial_: the spec is a plain object that Hydra must not merge into the config.
    with _plain_errors():
        make = instantiate(controller_cfg, _convert_="all", _partial_=True)
    try:
        return make(spec=TokenSpec.from_env(env), seed=seed)
    except TypeError as exc:  # a class that does not take spec and seed, or a YAML of the user's with a stray key
        keys = sorted(str(k) for k in controller_cfg if k != "_target_")
        raise ValueError(
            f"controller._target_={controller_cfg._target_} could not be built with spec, seed and {keys}: {exc}. "
            "A policy is built with spec= and seed= (see nasrl.controller.policy.Policy) and the settings of its node"
        ) from None


def build_runner(search_cfg: DictConfig, env: gym.Env) -> Any:
    """What trains a round's children (``search.workers``, ``search.backend``; see ``env/runners/``). Shared weights
    train in this process: their search gets the in-process runner, which it does not use, whatever the settings."""
    evaluator = token_env(env).evaluator
    if evaluator.shares_weights:
        if search_cfg.workers > 1 or search_cfg.backend != "local":
            warnings.warn("search.workers and search.backend do not apply to weight sharing (one set of weights, "
                          "trained in this process; env.evaluator.device puts it on a GPU)", stacklevel=2)  # fmt: skip
        return InProcessRunner(evaluator)
    return make_runner(
        evaluator,
        workers=search_cfg.workers,
        backend=search_cfg.backend,
        max_retries=search_cfg.max_retries,
        ray=OmegaConf.to_container(search_cfg.ray),  # type: ignore[arg-type]
    )


@contextmanager
def _plain_errors() -> Iterator[None]:
    """Hydra wraps what a constructor raises; our own ValueErrors (bad space, data, setting) already say
    what is wrong, so they come out unwrapped."""
    try:
        yield
    except InstantiationException as exc:
        if isinstance(exc.__cause__, ValueError):
            raise exc.__cause__ from None
        raise
