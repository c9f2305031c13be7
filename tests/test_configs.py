"""Every config group composes with Hydra's compose API and every _target_ instantiates."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from conftest import ROOT, write_small_corpus
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
    if env_name in ("table", "transnas101_micro", "transnas101_macro"):  # a one-row table (tests/test_table.py)
        macro = env_name == "transnas101_macro"
        cfg.env.space = cfg.env.space or "transnas101_micro"
        (tmp_path / "t.csv").write_text(f"arch,jigsaw\n{'1-1-1-1-2-3' if macro else '0-1-2-3-0-1'},90.5\n")
        cfg.env.table, cfg.env.reward = str(tmp_path / "t.csv"), "jigsaw"
    if env_name in ("lm", "lm_ws"):
        cfg.env.evaluator.dataset.path = str(write_small_corpus(tmp_path / "corpus.txt"))  # not $NASRL_DATA's
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


EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
# The results pages' reproduction runs as the command-line overrides they replaced in experiments/*_result.sh
ENAS_CONTROLLER = [
    "controller.lr=0.001",
    "controller.tanh_constant=1.5",
    "controller.entropy_weight=0.0001",
    "controller.baseline_decay=0.99",
    "controller.batch_size=20",
    "controller.replay_top_k=0",
]
COST = ["search.budget=40", "search.max_minutes=null", "env.objective.metric=params"]
AS_OVERRIDES = {
    "mnist1d_result": ["controller=lstm", "env=mnist1d"],
    "lm_result": ["controller=lstm", "env=lm"],
    "cost_accuracy": ["search.budget=40", "search.max_minutes=null"],
    "cost_soft10k": [*COST, "env.objective.target=10000", "env.objective.mode=soft"],
    "cost_hard15k": [*COST, "env.objective.target=15000", "env.objective.mode=hard"],
    "cost_hard25k": [*COST, "env.objective.target=25000", "env.objective.mode=hard"],
    "ws_lstm": ["env=mnist1d_ws", "controller=lstm"],
    "ws_lstm_batch5": ["env=mnist1d_ws", "controller=lstm", "controller.batch_size=5", "controller.replay_top_k=0"],
    "ws_lstm_enas": ["env=mnist1d_ws", "controller=lstm", *ENAS_CONTROLLER],
    "ws_random": ["env=mnist1d_ws", "controller=random"],
    "ws_random_depth2": ["env=mnist1d_ws", "controller=random", "controller.depth_power=2"],
}


def without_hydra(cfg):
    """The config a search sees: ``hydra`` (which records the choices and overrides themselves) left out."""
    return OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_into_a_typed_config_and_names_its_run_folder(name: str) -> None:
    """``nasrl-train +experiment=NAME``: a broken experiment file (an unknown setting, a bad value, a missing
    group) fails here; every one is in the table of what it stands for."""
    cfg = composed(f"+experiment={name}", "seed=3")
    OmegaConf.to_object(without_hydra(cfg))  # every value resolved and checked against the schema's types
    choices = cfg.hydra.runtime.choices
    assert choices.experiment == name
    assert cfg.hydra.run.dir.startswith(f"outputs/{choices.env}-{choices.controller}-seed3/")
    assert name in AS_OVERRIDES, f"conf/experiment/{name}.yaml: add what it stands for to AS_OVERRIDES"


# what the loops of experiments/ add on the command line: their controller, a setting of the user's
LOOPS = [(name, []) for name in sorted(AS_OVERRIDES)]
LOOPS += [(name, ["controller=random"]) for name in ("mnist1d_result", "lm_result")]


@pytest.mark.parametrize(("name", "extra"), LOOPS, ids=[" ".join([name, *extra]) for name, extra in LOOPS])
def test_an_experiment_is_the_overrides_it_replaced_and_the_command_line_still_wins(name: str, extra: list) -> None:
    experiment, overrides = (
        OmegaConf.to_container(without_hydra(composed(*given, *extra, "search.budget=7")), resolve=True)
        for given in ([f"+experiment={name}"], AS_OVERRIDES[name])
    )
    assert experiment == overrides
    assert experiment["search"]["budget"] == 7  # type: ignore[index]
