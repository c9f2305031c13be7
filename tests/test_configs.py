"""Every config group composes with Hydra's compose API and every _target_ instantiates."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from conftest import ROOT
from nasrl.controller.build import build_env, build_policy
from nasrl.controller.policy import Policy
from nasrl.env.evaluators.data import DataError
from nasrl.scripts.app import register_configs

CONTROLLERS = sorted(p.stem for p in (ROOT / "conf" / "controller").glob("*.yaml"))
ENVS = sorted(p.stem for p in (ROOT / "conf" / "env").glob("*.yaml"))
NEEDS_A_FOLDER = {"cifar10", "mnist", "fashion_mnist"}
SHARED_TABLE = ROOT.parent / "shared" / "data" / "nb201" / "cifar10.csv"


def composed(*overrides: str):
    register_configs()
    with initialize_config_module("nasrl.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def test_the_groups_ship_what_the_readme_promises() -> None:
    assert {"lstm", "random", "evolution", "custom"} <= set(CONTROLLERS)
    assert {"mnist1d", "digits", "cifar10", "mnist", "fashion_mnist", "synthetic", "nb201"} <= set(ENVS)


def test_defaults_are_lstm_on_mnist1d() -> None:
    cfg = composed()
    assert cfg.controller._target_ == "nasrl.controller.lstm.LSTMPolicy"
    assert cfg.env.evaluator.dataset.name == "mnist1d" and cfg.env.space == "cnn1d"
    assert cfg.hydra.run.dir.startswith("outputs/")


def test_resume_writes_into_the_resumed_folder() -> None:
    cfg = composed("resume=outputs/some/run")
    assert cfg.hydra.run.dir == "outputs/some/run"
    assert cfg.hydra.output_subdir.startswith(".hydra_resume/")


@pytest.fixture(scope="module")
def controller_configs() -> dict:
    """Each controller config composed once: the controller and env groups are independent nodes of the config."""
    return {controller: composed(f"controller={controller}").controller for controller in CONTROLLERS}


@pytest.mark.parametrize("env_name", ENVS)
def test_every_combination_composes_and_instantiates(env_name: str, controller_configs: dict, tmp_path) -> None:
    """Every controller with every environment: the environment is built once (its data loaded once), and each
    controller's policy is built for it and acts once."""
    assert OmegaConf.is_missing(controller_configs["custom"], "_target_")  # the slot for the user's class
    cfg = composed(f"env={env_name}")
    OmegaConf.resolve(cfg.env)
    if env_name == "custom":  # the slot for the user's evaluator (tests/test_plugins.py fills it from the command line)
        assert OmegaConf.is_missing(cfg.env.evaluator, "_target_")
        cfg.env.evaluator = {"_target_": "nasrl.env.TokenMatchEvaluator", "target": [1, 2, 3]}
    if env_name == "nb201":
        if not SHARED_TABLE.exists():
            pytest.skip(f"{SHARED_TABLE} is absent")
        cfg.env.table = str(SHARED_TABLE)
    if env_name in NEEDS_A_FOLDER:  # nothing is downloaded: without the user's folder, a clear error
        cfg.env.evaluator.dataset.root = str(tmp_path / "nowhere")
        with pytest.raises(DataError, match="not found: expected the files"):
            build_env(cfg.env, tmp_path)
        return
    env = build_env(cfg.env, tmp_path)
    for controller, controller_cfg in controller_configs.items():
        if controller == "custom":
            continue
        policy = build_policy(controller_cfg, env, seed=0)
        assert isinstance(policy, Policy), controller
        obs, _ = env.reset(seed=0)
        policy.start_episode()
        assert obs["action_mask"][policy.act(obs)] == 1, controller
    assert (tmp_path / "cache.sqlite").exists()  # cache: null puts the cache in the run folder
