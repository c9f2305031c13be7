"""Run an architecture search (``nasrl-train``; ``python scripts/train.py`` is the same command).

    nasrl-train                                         # defaults: controller=lstm env=mnist1d
    nasrl-train controller.lr=3e-3 search.budget=20 seed=3
    nasrl-train -m seed=0,1,2                           # a sweep, one run folder per job
    nasrl-train resume=outputs/mnist1d-lstm-seed0/2026-11-28_12-00-00   # continue a run in place

Everything about a run lands in its Hydra run folder: .hydra/ (config), train.log (what it printed),
history.csv, best.json, checkpoint.pt, cache.sqlite and TensorBoard events under tb/.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, cast

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from nasrl.controller.build import build_env, build_policy, build_runner, seed_everything
from nasrl.controller.monitor import env_hparams
from nasrl.controller.runfolder import resume_config
from nasrl.controller.search import result_lines, run_search
from nasrl.scripts.app import register_configs, report, run_app, stops_on_bad_input


@hydra.main(config_path="pkg://nasrl.conf", config_name="config", version_base="1.3")
def search(cfg: DictConfig) -> None:
    with stops_on_bad_input():
        _search(cfg)


def _search(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    resuming = cfg.resume is not None
    if resuming:
        cfg = resume_config(cfg.resume, list(hydra_cfg.overrides.task))
    run_dir = Path(hydra_cfg.runtime.output_dir)

    env_settings = cast(dict[str, Any], OmegaConf.to_container(cfg.env))  # a mapping: env is a config group
    hparams = {
        "controller": cfg.controller._target_.rsplit(".", 1)[-1],
        "env": cfg.env._target_.rsplit(".", 1)[-1],
        "seed": cfg.seed,
        "search.budget": cfg.search.budget,
        **{f"controller.{k}": v for k, v in cfg.controller.items() if k != "_target_"},
        **{f"env.{k}": v for k, v in env_settings.items() if not isinstance(v, (dict, list))},
    }
    seed_everything(cfg.seed)
    with contextlib.ExitStack() as cleanup:
        try:  # an interrupt at any moment, data loading included, leaves a folder that resume continues
            env = build_env(cfg.env, run_dir)
            cleanup.callback(env.close)
            hparams |= env_hparams(env)  # env: class, space and data set in one column; env.space, env.dataset
            policy = build_policy(cfg.controller, env, cfg.seed)
            runner = build_runner(cfg.search, env)
            cleanup.callback(runner.close)
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
                mode=cfg.search.mode,
                completion_order=cfg.search.completion_order,
            )
        except KeyboardInterrupt:
            report(
                f"\ninterrupted: every finished architecture is in {run_dir / 'history.csv'} and the checkpoint.\n"
                f"resume with: nasrl-train resume={run_dir}",
                err=True,
            )
            sys.exit(130)

    for line in result_lines(state, env, run_dir):
        report(line)


def main() -> None:
    """The console script ``nasrl-train``."""
    register_configs()
    run_app(search)


if __name__ == "__main__":
    main()
