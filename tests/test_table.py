"""nasrl/Table-v0 (env=table): any tabular benchmark from a space YAML and a CSV; TransNAS-Bench-101's spaces."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from conftest import ROOT, play, run_script
from nasrl.controller.policy import TokenSpec
from nasrl.controller.random_search import RandomPolicy
from nasrl.controller.search import run_search
from nasrl.env.evaluators.table import TableError, TableEvaluator
from nasrl.env.spaces.families.table import table_key
from nasrl.env.spaces.sampling import random_tokens
from nasrl.env.spaces.space import SpaceError, load_space
from nasrl.env.table import TableEnv

SHARED = ROOT.parent / "shared" / "data" / "transnas101"
TASKS = ("autoencoder", "class_object", "class_scene", "jigsaw", "normal", "room_layout", "segmentsemantic")

TOY_SPACE = """\
name: toy
network: table
depth: 1
layer:
  - {name: width, choices: [16, 32, 64]}
  - {name: act, choices: [relu, gelu]}
  - {name: norm, choices: [none, bn]}
"""


def toy_accuracy(width: int, act: str = "relu", norm: str = "none", *rest: str) -> float:
    """Made up, in percent: wider, gelu and bn are better; the best is 64-gelu-bn at 80.0 (the defaults and
    ``rest`` let the tests write malformed keys)."""
    return 50.0 + width / 4 + 6.0 * (act == "gelu") + 8.0 * (norm == "bn")


def write_toy(folder: Path, rows=None, header=("arch", "accuracy", "latency_ms", "note")) -> tuple[Path, Path]:
    space = folder / "toy.yaml"
    space.write_text(TOY_SPACE)
    table = folder / "toy.csv"
    combos = rows if rows is not None else list(itertools.product([16, 32, 64], ["relu", "gelu"], ["none", "bn"]))
    with open(table, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for combo in combos:
            key = "-".join(map(str, combo))
            full = {"arch": key, "accuracy": toy_accuracy(*combo), "latency_ms": combo[0] / 8, "note": "made up"}
            w.writerow([full[c] for c in header])
    return space, table


@pytest.fixture
def toy(tmp_path: Path) -> tuple[Path, Path]:
    return write_toy(tmp_path)


def test_a_key_is_the_choices_in_decision_order_and_every_numeric_column_is_reported(toy) -> None:
    space, table = toy
    env = TableEnv(space=space, table=table, reward="accuracy", reward_scale="percent")
    reward, info = play(env, [2, 1, 1])  # width 64, gelu, bn
    assert info["architecture"] == "64-gelu-bn"
    assert reward == pytest.approx(0.80)  # 80 % / 100
    assert info["accuracy"] == 80.0 and info["latency_ms"] == 8.0  # raw, the reward column's too
    assert "note" not in info  # not numeric: not a metric
    assert env.table.row("16-relu-none") == {"accuracy": 54.0, "latency_ms": 2.0}
    assert env.evaluator.score_label == "validation accuracy (accuracy / 100)"


def test_reward_scales_minmax_and_raw(toy) -> None:
    space, table = toy
    minmax = TableEnv(space=space, table=table, reward="accuracy")  # the default
    assert play(minmax, [2, 1, 1])[0] == pytest.approx(1.0)  # the table's best
    assert play(minmax, [0, 0, 0])[0] == pytest.approx(0.0)  # its worst
    assert play(minmax, [1, 0, 0])[0] == pytest.approx((58 - 54) / (80 - 54))
    raw = TableEnv(space=space, table=table, reward="latency_ms", reward_scale="raw", reported=["accuracy"])
    reward, info = play(raw, [1, 0, 0])
    assert reward == 4.0 and info["accuracy"] == 58.0 and "latency_ms" not in info


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"reward": "speed"}, "env.reward='speed' is not a numeric column"),
        ({"reward": "note"}, "accepted are ['accuracy', 'latency_ms']"),
        ({"reward": None}, "env.reward is not set"),
        ({"key_column": "key"}, "no key column 'key' (env.key_column)"),
        ({"reported": ["speed"]}, "env.reported names ['speed']"),
        ({"reward_scale": "log"}, "env.reward_scale must be one of ['minmax', 'percent', 'raw']"),
        ({"table": None}, "env.table is not set"),
        ({"table": "absent.csv"}, "absent.csv does not exist"),
        ({"space": "cnn1d"}, "needs a space with network: table"),
        ({"space": None}, "env.space is not set"),
    ],
)
def test_bad_settings_are_one_line_errors(toy, settings, message) -> None:
    space, table = toy
    kwargs = {"space": space, "table": table, "reward": "accuracy", **settings}
    with pytest.raises(ValueError, match="^[^\n]*$") as caught:
        TableEnv(**kwargs)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([(16, "relu")], "key '16-relu' in column 'arch' has 2 choices; space 'toy' takes 3"),
        ([(16, "relu", "none", "x")], "has 4 choices"),
        ([(16, "swish", "none")], "choice 'swish' at place 1 is not one of decision 'act''s ['relu', 'gelu']"),
        ([(16, "relu", "none"), (16, "relu", "none")], "line 3: duplicate key '16-relu-none'"),
        ([], "the table has no rows"),
    ],
)
def test_bad_tables_are_one_line_errors(tmp_path: Path, rows, message) -> None:
    space, table = write_toy(tmp_path, rows=rows)
    with pytest.raises(TableError, match="^[^\n]*$") as caught:
        TableEnv(space=space, table=table, reward="accuracy")
    assert message in str(caught.value)


def test_a_missing_reward_column_and_a_table_that_lacks_an_architecture(tmp_path: Path) -> None:
    space, table = write_toy(tmp_path, header=("arch", "latency_ms"))
    with pytest.raises(TableError, match="env.reward='accuracy' is not a numeric column"):
        TableEnv(space=space, table=table, reward="accuracy")
    partial = [c for c in itertools.product([16, 32, 64], ["relu", "gelu"], ["none", "bn"]) if c != (64, "gelu", "bn")]
    space, table = write_toy(tmp_path, rows=partial)
    env = TableEnv(space=space, table=table, reward="accuracy")
    assert play(env, [0, 0, 0])[1]["architecture"] == "16-relu-none"
    with pytest.raises(TableError, match="^architecture 64-gelu-bn is not in .* the table lacks it[^\n]*$"):
        play(env, [2, 1, 1])


def test_a_search_on_the_toy_table_finds_its_best(toy) -> None:
    space, table = toy
    env = TableEnv(space=space, table=table, reward="accuracy")
    state = run_search(env, RandomPolicy(TokenSpec.from_env(env), seed=0), budget=12, max_episodes=2000)
    assert state.distinct == 12  # the whole space
    assert state.best["architecture"] == "64-gelu-bn"


def test_nasrl_train_env_table_runs_on_the_toy_table(toy, tmp_path: Path) -> None:
    space, table = toy
    done = run_script(
        "train.py", "env=table", f"env.space={space}", f"env.table={table}", "env.reward=accuracy",
        "controller=lstm", "search.budget=8", "search.progress=false", "hydra.run.dir=run", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(open(tmp_path / "run" / "history.csv")))
    assert len({r["architecture"] for r in rows}) == 8
    assert all(set(json.loads(r["metrics"])) == {"accuracy", "latency_ms"} for r in rows)
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert best["metrics"]["accuracy"] == max(json.loads(r["metrics"])["accuracy"] for r in rows)
    assert "accuracy (min-max scaled over the table)" in done.stdout


def test_nasrl_train_without_a_table_says_which_setting_takes_it(tmp_path: Path) -> None:
    done = run_script("train.py", "env=transnas101_micro", "env.reward=jigsaw", "hydra.run.dir=run", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: env.table is not set")


# --- TransNAS-Bench-101's spaces --------------------------------------------------------------------------------


def transnas_like(path: Path, keys: list[str]) -> Path:
    """A table in TransNAS-Bench-101's format (arch then the seven tasks), values made up from the key."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(("arch", *TASKS))
        for key in keys:
            s = sum(int(p) for p in key.split("-"))
            made_up = {"autoencoder": s / 30, "normal": s / 30, "room_layout": -1 / (1 + s)}
            w.writerow((key, *(made_up.get(t, s * 3.0) for t in TASKS)))
    return path


