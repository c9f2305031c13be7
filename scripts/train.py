"""Run an architecture search.

    python scripts/train.py                                   # defaults: controller=lstm env=mnist1d
    python scripts/train.py controller.lr=3e-3 search.budget=20 seed=3
    python scripts/train.py -m seed=0,1,2                     # a sweep, one run folder per job
    python scripts/train.py resume=outputs/2026-11-28/12-00-00  # continue a run in place

Everything about a run lands in its Hydra run folder: .hydra/ (config), history.csv, best.json,
checkpoint.pt, cache.sqlite and TensorBoard events under tb/.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import gymnasium as gym
import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from controller.build import (
    build_env,
    build_policy,
    build_runner,
    one_line_error,
    register_resolvers,
    resume_config,
    seed_everything,
)
from controller.search import SearchError, run_search

register_resolvers()


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        search(cfg)
    except (ValueError, SearchError, InstantiationException, gym.error.Error) as exc:
        # bad settings, space, data, table, checkpoint or _target_: one line, no trace from deep inside
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        sys.exit(one_line_error(exc))


def search(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    resuming = cfg.resume is not None
    if resuming:
        cfg = resume_config(cfg, list(hydra_cfg.overrides.task))
    run_dir = Path(hydra_cfg.runtime.output_dir)

    seed_everything(cfg.seed)
    env = build_env(cfg.env, run_dir, cfg.get("cache", {}).get("path"))
    policy = build_policy(cfg.controller, env, cfg.seed)
    runner = build_runner(cfg.search, env)
    hparams = {f"controller.{k}": v for k, v in cfg.controller.items() if k != "_target_"}
    hparams.update({"seed": cfg.seed, "search.budget": cfg.search.budget, "env.space": cfg.env.get("space", "")})

    signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM stops as cleanly as Ctrl-C
    try:
        state = run_search(
            env,
            policy,
            budget=cfg.search.budget,
            max_episodes=cfg.search.max_episodes,
            seed=cfg.seed,
            run_dir=run_dir,
            resume=resuming,
            max_consecutive_failures=cfg.search.max_consecutive_failures,
            max_minutes=cfg.search.max_minutes,
            progress=cfg.search.progress,
            hparams=hparams,
            runner=runner,
            workers=cfg.search.workers,
        )
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: every finished architecture is in {run_dir / 'history.csv'} and the checkpoint.\n"
            f"resume with: python scripts/train.py resume={run_dir}",
            file=sys.stderr,
        )
        sys.exit(130)
    finally:
        if runner is not None:
            runner.close()
        env.close()

    best = state.best
    print(f"best architecture: {best['architecture']}")
    print(f"tokens: {best['tokens']}")
    print(
        f"validation accuracy: {best['val_accuracy']:.4f} (reward {best['reward']:.4f}), "
        f"{best['params']:,} parameters, found at episode {best['episode']}"
    )
    print(f"evaluated {state.distinct} distinct architectures in {state.episode} episodes, {state.elapsed:.0f} s")
    print(f"run folder: {run_dir}")


if __name__ == "__main__":
    main()
