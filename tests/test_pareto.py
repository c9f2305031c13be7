"""The front of accuracy against cost, its hypervolume, pareto.csv / pareto.png, and the benchmark's hypervolume."""

from __future__ import annotations

import csv
import json
import warnings

import pytest

from conftest import ROOT
from nasrl.controller import search as search_module
from nasrl.controller.pareto import candidates, fronts, hypervolume, pareto_front, write_pareto
from nasrl.controller.policy import TokenSpec
from nasrl.controller.random_search import RandomPolicy
from nasrl.controller.runfolder import read_history
from nasrl.controller.search import run_search
from nasrl.env.childnet import ChildNetEnv
from nasrl.env.evaluators.base import EvalResult, Evaluator
from nasrl.env.nb201 import NASBench201Env
from nasrl.scripts.benchmark import front_hypervolume, hypervolume_over_seeds, write_markdown

SHARED_TABLE = ROOT.parent / "shared" / "data" / "nb201" / "cifar10.csv"
PNG = b"\x89PNG\r\n\x1a\n"

# (accuracy, cost): 1 and 5 are the same point; 2 is beaten by 0 (better and cheaper), 4 by 1
POINTS = [(0.9, 100), (0.8, 50), (0.85, 200), (0.95, 400), (0.7, 50), (0.8, 50)]


def test_the_front_of_a_made_up_set() -> None:
    assert pareto_front(POINTS) == [1, 5, 0, 3]  # by increasing cost; the equal points both stay
    assert pareto_front([]) == [] and pareto_front([(0.5, 10)]) == [0]


def test_hypervolume_of_a_made_up_front_by_hand() -> None:
    # front (0.8, 50), (0.9, 100), (0.95, 400) against (0.5, 500): 50 x 0.3 + 300 x 0.4 + 100 x 0.45
    assert hypervolume(POINTS, (0.5, 500)) == pytest.approx(180.0)
    assert hypervolume([p for i, p in enumerate(POINTS) if i in (1, 0, 3)], (0.5, 500)) == pytest.approx(180.0)
    assert hypervolume([(0.4, 10), (0.9, 600)], (0.5, 500)) == 0.0  # not better than the reference in both
    assert hypervolume(POINTS, (0.5, 300)) == pytest.approx(50 * 0.3 + 200 * 0.4)  # (0.95, 400) is outside


def row(index: int, acc: float, params: int, flops: int, **extra) -> dict:
    metrics = {"flops": flops, **extra.pop("metrics", {})}
    return {"index": index, "architecture": f"a{index}", "tokens": str(index), "val_accuracy": acc,
            "params": params, "reused": 0, "failed": 0, "metrics": json.dumps(metrics), **extra}  # fmt: skip


HISTORY = [
    row(0, 0.90, 1000, 500),
    row(1, 0.80, 100, 900),  # the cheapest in params, not in FLOPs
    row(2, 0.70, 2000, 100),  # the cheapest in FLOPs
    row(0, 0.90, 1000, 500, reused=1),  # sampled again: the first evaluation counts
    row(3, 0.99, 50, 50, failed=1),  # failed, over the limit, stopped early: their scores are not results
    row(4, 0.99, 50, 50, metrics={"over_limit": 1}),
    row(5, 0.99, 50, 50, stopped=1),
    row(6, 0.60, 3000, 3000),  # dominated in both
]


def test_pareto_files_of_a_made_up_history(tmp_path) -> None:
    assert [r["index"] for r in candidates(HISTORY)] == [0, 1, 2, 6]
    assert write_pareto(tmp_path, HISTORY) == {"params": [1, 0], "flops": [2, 0]}
    with open(tmp_path / "pareto.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["index"], r["params"], r["flops"], r["latency_ms"], r["fronts"]) for r in rows] == [
        ("0", "1000", "500", "", "params flops"),
        ("1", "100", "900", "", "params"),
        ("2", "2000", "100", "", "flops"),
    ]
    assert (tmp_path / "pareto.png").read_bytes()[:8] == PNG
    as_read = candidates([{k: str(v) for k, v in r.items()} for r in HISTORY])  # history.csv's strings
    assert as_read == candidates(HISTORY) and fronts(as_read) == {"params": [1, 0], "flops": [2, 0]}


def test_a_run_without_costs_writes_an_empty_table_and_no_plot(tmp_path) -> None:
    assert write_pareto(tmp_path, [{**r, "params": 0, "metrics": "{}"} for r in HISTORY]) == {}
    assert (tmp_path / "pareto.csv").read_text().startswith("index,architecture,tokens,val_accuracy,params")
    assert len((tmp_path / "pareto.csv").read_text().splitlines()) == 1 and not (tmp_path / "pareto.png").exists()


