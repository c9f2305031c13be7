"""Swapping parts by config alone: a user's policy and evaluator from outside the package, by ``_target_`` or
by a YAML under the user's own config folder (``hydra.searchpath``); third-party RL on the env."""

from __future__ import annotations

import csv
import json
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import run_script

USER_POLICY = '''
from nasrl.controller.policy import Policy, valid_actions


class AlwaysLast(Policy):
    """Picks the last valid choice at every step."""

    def __init__(self, spec, seed=0, offset=0):
        super().__init__(spec, seed)
        self.offset = offset

    def act(self, obs):
        valid = valid_actions(obs)
        return int(valid[max(0, len(valid) - 1 - self.offset)])
'''

# An evaluator of the user's, as nasrl/env/evaluators/base.py describes one: evaluate and fingerprint. It trains
# nothing: the reward is bonus if the first token is `first`, else 0 (so the history shows its own settings).
USER_EVALUATOR = """
from nasrl.env.evaluators.base import EvalResult, Evaluator


class FirstToken(Evaluator):
    def __init__(self, first: int, bonus: float = 1.0):
        self.first = first
        self.bonus = bonus

    def evaluate(self, arch, seed):
        return EvalResult(self.bonus if arch.tokens[0] == self.first else 0.0)

    def fingerprint(self):
        return {"evaluator": "FirstToken", "first": self.first, "bonus": self.bonus}
"""


def train_with_user_package(tmp_path, *overrides: str, env: str | None = "env=synthetic"):
    """Write the package ``my_pkg`` (outside nasrl) into ``tmp_path`` and run train.py with it importable. Every
    test writes the same package (commands run in this process, which imports ``my_pkg`` once)."""
    pkg = tmp_path / "my_pkg"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("from my_pkg.evaluator import FirstToken\nfrom my_pkg.policy import AlwaysLast\n")
    (pkg / "policy.py").write_text(textwrap.dedent(USER_POLICY))
    (pkg / "evaluator.py").write_text(textwrap.dedent(USER_EVALUATOR))
    return run_script(
        "train.py",
        *([env] if env else []),
        *overrides,
        f"hydra.run.dir={tmp_path / 'run'}",
        "search.progress=false",
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path)},
    )


def history(run: Path) -> list[dict]:
    return list(csv.DictReader(open(run / "history.csv")))


def refused_in_one_line(tmp_path, *overrides: str, env: str = "env=synthetic") -> str:
    result = train_with_user_package(tmp_path, *overrides, env=env)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert not (tmp_path / "run" / "history.csv").exists()
    return lines[0]


