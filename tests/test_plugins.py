"""Swapping parts by config alone: a user's policy from outside the package; third-party RL on the env."""

from __future__ import annotations

import csv
import textwrap

import pytest

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


def train_with_user_package(tmp_path, *overrides: str):
    """Write the package ``my_pkg`` (outside nasrl) into ``tmp_path`` and run train.py with it importable."""
    pkg = tmp_path / "my_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from my_pkg.policy import AlwaysLast\n")
    (pkg / "policy.py").write_text(textwrap.dedent(USER_POLICY))
    return run_script(
        "train.py",
        "env=synthetic",
        *overrides,
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path)},
    )


def test_a_users_policy_plugs_in_by_config_alone(tmp_path) -> None:
    run = tmp_path / "run"
    result = train_with_user_package(
        tmp_path,
        "controller=custom",
        "controller._target_=my_pkg.AlwaysLast",
        "+controller.offset=1",
        "search.budget=3",
        "search.max_episodes=3",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert len(rows) == 3 and rows[0]["tokens"].startswith("4 ")  # second-to-last depth choice, every time
    assert rows[1]["reused"] == "1"  # a deterministic policy repeats itself: reused, not retrained


def test_a_policy_that_does_not_fit_the_settings_gets_a_hint(tmp_path) -> None:
    result = train_with_user_package(tmp_path, "controller._target_=my_pkg.AlwaysLast", "search.budget=2")
    assert result.returncode != 0
    assert "start from controller=custom" in result.stderr


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