@pytest.mark.skipif(not SHARED_TABLE.exists(), reason=f"{SHARED_TABLE} is absent")
def test_a_search_on_the_nb201_table_writes_its_front(tmp_path) -> None:
    env = NASBench201Env(SHARED_TABLE)
    run_search(env, RandomPolicy(TokenSpec.from_env(env)), budget=30, max_episodes=100, run_dir=tmp_path)
    history = read_history(tmp_path)
    with open(tmp_path / "pareto.csv") as fh:
        front = list(csv.DictReader(fh))
    assert front and (tmp_path / "pareto.png").read_bytes()[:8] == PNG
    points = [(round(float(r["val_accuracy"]), 6), int(r["params"])) for r in history if r["reused"] == "0"]
    for r in front:  # nothing evaluated is as good for less, or better for as much
        acc, params = float(r["val_accuracy"]), int(r["params"])
        assert not any(a >= acc and p <= params and (a, p) != (acc, params) for a, p in points)


class Interrupting(Evaluator):
    """The sixth evaluation is interrupted (Ctrl-C), in random search's second round of 4. No costs: the
    front is on accuracy alone, pareto.csv lists no architecture and no plot is drawn (fast)."""

    def __init__(self) -> None:
        self.calls = 0

    def fingerprint(self) -> dict:
        return {"evaluator": "interrupting"}

    def evaluate(self, arch, seed: int) -> EvalResult:
        self.calls += 1
        if self.calls == 6:
            raise KeyboardInterrupt
        return EvalResult(0.5 + 0.1 * self.calls)


def test_an_interrupted_search_keeps_its_history_and_writes_the_front_so_far(tmp_path) -> None:
    env = ChildNetEnv(space="mlp", evaluator=Interrupting())
    with pytest.raises(KeyboardInterrupt):
        run_search(env, RandomPolicy(TokenSpec.from_env(env)), budget=10, max_episodes=50, run_dir=tmp_path)
    assert len(read_history(tmp_path)) == 4  # the first round; the round in flight is lost, as documented
    assert (tmp_path / "pareto.csv").read_text().startswith("index,architecture,tokens,val_accuracy,")


def test_a_failure_to_write_the_front_only_warns(tmp_path, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(search_module, "write_pareto", broken)
    env = ChildNetEnv(space="mlp", evaluator=Interrupting())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = run_search(env, RandomPolicy(TokenSpec.from_env(env)), budget=2, max_episodes=20, run_dir=tmp_path)
    assert state.distinct == 2 and any("pareto.csv / pareto.png not written: OSError" in str(w.message) for w in caught)


def test_the_benchmark_reports_each_strategys_hypervolume(tmp_path) -> None:
    # two seeds of one strategy: (accuracy %, params) of their evaluations, in order
    seeds = [
        [{"valid_acc_200ep": 80.0, "params": 500}, {"valid_acc_200ep": 90.0, "params": 800}],
        [{"valid_acc_200ep": 90.0, "params": 500}, {"valid_acc_200ep": 50.0, "params": 100}],
    ]
    reference = (0.0, 1000.0)
    # seed 0 after 2: 300 x 80 + 200 x 90 = 42000; seed 1 after 2: 400 x 50 + 500 x 90 = 65000; box 100 x 1000
    assert front_hypervolume(seeds[0], "valid_acc_200ep", 2, reference) == pytest.approx(0.42)
    assert front_hypervolume(seeds[1], "valid_acc_200ep", 1, reference) == pytest.approx(0.45)
    hv = hypervolume_over_seeds([([0.1, 0.2], seeds[0]), ([0.1, 0.2], seeds[1])], "valid_acc_200ep", 2, reference)
    assert hv["mean"] == pytest.approx(0.535) and hv["std"] == pytest.approx(0.162635, abs=1e-6) and hv["n"] == 2
    summary = {"random": {"2": {"valid_acc_200ep": {"mean": 91.0, "std": 0.1, "n": 2}, "hypervolume": hv}}}
    write_markdown(tmp_path / "s.md", summary, ["valid_acc_200ep"], [2], "random", {}, "x", None, reference)
    text = (tmp_path / "s.md").read_text()
    assert "reference (0, 1,000 parameters)" in text and "| random | 2 | 0.5350 ± 0.1626 |" in text