def macro_rule(seq: tuple[int, ...]) -> bool:
    """The benchmark's rule: resolution halved (3, 4) 1 to 4 times, channels doubled (2, 4) 1 to 3 times."""
    return 1 <= sum(m in (3, 4) for m in seq) <= 4 and 1 <= sum(m in (2, 4) for m in seq) <= 3


def test_the_macro_space_allows_exactly_the_benchmarks_skeletons() -> None:
    space = load_space("transnas101_macro")
    expected = {seq for n in (4, 5, 6) for seq in itertools.product((1, 2, 3, 4), repeat=n) if macro_rule(seq)}
    assert space.size() == len(expected) == 3256
    rng = np.random.default_rng(0)
    drawn = {tuple(int(p) for p in table_key(space.decode(random_tokens(space, rng))).split("-")) for _ in range(2000)}
    assert drawn <= expected and len(drawn) > 1000  # never an absent skeleton, and many of them
    assert load_space("transnas101_micro").size() == 4**6
    with pytest.raises(ValueError, match="breaks the space's constraints"):
        space.decode([0, 0, 0, 0, 0])  # depth 4, all normal modules: never downsampled


def test_constraints_are_checked_when_a_space_is_loaded() -> None:
    base = {"name": "c", "network": "table", "depth": 2, "layer": [{"name": "m", "choices": [1, 2]}]}
    with pytest.raises(SpaceError, match="constraints\\[0\\].among': got \\[3\\]"):
        load_space({**base, "constraints": [{"decision": "m", "among": [3], "min": 0, "max": 1}]})
    with pytest.raises(SpaceError, match="no architecture of depth 2 meets them all"):
        load_space({**base, "constraints": [{"decision": "m", "among": [1], "min": 3, "max": 4}]})
    with pytest.raises(SpaceError, match="accepted are the layer's \\['m'\\]"):
        load_space({**base, "constraints": [{"decision": "x", "among": [1], "min": 0, "max": 1}]})