@pytest.mark.parametrize("offset", ["controller.offset=1", "+controller.offset=1"])  # the + of before still works
def test_a_users_policy_plugs_in_by_config_alone(tmp_path, offset) -> None:
    run = tmp_path / "run"
    result = train_with_user_package(
        tmp_path,
        "controller=custom",
        "controller._target_=my_pkg.AlwaysLast",
        offset,
        "search.budget=3",
        "search.max_episodes=3",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert len(rows) == 3 and rows[0]["tokens"].startswith("4 ")  # second-to-last depth choice, every time
    assert rows[1]["reused"] == "1"  # a deterministic policy repeats itself: reused, not retrained


def test_a_policys_target_alone_replaces_the_lstm_and_its_settings(tmp_path) -> None:
    """On the default controller=lstm: none of the LSTM's settings reach the new class, its own are typed."""
    result = train_with_user_package(
        tmp_path,
        "controller._target_=my_pkg.AlwaysLast",
        "controller.offset=2",
        "search.budget=2",
        "search.max_episodes=2",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    saved = OmegaConf.load(tmp_path / "run" / ".hydra" / "config.yaml").controller
    assert OmegaConf.to_container(saved) == {"_target_": "my_pkg.AlwaysLast", "offset": 2}
    assert all(row["tokens"].startswith("3 ") for row in history(tmp_path / "run"))


def test_a_policy_that_does_not_take_spec_and_seed_gets_a_hint(tmp_path) -> None:
    result = train_with_user_package(tmp_path, "controller._target_=my_pkg.FirstToken", "controller.first=1")
    assert result.returncode != 0
    assert "A policy is built with spec= and seed=" in result.stderr


def test_a_policy_and_an_environment_from_the_users_config_folder(tmp_path) -> None:
    """controller=my_policy and env=my_env are YAML files of the user's (no base_* schema), found through
    hydra.searchpath; the policy's knob is set from the command line and shows in the history."""
    conf = tmp_path / "my_conf"
    (conf / "controller").mkdir(parents=True)
    (conf / "env").mkdir()
    (conf / "controller" / "my_policy.yaml").write_text("_target_: my_pkg.AlwaysLast\noffset: 1\n")
    (conf / "env" / "my_env.yaml").write_text(
        "_target_: nasrl.env.ChildNetEnv\nspace: mlp\nevaluator:\n  _target_: my_pkg.FirstToken\n  first: 2\n"
    )
    searchpath = f"hydra.searchpath=[file://{conf}]"
    result = train_with_user_package(
        tmp_path,
        searchpath,
        "controller=my_policy",
        "controller.offset=2",
        "search.budget=2",
        "search.max_episodes=2",
        env="env=my_env",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = history(tmp_path / "run")
    # mlp's first decision (depth) has 5 choices: offset 2 picks choice 2, which FirstToken(first=2) rewards
    assert [row["tokens"].split()[0] for row in rows] == ["2", "2"] and float(rows[0]["reward"]) == 1.0
    refused = refused_in_one_line(
        tmp_path / "typo", searchpath, "controller=my_policy", "controller.offst=2", env="env=my_env"
    )
    assert refused.startswith("error: controller.offst: unknown setting"), refused


def test_a_users_evaluator_on_mnist1d_by_target_alone(tmp_path) -> None:
    """env.evaluator._target_ on env=mnist1d: the environment (space, cache, objective) stays, the evaluator is
    built from its own settings only (no dataset, epochs, ... of ChildTrainer), and the run resumes."""
    overrides = ["env.evaluator._target_=my_pkg.FirstToken", "env.evaluator.first=2", "env.evaluator.bonus=0.5"]
    result = train_with_user_package(tmp_path, *overrides, "controller=random", "search.budget=2", env="env=mnist1d")
    assert result.returncode == 0, result.stderr[-2000:]
    run = tmp_path / "run"
    saved = OmegaConf.load(run / ".hydra" / "config.yaml").env
    assert OmegaConf.to_container(saved.evaluator) == {"_target_": "my_pkg.FirstToken", "first": 2, "bonus": 0.5}
    assert saved.space == "cnn1d"
    rows = history(run)
    assert len(rows) == 2 and {float(r["reward"]) for r in rows} <= {0.0, 0.5}
    assert all(float(r["reward"]) == (0.5 if r["tokens"].split()[0] == "2" else 0.0) for r in rows)
    assert json.loads((run / "best.json").read_text())["tokens"]
    saved_command = OmegaConf.load(run / ".hydra" / "overrides.yaml")
    replayed = train_with_user_package(tmp_path, "--cfg", "job", *saved_command, env=None)
    assert OmegaConf.create(replayed.stdout).env.evaluator == saved.evaluator, replayed.stderr  # composes again
    resumed = train_with_user_package(tmp_path, f"resume={run}", "search.budget=3", env=None)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert history(run)[:2] == rows and len(history(run)) == 3


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["env.evaluator.frist=2"], "env.evaluator.frist: unknown setting; the settings there are ['first', 'bonus']"),
        (["+env.evaluator.dataset.name=mnist"], "env.evaluator.dataset: unknown setting; the settings there are"),
        (["env.evaluator.first=2", "env.evaluator.bonus=high"], "env.evaluator.bonus must be a float, got 'high'"),
        (["env.evaluator.first=two"], "env.evaluator.first must be an integer, got 'two'"),
        (["env.evaluator._target_=my_pkg.Nope"], "env.evaluator._target_=my_pkg.Nope does not import"),
        (["env.evaluator._target_=nowhere.Evaluator"], "env.evaluator._target_=nowhere.Evaluator does not import"),
        (["controller._target_=my_pkg.AlwaysLast", "controller.lr=0.1"], "controller.lr: unknown setting; the sett"),
        (["env.evaluator._target_=my_pkg.FirstToken"], "Missing mandatory value: env.evaluator.first"),
        (["-m", "env.evaluator._target_=my_pkg.FirstToken,my_pkg.AlwaysLast", "env.evaluator.first=1"], "a sweep ov"),
    ],
)
def test_a_users_evaluator_is_refused_in_one_line(tmp_path, overrides, expected) -> None:
    target = [] if any("_target_" in o for o in overrides) else ["env.evaluator._target_=my_pkg.FirstToken"]
    line = refused_in_one_line(tmp_path, *target, *overrides, env="env=mnist1d")
    assert expected in line, line


def test_env_custom_is_the_slot_for_a_users_evaluator(tmp_path) -> None:
    assert "env.evaluator._target_" in refused_in_one_line(tmp_path, "search.budget=2", env="env=custom")
    overrides = ["env.evaluator._target_=my_pkg.FirstToken", "env.evaluator.first=0", "env.space=mlp"]
    result = train_with_user_package(tmp_path, *overrides, "controller=random", "search.budget=3", env="env=custom")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = history(tmp_path / "run")
    assert len(rows) == 3 and all(float(r["reward"]) == float(r["tokens"].split()[0] == "0") for r in rows)


def test_maskable_ppo_trains_on_the_env_unchanged() -> None:
    sb3_contrib = pytest.importorskip("sb3_contrib")
    from nasrl.env import ChildNetEnv, TokenMatchEvaluator

    env = ChildNetEnv(space="mlp", evaluator=TokenMatchEvaluator([4, 0, 1, 2, 3]))
    model = sb3_contrib.MaskablePPO("MultiInputPolicy", env, n_steps=64, batch_size=32, seed=0, verbose=0)
    model.learn(total_timesteps=256)
    obs, _ = env.reset(seed=1)
    done = False
    while not done:  # an action outside the mask would raise ValueError here
        action, _ = model.predict(obs, action_masks=env.action_masks(), deterministic=True)
        obs, reward, done, _, info = env.step(int(action))
    target = [4, 0, 1, 2, 3]
    tokens = info["tokens"]
    assert reward == sum(a == b for a, b in zip(tokens, target)) / max(len(target), len(tokens))
