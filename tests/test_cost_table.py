"""Costs from a table (env.costs): the join, its one-line errors, a constrained search that never reports an
architecture over the limit (best.json, the final print, nasrl-benchmark), and the front of a table's cost."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import ROOT, play, run_script
from nasrl.controller.pareto import candidates, fronts, hypervolume
from nasrl.controller.policy import TokenSpec
from nasrl.controller.random_search import RandomPolicy
from nasrl.controller.search import result_lines, run_search
from nasrl.env.evaluators.cost_table import CostTableError
from nasrl.env.nb201 import NASBench201Env
from nasrl.env.rewards import CostObjective
from nasrl.env.spaces.nb201_cell import EDGES, OPS, arch_string
from nasrl.scripts.benchmark import best_index, best_so_far

SHARED = ROOT.parent / "shared" / "data" / "nb201"
needs_shared_tables = pytest.mark.skipif(
    not (SHARED / "cifar10.csv").exists() or not (SHARED / "latency_ms.csv").exists(),
    reason=f"{SHARED}/cifar10.csv or latency_ms.csv is absent",
)
CELLS = list(itertools.product(OPS, repeat=len(EDGES)))
LIMIT = 3.0  # fpga ms: at most two 3x3 convolutions (see fpga)


def accuracy(ops) -> float:
    """A made-up accuracy (percent), best for all nor_conv_3x3: the constraint must pull the search away from it."""
    value = {"none": 0.0, "skip_connect": 1.0, "nor_conv_1x1": 2.0, "nor_conv_3x3": 3.0, "avg_pool_3x3": 1.5}
    return 10.0 + sum(value[o] for o in ops) * 4


def tokens_of(ops) -> list[int]:
    return [OPS.index(op) for op in ops]


def fpga(ops) -> float:
    """A made-up latency (ms): 3x3 convolutions are slow, 1x1 ones a little."""
    return 1.0 + ops.count("nor_conv_3x3") + 0.25 * ops.count("nor_conv_1x1")


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> tuple[Path, Path]:
    """An accuracy table with every cell, keyed by ``index`` as NAS-Bench-201's, and a cost table in another
    order (the join is by key, not by line)."""
    folder = tmp_path_factory.mktemp("costs")
    with open(folder / "table.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "arch", "valid_acc_12ep", "valid_acc_200ep", "test_acc_200ep"])
        w.writerows(
            [i, arch_string(ops), accuracy(ops), accuracy(ops) + 5, accuracy(ops) + 4] for i, ops in enumerate(CELLS)
        )
    write_costs(folder / "costs.csv", [[i, fpga(ops), 2 * fpga(ops)] for i, ops in enumerate(CELLS)][::-1])
    return folder / "table.csv", folder / "costs.csv"


def write_costs(path: Path, rows, header=("index", "fpga", "gpu_ms")) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def env_of(tables, metric="fpga", target=LIMIT, mode="constraint", prune=False, **kwargs) -> NASBench201Env:
    table, costs = tables
    objective = CostObjective(metric, target, mode, prune=prune)
    return NASBench201Env(table, costs=kwargs.pop("costs", costs), objective=objective, **kwargs)


def test_a_table_cost_limits_and_weighs_the_reward_and_is_recorded(tables) -> None:
    env = env_of(tables)
    slow, fast = ("nor_conv_3x3",) * 6, ("nor_conv_3x3", "nor_conv_3x3", "skip_connect", "none", "skip_connect", "none")
    reward, info = play(env, tokens_of(slow))
    assert (reward, info["over_limit"], info["fpga"]) == (0.0, 1, 7.0)
    assert info["reason"] == "fpga 7 over the limit 3"
    reward, info = play(env, tokens_of(fast))
    assert (reward, info["over_limit"], info["fpga"]) == (accuracy(fast) / 100, 0, LIMIT)  # at the limit is within it
    assert "gpu_ms" not in info and info["params"] > 0 and info["flops"] > 0  # only the objective's column
    soft = env_of(tables, target=2.0, mode="soft")
    reward, info = play(soft, tokens_of(fast))
    assert info["cost_factor"] == pytest.approx((3.0 / 2.0) ** -0.07)
    assert reward == pytest.approx(accuracy(fast) / 100 * (3.0 / 2.0) ** -0.07)
    # a counted cost beside a table: the table is joined but nothing of it is recorded
    _, info = play(env_of(tables, metric="params", target=10**9), tokens_of(fast))
    assert "fpga" not in info and info["over_limit"] == 0


def bad_costs(folder: Path, case: str) -> Path:
    """The cost table of one bad ``case``, written only when asked for (each is a whole table)."""
    every = [[i, fpga(ops), 1.0] for i, ops in enumerate(CELLS)]
    tables = {
        "no_key": lambda path: write_costs(path, every, header=("idx", "fpga", "gpu_ms")),
        "short": lambda path: write_costs(path, every[:-1]),
        "text": lambda path: write_costs(path, [*every[:5], [5, "fast", 1.0], *every[6:]]),
        "empty": lambda path: write_costs(path, [*every[:7], [7, 1.0, ""], *every[8:]]),
        "duplicate": lambda path: write_costs(path, [*every, every[3]]),
    }
    return folder / "nope.csv" if case == "missing" else tables[case](folder / f"{case}.csv")


@pytest.mark.parametrize(
    "case, kwargs, message",
    [
        ("missing", {}, "cost table .*nope.csv \\(env.costs\\) does not exist"),
        ("no_key", {}, "has no key column 'index' \\(env.costs_key\\); its columns are \\['idx', 'fpga', 'gpu_ms'\\]"),
        (
            "short",
            {},
            "1 architectures of the NAS-Bench-201 table .* have no row in the cost table .* \\(first: index='15624'\\)",
        ),
        ("text", {}, "line 7 \\(index='5'\\): fpga is 'fast'; every cost must be a finite number"),
        ("empty", {}, "line 9 \\(index='7'\\): gpu_ms is ''; every cost must be a finite number"),
        ("duplicate", {}, "duplicate key index='3'"),
        (
            "good",
            {"metric": "watts"},
            "must be one of \\['params', 'flops', 'latency_ms'\\], a column of the cost table .*\\['fpga', 'gpu_ms'\\]",
        ),
        ("good", {"costs_key": "number"}, "NAS-Bench-201 table .* has no column 'number' to join the cost table on"),
    ],
)
def test_bad_cost_tables_and_metrics_are_refused_in_one_line(tables, tmp_path, case, kwargs, message) -> None:
    costs = tables[1] if case == "good" else bad_costs(tmp_path, case)
    with pytest.raises(ValueError, match=message) as caught:
        env_of(tables, costs=costs, **kwargs)
    assert "\n" not in str(caught.value)


def test_an_architecture_without_a_row_is_refused_in_one_line(tables, tmp_path) -> None:
    """A partial accuracy table: a sampled cell it lacks has no key to look its costs up by."""
    table = tmp_path / "partial.csv"
    with open(tables[0]) as src, open(table, "w") as dst:
        dst.writelines(itertools.islice(src, 101))  # the header and 100 cells
    env = env_of((table, tables[1]), expected_rows=None)
    with pytest.raises(CostTableError, match=r"architecture .* \(no index to look up\) has no row in the cost table"):
        play(env, [OPS.index("nor_conv_3x3")] * 6)


def test_a_constrained_search_never_reports_an_architecture_over_the_limit(tables, tmp_path) -> None:
    env = env_of(tables)
    state = run_search(
        env, RandomPolicy(TokenSpec.from_env(env), seed=0), budget=60, max_episodes=300, run_dir=tmp_path
    )
    over = [r for r in state.history if r["over_limit"]]
    assert over and len(over) < len(state.history)  # the test means something: both kinds were sampled
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["metrics"]["fpga"] <= LIMIT and best["metrics"]["over_limit"] == 0
    within = [r for r in state.history if not r["over_limit"]]
    assert best["reward"] == max(r["reward"] for r in within) > 0
    assert best["reward"] < max(accuracy(ops) for ops in CELLS) / 100  # the unconstrained best is over the limit
    assert result_lines(state, env)[0] == f"best architecture: {best['architecture']}"
    # the front of the table's cost: pareto.csv's column, pareto.png's panel, its hypervolume
    with open(tmp_path / "pareto.csv") as fh:
        front = list(csv.DictReader(fh))
    assert front and all(r["fpga"] for r in front if "fpga" in r["fronts"].split())
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    with open(tmp_path / "history.csv") as fh:
        rows = candidates(list(csv.DictReader(fh)), ("params", "fpga"))
    assert len(rows) == len({r["tokens"] for r in within})  # over the limit: never trained, on no front
    on = fronts(rows, ("params", "fpga"))["fpga"]
    points = [(r["val_accuracy"], r["fpga"]) for r in rows]
    for i in on:  # nothing evaluated is as good for less, or better for as much
        a, c = points[i]
        assert not any(x >= a and y <= c and (x, y) != (a, c) for x, y in points)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "child/fpga" in tags and not any("fpga_of_best" in tag for tag in tags)  # a cost, as flops is
    assert max(e.value for e in events.Scalars("search/best_reward")) == pytest.approx(best["reward"])
    reference = (0.0, 10.0)
    volume = hypervolume(points, reference)
    assert volume > 0 and hypervolume([points[i] for i in on], reference) == pytest.approx(volume)


def test_a_search_with_every_child_over_the_limit_reports_none(tables, tmp_path) -> None:
    env = env_of(tables, target=0.5)  # every cell takes 1 ms at least
    state = run_search(env, RandomPolicy(TokenSpec.from_env(env), seed=0), budget=8, max_episodes=50, run_dir=tmp_path)
    assert state.best is None and not (tmp_path / "best.json").exists()
    assert result_lines(state, env)[0].startswith("no architecture met the limit: all 8 distinct architectures")


def test_a_pruned_search_proposes_only_architectures_within_the_limit(tables, tmp_path) -> None:
    env = env_of(tables, prune=True)
    within = {tuple(tokens_of(ops)) for ops in CELLS if fpga(ops) <= LIMIT}
    assert 0 < len(within) < len(CELLS)
    obs, _ = env.reset(seed=0)  # the mask: only choices after which a cell within the limit remains
    for op in ("nor_conv_3x3", "nor_conv_3x3"):  # two 3x3 convolutions (3 ms): the rest may hold no convolution
        assert obs["action_mask"].sum() == len(OPS)
        obs, *_ = env.step(OPS.index(op))
    assert [OPS[a] for a in np.flatnonzero(obs["action_mask"])] == ["none", "skip_connect", "avg_pool_3x3"]
    with pytest.raises(ValueError, match=r"^invalid action 3 .*the objective's limit \(prune\) allow only \[0, 1, 4\]"):
        env.step(OPS.index("nor_conv_3x3"))
    state = run_search(
        env, RandomPolicy(TokenSpec.from_env(env), seed=0), budget=60, max_episodes=300, run_dir=tmp_path
    )
    assert state.distinct == 60 and not any(r["over_limit"] for r in state.history)
    assert {tuple(int(t) for t in r["tokens"].split()) for r in state.history} <= within
    with pytest.raises(ValueError, match=r"^no architecture of 'nb201' has fpga <= 0.5 .*raise the limit$"):
        env_of(tables, target=0.5, prune=True)
    with pytest.raises(ValueError, match=r"^env.objective.prune=true needs env.objective.mode=constraint"):
        CostObjective("fpga", LIMIT, "soft", prune=True)
    with pytest.raises(ValueError, match=r"^env.objective.prune=true needs the limit's metric from a cost table"):
        env_of(tables, metric="params", target=1e6, prune=True)


def test_the_benchmarks_best_so_far_skips_architectures_over_the_limit() -> None:
    metrics = [{"over_limit": 1, "acc": 99.0}, {"over_limit": 0, "acc": 50.0}, {"over_limit": 1, "acc": 98.0}]
    # rewards as the environment gives them (over the limit: failure_reward), and one made-up higher reward
    # over the limit: the limit decides, not the reward
    out = best_so_far([0.0, 0.5, 0.9], metrics, "acc", 4)
    assert np.isnan(out[0]) and list(out[1:]) == [50.0, 50.0, 50.0]
    assert (best_index([0.0, 0.5, 0.9], metrics, 1), best_index([0.0, 0.5, 0.9], metrics, 3)) == (None, 1)


def test_nasrl_train_and_benchmark_take_a_cost_table(tables, tmp_path) -> None:
    table, costs = tables
    settings = [f"env.table={table}", f"env.costs={costs}", "env.objective.metric=fpga"]
    settings += ["env.objective.mode=constraint", f"env.objective.target={LIMIT}"]
    run = tmp_path / "train"
    result = run_script("train.py", "env=nb201", *settings, "search.budget=12", f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run / "best.json").read_text())["metrics"]["fpga"] <= LIMIT
    bench = tmp_path / "bench"
    small = [
        "benchmark.strategies=[lstm,random]",
        "benchmark.seeds=2",
        "benchmark.budget=20",
        "benchmark.report_at=[20]",
    ]
    result = run_script("benchmark.py", *settings, *small, f"hydra.run.dir={bench}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((bench / "summary.json").read_text())["summary"]
    for name in ("lstm", "random"):
        entry = summary[name]["20"]
        assert entry["fpga"]["n"] == 2 and entry["fpga"]["max"] <= LIMIT
        assert entry["valid_acc_200ep"]["n"] == 2 and entry["valid_acc_200ep"]["mean"] > 0
    text = (bench / "summary.md").read_text()
    assert "objective constraint on fpga (target 3)" in text
    assert "Published" not in text  # the papers' searches had no latency limit: not shown as if comparable


@needs_shared_tables
def test_the_measured_latencies_limit_a_real_search() -> None:
    latency = SHARED / "latency_ms.csv"
    env = NASBench201Env(SHARED / "cifar10.csv", costs=latency, objective=CostObjective("fpga", 4.0, "constraint"))
    state = run_search(env, RandomPolicy(TokenSpec.from_env(env), seed=0), budget=50, max_episodes=200)
    assert state.best is not None and json.loads(state.best["metrics"])["fpga"] <= 4.0
    assert any(r["over_limit"] for r in state.history)
    # what the proxy points to under each limit (issue 35): the best valid_acc_12ep among the cells within it
    with open(SHARED / "cifar10.csv") as fh:
        accuracies = {r["index"]: r for r in csv.DictReader(fh)}
    with open(latency) as fh:
        latencies = {r["index"]: r for r in csv.DictReader(fh)}
    for device, limit, expected in (("fpga", 4, 90.86), ("gold_6226", 8, 90.33), ("pixel3", 8, 90.41)):
        within = [i for i in accuracies if float(latencies[i][device]) <= limit]
        best = max(within, key=lambda i: float(accuracies[i]["valid_acc_12ep"]))
        assert round(float(accuracies[best]["valid_acc_200ep"]), 2) == expected, device