@pytest.mark.parametrize("name", ["transnas101_micro", "transnas101_macro"])
def test_check_env_on_the_transnas_spaces(name: str, tmp_path: Path) -> None:
    space = load_space(name)
    if space.variable_depth:
        keys = ["-".join(map(str, s)) for n in space.depths for s in itertools.product((1, 2, 3, 4), repeat=n)
                if macro_rule(s)]  # fmt: skip
    else:
        keys = ["-".join(map(str, s)) for s in itertools.product(range(4), repeat=6)]
    table = transnas_like(tmp_path / f"{name}.csv", keys)
    env = gym.make("nasrl/Table-v0", space=name, table=str(table), reward="room_layout").unwrapped
    # check_env steps with unmasked samples of Discrete(4), and the macro space's first decision (the depth) has
    # 3 choices: seed 1 draws a valid one first (the checker's own seeded draws, seed 123, are valid too)
    env.action_space.seed(1)
    check_env(env)
    rng = np.random.default_rng(1)
    for _ in range(50):  # every episode the mask allows is a row of the table
        env.reset()
        done = False
        while not done:
            _, _, done, _, info = env.step(int(rng.choice(np.flatnonzero(env.action_masks()))))
        assert set(info) >= set(TASKS) and 0.0 <= info["val_accuracy"] <= 1.0


@pytest.mark.parametrize("name", ["micro", "macro"])
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is absent")
def test_the_real_transnas_tables_parse_and_hold_every_sampled_architecture(name: str) -> None:
    path = SHARED / f"{name}.csv"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    evaluator = TableEvaluator(path, reward="class_object")
    space = load_space(f"transnas101_{name}")
    evaluator.use_space(space)  # every key parses into the space
    assert set(evaluator.columns) == set(TASKS)
    assert len(evaluator.rows) == space.size()  # and the space has no architecture the table lacks
    rng = np.random.default_rng(2)
    for _ in range(500):
        evaluator.row(space.decode(random_tokens(space, rng)))
