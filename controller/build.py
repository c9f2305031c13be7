"""From a Hydra config to the objects of a search: seeding, the environment, the policy, run folders.

Shared by ``scripts/train.py`` and ``scripts/benchmark.py`` so both build things the same way.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from controller.policy import Policy, TokenSpec
from env.parallel import make_runner

# Settings a resumed run may change; everything else comes from the run's saved config.
RESUMABLE_OVERRIDES = ("search.", "cache.", "resume", "hydra.")


def seed_everything(seed: int) -> None:
    """The one seeding block: Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def one_line_error(exc: BaseException) -> str:
    """The message the entry points exit with: ``error: ...`` on one line."""
    return "error: " + " ".join(str(exc).split())


def build_env(env_cfg: DictConfig, run_dir: Path | None = None, cache_path: str | None = None) -> gym.Env:
    """Instantiate the environment; an env config with ``cache: null`` gets the shared ``cache_path``
    (``cache.path``) if set, else ``run_dir/cache.sqlite``."""
    extra: dict[str, Any] = {}
    if "cache" in env_cfg and env_cfg.cache is None and (cache_path or run_dir):
        extra["cache"] = str(Path(cache_path).expanduser()) if cache_path else str(run_dir / "cache.sqlite")
    with _plain_errors():
        return instantiate(env_cfg, _convert_="all", **extra)


def build_policy(controller_cfg: DictConfig, env: gym.Env, seed: int) -> Policy:
    # _partial_: the spec is a plain object that Hydra must not merge into the config.
    with _plain_errors():
        make = instantiate(controller_cfg, _convert_="all", _partial_=True)
    try:
        return make(spec=TokenSpec.from_env(env), seed=seed)
    except TypeError as exc:  # usually: settings of another controller passed to a user's class
        keys = sorted(k for k in controller_cfg if k != "_target_")
        raise ValueError(
            f"controller._target_={controller_cfg._target_} could not be built with spec, seed and {keys}: {exc}. "
            "For your own policy start from controller=custom, which has no settings of its own"
        ) from None


def build_runner(search_cfg: DictConfig, env: gym.Env) -> Any:
    """What trains a round's children (``search.workers``, ``search.backend``; see ``env/parallel.py``)."""
    evaluator = getattr(env.unwrapped, "evaluator", None)
    if evaluator is None:
        return None
    ray_cfg = OmegaConf.to_container(search_cfg.ray) if "ray" in search_cfg else None
    return make_runner(
        evaluator,
        workers=search_cfg.get("workers", 1),
        backend=search_cfg.get("backend", "local"),
        max_retries=search_cfg.get("max_retries", 2),
        ray=ray_cfg,  # type: ignore[arg-type]
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


def register_resolvers() -> None:
    """``nasrl_run_dir``/``nasrl_config_subdir``: a resumed run writes into its own folder, and the config
    of the resuming command goes to ``.hydra_resume/<time>`` so the run's ``.hydra/`` stays as it was."""
    if not OmegaConf.has_resolver("nasrl_run_dir"):
        OmegaConf.register_new_resolver("nasrl_run_dir", lambda resume, new: new if resume is None else resume)
    if not OmegaConf.has_resolver("nasrl_config_subdir"):
        OmegaConf.register_new_resolver(
            "nasrl_config_subdir", lambda resume, stamp: ".hydra" if resume is None else f".hydra_resume/{stamp}"
        )


def resume_config(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The saved config of the run in ``cfg.resume``, with this command's ``search.*`` overrides applied."""
    run_dir = Path(cfg.resume)
    saved = run_dir / ".hydra" / "config.yaml"
    if not (saved.exists() and (run_dir / "checkpoint.pt").exists()):
        raise ValueError(
            f"resume={cfg.resume}: not a nasrl run folder (expected .hydra/config.yaml and checkpoint.pt in it)"
        )
    old = OmegaConf.load(saved)
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    choices = OmegaConf.load(hydra_file).hydra.runtime.choices if hydra_file.exists() else {}
    last = {o.lstrip("+~").split("=", 1)[0]: o for o in overrides if "=" in o}  # the last one of a key wins
    refused = []
    for key, o in last.items():
        if key.startswith(RESUMABLE_OVERRIDES):
            continue
        value = o.split("=", 1)[1]
        if key in choices:  # a config group choice such as env=synthetic
            if str(choices[key]) != value:
                refused.append(o)
            continue
        new_value = OmegaConf.select(OmegaConf.from_dotlist([o.lstrip("+~")]), key)
        if OmegaConf.select(old, key, default=None) != new_value:
            refused.append(o)
    if refused:
        raise ValueError(
            "resume continues a run with its saved config; only search.* and cache.* settings can change, "
            f"got {refused}"
        )
    changed = [o for k, o in last.items() if k.startswith(("search.", "cache."))]
    merged = OmegaConf.merge(old, OmegaConf.from_dotlist(changed))
    merged.resume = str(run_dir)
    return merged
