"""Transfer across a table's tasks: normalised regret, percentiles, the multi-task reward, and
experiments/bench_transfer.py's matrix and leave-one-task-out, on a toy table of three tasks computed by hand."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import load_experiment, run_experiment
from nasrl.env.evaluators.table import MULTI_TASK, TableError, TableEvaluator, normalised_regret, percentile
from nasrl.env.table import TableEnv

SPACE = """\
name: toy3
network: table
depth: 1
layer:
  - {name: x, choices: [0, 1]}
  - {name: y, choices: [0, 1]}
  - {name: z, choices: [0, 1]}
"""

# Three tasks, distinct values in each, so that a value's rank r (1 = lowest) has percentile (r - 0.5) x 12.5.
# Best: a at 1-1-1 (8), b at 0-0-0 (8), c at 0-0-1 (9). Medians: 4.5 in each; best - median: 3.5, 3.5, 4.5.
ROWS = {
    "0-0-0": (1, 8, 2),
    "0-0-1": (2, 6, 9),
    "0-1-0": (3, 7, 1),
    "0-1-1": (4, 5, 3),
    "1-0-0": (5, 4, 4),
    "1-0-1": (6, 3, 5),
    "1-1-0": (7, 2, 6),
    "1-1-1": (8, 1, 7),
}


@pytest.fixture
def toy(tmp_path: Path) -> tuple[Path, Path]:
    space, table = tmp_path / "toy3.yaml", tmp_path / "toy3.csv"
    space.write_text(SPACE)
    table.write_text("arch,a,b,c\n" + "".join(f"{k},{a},{b},{c}\n" for k, (a, b, c) in ROWS.items()))
    return space, table


def test_regret_and_percentile_by_hand() -> None:
    column = [1.0, 2.0, 2.0, 3.0]  # best 3, median 2
    assert normalised_regret(column, 3.0) == 0.0  # the best
    assert normalised_regret(column, 2.0) == 1.0  # the median
    assert normalised_regret(column, 1.0) == 2.0
    assert percentile(column, 1.0) == 12.5  # 0 below, 1 equal: 0.5 / 4
    assert percentile(column, 2.0) == 50.0  # 1 below, 2 equal: (1 + 1) / 4
    assert percentile(column, 3.0) == 87.5  # 3 below, 1 equal: 3.5 / 4
    with pytest.raises(TableError, match="median equals its best"):
        normalised_regret([1.0, 3.0, 3.0], 1.0)


def test_a_multi_task_reward_is_the_mean_percentile_by_hand(toy) -> None:
    space, table = toy
    env = TableEnv(space=space, table=table, reward=["a", "c"])
    env.reset(seed=0)
    for token in (0, 0, 1):  # 0-0-1: a = 2 (rank 2: 18.75), c = 9 (rank 8: 93.75)
        _, reward, done, _, info = env.step(token)
    assert done and reward == pytest.approx((18.75 + 93.75) / 2 / 100)
    assert info[MULTI_TASK] == pytest.approx(56.25) and (info["a"], info["b"], info["c"]) == (2.0, 6.0, 9.0)
    single = TableEvaluator(table, reward=["a"])  # a list of one column is that column, as today
    assert single.reward == "a" and single.tasks == ("a",) and single.scale(8.0) == 1.0


@pytest.mark.parametrize(
    ("reward", "message"),
    [
        (["a", "speed"], r"env.reward=\['a', 'speed'\] names \['speed'\], not numeric columns"),
        (["a", "a"], "is empty or repeats one"),
        ([], "is empty or repeats one"),
        ("speed", "env.reward='speed' is not a numeric column"),
    ],
)
def test_a_task_that_is_not_a_column_is_a_one_line_error(toy, reward, message) -> None:
    space, table = toy
    with pytest.raises(TableError, match=message) as caught:
        TableEnv(space=space, table=table, reward=reward)
    assert "\n" not in str(caught.value) and "class_object" not in str(caught.value)
    assert "['a', 'b', 'c']" in str(caught.value)  # what is accepted


# A budget of the table's size finds each task's best, so the matrix is known exactly:
# searched on a -> 1-1-1: b = 1, regret (8 - 1) / 3.5 = 2; c = 7, (9 - 7) / 4.5
# searched on b -> 0-0-0: a = 1, (8 - 1) / 3.5 = 2; c = 2, (9 - 2) / 4.5
# searched on c -> 0-0-1: a = 2, (8 - 2) / 3.5; b = 6, (8 - 6) / 3.5
MATRIX = [[0.0, 2.0, 2 / 4.5], [2.0, 0.0, 7 / 4.5], [6 / 3.5, 2 / 3.5, 0.0]]
# Leave one out, by the sum of the two other tasks' ranks (the mean percentile orders as it does):
# without a: b + c ranks 10, 14, 8, 8, 8, 8, 8, 8 -> 0-0-1, a = 2: regret 6 / 3.5, rank 2 of a: 18.75
# without b: a + c ranks 3, 10, 4, 7, 9, 11, 13, 15 -> 1-1-1, b = 1: regret 7 / 3.5, rank 1 of b: 6.25
# without c: a + b ranks 9, 8, 10, 9, 9, 9, 9, 9 -> 0-1-0, c = 1: regret 8 / 4.5, rank 1 of c: 6.25
LOO = {"a": (6 / 3.5, 18.75), "b": (2.0, 6.25), "c": (8 / 4.5, 6.25)}


def test_the_transfer_matrix_and_leave_one_out_by_hand(toy) -> None:
    space, table = toy
    bench = load_experiment("bench_transfer.py")
    result = bench.study(str(table), str(space), ["random", "evolution"], seeds=2, first_seed=0, budget=8, workers=1)
    assert result["tasks"] == ["a", "b", "c"] and result["searches"] == 2 * 6 * 2
    for name in ("random", "evolution"):
        assert np.array(result["matrix"][name]) == pytest.approx(np.array(MATRIX))
    for entry in result["loo"]:
        regret, pct = LOO[entry["held_out"]]
        for who in ("random", "evolution", "ceiling"):
            assert (entry[who]["regret"], entry[who]["percentile"]) == pytest.approx((regret, pct)), who


def test_leave_one_out_searches_spend_their_own_budget(toy, monkeypatch) -> None:
    space, table = toy
    bench = load_experiment("bench_transfer.py")
    spent: dict[str, set[int]] = {}
    search_once = bench.search_once

    def recorded(job: tuple) -> tuple:
        label, budget, max_episodes = job[0], job[4], job[5]
        spent.setdefault(label.split("|")[1], set()).add(budget)
        result = search_once(job)
        assert len(result[2]) <= budget and max_episodes == 20 * budget  # the benchmark's max_episodes_factor
        return result

    monkeypatch.setattr(bench, "search_once", recorded)
    result = bench.study(str(table), str(space), ["random"], seeds=2, first_seed=0, budget=8, workers=1, loo_budget=3)
    assert spent == {"a": {8}, "b": {8}, "c": {8}, "without:a": {3}, "without:b": {3}, "without:c": {3}}
    assert np.array(result["matrix"]["random"]) == pytest.approx(np.array(MATRIX))  # 8: the whole toy space


def test_the_script_writes_its_csv_markdown_and_heat_map(toy, tmp_path: Path) -> None:
    space, table = toy
    args = ("--table", str(table), "--space", str(space), "--strategies", "random", "--seeds", "1", "--budget", "8",
            "--workers", "1", "--tasks", "a", "c", "--out", "out")  # fmt: skip
    done = run_experiment("bench_transfer.py", *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    with open(out / "matrix.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["searched_on"] for r in rows] == ["a", "c"]
    assert [[float(r["a"]), float(r["c"])] for r in rows] == [[0.0, 0.4444], [1.7143, 0.0]]  # 4 decimals
    # without c, a alone: 1-1-1, c = 7: regret 2 / 4.5, rank 7 of c: 81.25
    loo = {r["held_out"]: r for r in csv.DictReader(open(out / "loo.csv", newline=""))}
    assert float(loo["c"]["random_regret"]) == pytest.approx(2 / 4.5, abs=1e-4)
    assert float(loo["c"]["ceiling_percentile"]) == pytest.approx(81.25)
    assert "| a | 0.00 | 0.44 |" in (out / "transfer.md").read_text()
    assert (out / "transfer.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "summary.json").read_text())["settings"]["budget"] == 8

    bad = run_experiment("bench_transfer.py", *args[:-5], "--tasks", "a", "speed", "--out", "bad", cwd=tmp_path)
    assert bad.returncode != 0 and bad.stderr.strip().count("\n") == 0 and "'speed'" in bad.stderr
