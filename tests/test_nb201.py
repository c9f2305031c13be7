"""nasrl/NASBench201-v0: table lookup, clear errors for bad tables; evolution; the benchmark script."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

from conftest import ROOT, load_experiment, run_script
from nasrl.controller.evolution import EvolutionPolicy
from nasrl.controller.policy import TokenSpec
from nasrl.controller.random_search import RandomPolicy
from nasrl.controller.search import run_search
from nasrl.env.evaluators.nb201_table import TableError, parse_arch_string
from nasrl.env.nb201 import NASBench201Env
from nasrl.env.spaces.nb201_cell import EDGES, NUM_CELLS, OPS, arch_string

SHARED_TABLE = ROOT.parent / "shared" / "data" / "nb201" / "cifar10.csv"
needs_shared_table = pytest.mark.skipif(not SHARED_TABLE.exists(), reason=f"{SHARED_TABLE} is absent")


def score(ops) -> float:
    """A made-up accuracy (percent): conv3x3 edges are best, 'none' worst. Optimum: all nor_conv_3x3."""
    value = {"none": 0.0, "skip_connect": 1.0, "nor_conv_1x1": 2.0, "nor_conv_3x3": 3.0, "avg_pool_3x3": 1.5}
    return 10.0 + sum(value[o] for o in ops) * 4


def make_table(path: Path, rows=None, columns=("index", "arch", "valid_acc_12ep", "valid_acc_200ep", "test_acc_200ep")):
    cells = rows if rows is not None else list(itertools.product(OPS, repeat=len(EDGES)))
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        for i, ops in enumerate(cells):
            s = score(ops)
            full = {
                "index": i,
                "arch": arch_string(ops),
                "valid_acc_12ep": s,
                "valid_acc_200ep": s + 5,
                "test_acc_200ep": s + 4,
            }
            w.writerow([full[c] for c in columns])
    return path


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    return make_table(tmp_path_factory.mktemp("nb201") / "table.csv")


def test_arch_strings_round_trip() -> None:
    ops = ("nor_conv_3x3", "none", "skip_connect", "avg_pool_3x3", "nor_conv_1x1", "nor_conv_3x3")
    text = arch_string(ops)
    assert text == "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|"
    assert parse_arch_string(text) == ops


def test_env_passes_check_env_and_rewards_from_the_table(table) -> None:
    e = gym.make("nasrl/NASBench201-v0", table=str(table))
    check_env(e.unwrapped)
    obs, _ = e.reset(seed=0)
    assert e.action_space.n == 5 and e.unwrapped.max_length == 6
    for _ in range(6):
        obs, reward, done, _, info = e.step(3)
    assert done
    assert reward == pytest.approx(score(["nor_conv_3x3"] * 6) / 100)
    assert info["architecture"] == arch_string(["nor_conv_3x3"] * 6)
    assert info["valid_acc_200ep"] == pytest.approx(score(["nor_conv_3x3"] * 6) + 5)
    assert "test_acc_200ep" in info


def test_reward_and_reported_columns_are_settings(table) -> None:
    e = NASBench201Env(table, reward_column="test_acc_200ep", reported_columns=["valid_acc_12ep"])
    e.reset(seed=0)
    for _ in range(6):
        _, reward, _, _, info = e.step(0)
    assert reward == pytest.approx((score(["none"] * 6) + 4) / 100)
    assert info["valid_acc_12ep"] == pytest.approx(score(["none"] * 6))


def test_bad_tables_get_clear_errors(tmp_path) -> None:
    with pytest.raises(TableError, match=r"does not exist: `nasrl-data nb201` builds .*, or set env.table"):
        NASBench201Env(tmp_path / "nope.csv")
    short = make_table(tmp_path / "cols.csv", columns=("arch", "valid_acc_12ep"))
    with pytest.raises(TableError, match=r"missing columns \['valid_acc_200ep', 'test_acc_200ep'\]"):
        NASBench201Env(short)
    cells = list(itertools.product(OPS, repeat=6))
    with pytest.raises(TableError, match=rf"100 rows, expected {NUM_CELLS}"):
        NASBench201Env(make_table(tmp_path / "rows.csv", rows=cells[:100]))
    with pytest.raises(TableError, match="duplicate architecture"):
        NASBench201Env(make_table(tmp_path / "dup.csv", rows=cells[:3] + cells[:1]), expected_rows=None)
    bad = tmp_path / "unknown.csv"
    bad.write_text(
        "arch,valid_acc_12ep,valid_acc_200ep,test_acc_200ep\n|conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|,1,2,3\n"
    )
    with pytest.raises(TableError, match=r"unknown architecture string .*conv_9x9"):
        NASBench201Env(bad, expected_rows=None)


def test_a_cell_missing_from_a_partial_table_is_a_recorded_failure(tmp_path) -> None:
    e = NASBench201Env(make_table(tmp_path / "part.csv", rows=[("none",) * 6]), expected_rows=None)
    e.reset(seed=0)
    for _ in range(6):
        _, reward, _, _, info = e.step(1)
    assert info["failed"] and "is not in" in info["reason"] and reward == 0.0


def test_evolution_mutates_one_token_of_a_tournament_winner(table) -> None:
    env = NASBench201Env(table)
    policy = EvolutionPolicy(TokenSpec.from_env(env), seed=0, population_size=5, sample_size=2)
    state = run_search(env, policy, budget=200, max_episodes=300, seed=0)
    tokens = [list(map(int, r["tokens"].split())) for r in state.history]
    for i in range(5, len(tokens)):
        population = tokens[i - 5 : i]  # aging: the last P episodes
        assert any(sum(a != b for a, b in zip(tokens[i], p)) == 1 for p in population)  # one token off a parent
    random_state = run_search(NASBench201Env(table), RandomPolicy(TokenSpec.from_env(env), seed=0), 200, 300)
    assert state.best["reward"] >= random_state.best["reward"]


def test_evolution_refuses_a_tournament_larger_than_the_population(table) -> None:
    with pytest.raises(ValueError, match=r"sample_size <= population_size, got 3 and 4"):
        EvolutionPolicy(TokenSpec.from_env(NASBench201Env(table)), population_size=3, sample_size=4)


@pytest.mark.slow
def test_benchmark_script_writes_summary_table_and_curves(tmp_path, table) -> None:
    run = tmp_path / "bench"
    result = run_script(
        "benchmark.py",
        f"env.table={table}",
        "benchmark.seeds=3",
        "benchmark.budget=30",
        "benchmark.report_at=[10,30]",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads((run / "summary.json").read_text())
    summary = payload["summary"]
    assert set(summary) == {"lstm_gp", "lstm", "random", "evolution"}
    # an episode per distinct evaluation at least (more where an architecture was sampled again)
    assert all(payload["effort"][name]["episodes"] >= 30 and payload["effort"][name]["seconds"] > 0 for name in summary)
    lstm = summary["lstm"]
    entry = lstm["30"]["valid_acc_200ep"]
    assert entry["n"] == 3 and "p_vs_random" in entry
    # in this table valid_acc_200ep = reward + 5 and test_acc_200ep = reward + 4 (percent), so the reported
    # columns belong to the best-reward cell: it can only improve with more evaluations, both columns come
    # from one cell, and the best of 30 lies well above a random cell's 51 (standard deviation 10)
    assert entry["mean"] >= lstm["10"]["valid_acc_200ep"]["mean"]
    assert entry["mean"] - lstm["30"]["test_acc_200ep"]["mean"] == pytest.approx(1.0)
    assert 61 < entry["mean"] <= score(["nor_conv_3x3"] * 6) + 5
    md = (run / "summary.md").read_text()
    assert "| lstm | 30 |" in md and "REINFORCE" in md and "91.09" in md and "episodes per search" in md
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_benchmark_refuses_an_unknown_strategy(tmp_path, table) -> None:
    result = run_script(
        "benchmark.py",
        f"env.table={table}",
        "benchmark.strategies=[lstm,ppo]",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert result.returncode != 0 and "['ppo']" in result.stderr


@needs_shared_table
def test_the_shared_table_loads_with_every_cell() -> None:
    e = NASBench201Env(SHARED_TABLE)
    assert len(e.evaluator.rows) == NUM_CELLS


def test_benchmark_refuses_a_missing_table_in_one_line(tmp_path) -> None:
    result = run_script("benchmark.py", f"env.table={tmp_path / 'nope.csv'}", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert result.returncode != 0 and "does not exist: `nasrl-data nb201` builds" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_the_ranks_script_places_each_best_cell_among_the_table(table, monkeypatch, capsys) -> None:
    """experiments/nb201_ranks.py (docs/results/nb201.md): after 25 evaluations each
    seed's best-reward cell has a rank; in this table the optimum (all nor_conv_3x3, reward 82) is rank 0 and
    valid_acc_200ep = reward + 5, so the printed mean follows from the ranks' cells."""
    nb201_ranks = load_experiment("nb201_ranks.py")

    argv = ["nb201_ranks.py", "--table", str(table), "--strategy", "random", "--seeds", "3", "--budget", "25"]
    monkeypatch.setattr("sys.argv", [*argv, "--workers", "1"])
    nb201_ranks.main()
    line = next(out for out in capsys.readouterr().out.splitlines() if out.startswith("at 25:"))
    counts = json.loads(line.split("9+: ")[1])
    assert sum(counts) == 3 and len(counts) == 10
    mean = float(line.split("valid_acc_200ep ")[1].split(";")[0])
    assert 51 < mean < score(["nor_conv_3x3"] * 6) + 5 or counts[0] == 3
