"""SimulatedDurations: deterministic durations from the measured MNIST-1D times or from FLOPs, a wait that uses
no CPU, the wrapped evaluator's results, transparency to the environment, pickling, refusals; the data file."""

from __future__ import annotations

import itertools
import math
import pickle
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from conftest import TOY_SPACE, TOY_TARGET
from nasrl.env.childnet import ChildNetEnv
from nasrl.env.evaluators.base import EvalResult, Evaluator
from nasrl.env.evaluators.nb201_table import NB201Table
from nasrl.env.evaluators.synthetic import TokenMatchEvaluator
from nasrl.env.runners.durations import SimulatedDurations, draw, measured_rows, mnist1d_child_seconds
from nasrl.env.runners.local import round_options
from nasrl.env.spaces.nb201_cell import EDGES, OPS, SPACE, arch_string, cell_costs
from nasrl.env.spaces.space import load_space

TOY = load_space(TOY_SPACE)
NB201 = load_space(SPACE)


def toy_arch(tokens: list[int] = TOY_TARGET):
    return TOY.decode(tuple(tokens))


def test_duration_is_fixed_by_tokens_and_seed() -> None:
    sim = SimulatedDurations(TokenMatchEvaluator(TOY_TARGET))
    arch = toy_arch()
    assert (
        sim.duration(arch, 7) == sim.duration(arch, 7) == SimulatedDurations(TokenMatchEvaluator([0])).duration(arch, 7)
    )
    # the draw is SHA-256 of (seed, tokens): the same number in every process, session and version
    assert draw((3, 1, 4), 0) == 0.8826112174952067
    durations = {sim.duration(arch, seed) for seed in range(50)}
    assert len(durations) > 20  # another seed, another draw
    other = toy_arch([0] * len(TOY_TARGET))
    assert [sim.duration(other, s) for s in range(20)] != [sim.duration(arch, s) for s in range(20)]


def test_mnist1d_draws_follow_the_measured_times() -> None:
    samples = mnist1d_child_seconds()
    header = (Path(__file__).parent.parent / "env" / "runners" / "measured" / "mnist1d_child_seconds.csv").read_text()
    assert f"{len(samples)} children: median {statistics.median(samples):.2f} s" in header  # summary == data
    assert len(samples) == 161 and statistics.median(samples) == pytest.approx(13.14, abs=0.005)
    sim = SimulatedDurations(TokenMatchEvaluator(TOY_TARGET))
    rng = np.random.default_rng(0)
    drawn = np.array([sim.duration(toy_arch(list(rng.integers(5, size=10))), seed) for seed in range(4000)])
    assert set(drawn) <= set(samples)
    assert np.median(drawn) == pytest.approx(statistics.median(samples), rel=0.1)
    p90 = float(np.percentile(samples, 90))
    assert 0.08 < float(np.mean(drawn > p90)) < 0.12
    assert drawn.max() / np.median(drawn) > 4  # the measured tail: 78 s against a 13 s median (5.9x)


def nb201_arch(ops):
    return NB201.decode(tuple(OPS.index(op) for op in ops))


@pytest.fixture(scope="module")
def nb201_table(tmp_path_factory) -> NB201Table:
    """A partial NAS-Bench-201 table (four cells): the costs are the table's own, not its rows'."""
    path = tmp_path_factory.mktemp("nb201") / "table.csv"
    lines = ["arch,valid_acc_12ep,valid_acc_200ep,test_acc_200ep"]
    for i, op in enumerate(("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3")):
        lines.append(f"{arch_string([op] * len(EDGES))},{50 + i},{60 + i},{59 + i}")
    lines.append(f"{arch_string(['nor_conv_3x3', 'none'] * 3)},70,80,79")
    path.write_text("\n".join(lines) + "\n")
    return NB201Table(path, expected_rows=None)


def test_flops_durations_grow_with_the_cells_flops(nb201_table: NB201Table) -> None:
    sim = SimulatedDurations(nb201_table, durations="flops", wait=False)
    cells = [[op] * len(EDGES) for op in ("none", "nor_conv_1x1", "nor_conv_3x3")]
    flops = [cell_costs(ops)["flops"] for ops in cells]
    durations = [sim.duration(nb201_arch(ops), seed=0) for ops in cells]
    assert durations == [4.0 + f / 1e9 * 100.0 for f in flops] and durations == sorted(durations)
    # the defaults: the largest cell (440 MFLOPs, NAS-Bench-201's 220 M multiply-adds) takes 48 s, 3.7x the
    # median measured MNIST-1D child; the duration never depends on the seed
    assert flops[-1] == pytest.approx(440e6, rel=0.001) and durations[-1] == pytest.approx(48.0, abs=0.05)
    assert sim.duration(nb201_arch(cells[-1]), seed=5) == durations[-1]
    assert [sim.cost(nb201_arch(ops)) for ops in cells] == flops  # what a scheduler knows: FLOPs, not seconds
    custom = SimulatedDurations(nb201_table, durations="flops", seconds_per_gflop=10.0, min_seconds=1.0)
    assert custom.duration(nb201_arch(cells[0]), 0) == 1.0 + flops[0] / 1e9 * 10.0


class Builder(Evaluator):
    """An evaluator that builds its children (an MLP of ``units`` = the first layer's units) without a
    ``count_costs``: the FLOPs are counted on the network, 2 x (8 units + 2 units) per example."""

    input_shape = (8,)

    def build(self, arch) -> nn.Module:
        units = arch.layers[0]["units"]
        return nn.Sequential(nn.Linear(8, units), nn.ReLU(), nn.Linear(units, 2))

    def fingerprint(self) -> dict[str, Any]:
        return {"evaluator": "Builder"}

    def evaluate(self, arch, seed: int) -> EvalResult:
        return EvalResult(0.5)


def test_flops_counted_on_built_networks() -> None:
    sim = SimulatedDurations(Builder(), durations="flops", seconds_per_gflop=1e6, min_seconds=0.5)
    state = torch.random.get_rng_state()
    archs = [toy_arch([u, 0] * 5) for u in range(5)]  # 8, 16, 24, 32, 40 units
    assert [sim.flops(a) for a in archs] == [20 * u for u in (8, 16, 24, 32, 40)]
    assert [sim.duration(a, 0) for a in archs] == pytest.approx([0.5 + 20 * u / 1e3 for u in (8, 16, 24, 32, 40)])
    assert torch.equal(torch.random.get_rng_state(), state)  # building drew no number of the search's


def test_evaluate_waits_without_using_the_cpu() -> None:
    inner = TokenMatchEvaluator(TOY_TARGET)
    arch = toy_arch([3, 1, 4, 1, 0, 0, 0, 0, 0, 0])
    seconds = SimulatedDurations(inner).duration(arch, 1)
    sim = SimulatedDurations(inner, time_scale=0.3 / seconds)  # a 0.3 s wall wait
    wall, cpu = time.perf_counter(), time.process_time()
    result = sim.evaluate(arch, 1)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert 0.29 < wall < 1.0 and cpu < 0.25 * wall
    # the result is the wrapped evaluator's, its seconds the simulated (unscaled) duration
    assert result == EvalResult(inner.evaluate(arch, 1).val_accuracy, seconds=seconds) and result.val_accuracy == 0.6
    quick = SimulatedDurations(inner, wait=False)
    wall = time.perf_counter()
    assert quick.evaluate(arch, 1) == result and time.perf_counter() - wall < 0.1


class Stopping(Evaluator):
    """An evaluator with round options and state, like ChildTrainer with early stopping."""

    keeps_state = True
    device = torch.device("cpu")

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def round_options(self) -> dict[str, Any]:
        return {"stop_below": [0.5]}

    def observe(self, key: str, result: EvalResult) -> None:
        self.seen.append(key)

    def fingerprint(self) -> dict[str, Any]:
        return {"evaluator": "Stopping"}

    def evaluate(self, arch, seed: int, stop_below: list[float] | None = None) -> EvalResult:
        return EvalResult(0.7, params=3, metrics={"stop_below": stop_below[0] if stop_below else -1.0})


def test_the_wrapper_is_transparent_to_runners() -> None:
    inner = Stopping()
    sim = SimulatedDurations(inner, time_scale=0)
    arch = toy_arch()
    assert round_options(sim) == {"stop_below": [0.5]} and sim.keeps_state and sim.fingerprint() == inner.fingerprint()
    assert sim.evaluate(arch, 3, stop_below=[0.25]).metrics == {"stop_below": 0.25}  # options passed on
    assert sim.evaluate(arch, 3).metrics == {"stop_below": -1.0}  # none: the two-argument call
    sim.observe("key", EvalResult(0.7))
    sim.device = torch.device("meta")  # what a worker process does to put its children on its GPU
    assert inner.seen == ["key"] and inner.device == torch.device("meta") and sim.cost(arch) == 0.0
    plain = SimulatedDurations(TokenMatchEvaluator(TOY_TARGET))  # the defaults, where the wrapped one has none
    assert plain.round_options() == {} and plain.device is None and not plain.keeps_state
    assert plain.input_shape is None and plain.count_costs(arch) is None and plain.describe_data() is None
    copy = pickle.loads(pickle.dumps(sim))  # what worker processes and Ray tasks receive
    assert copy.duration(arch, 3) == sim.duration(arch, 3) and copy.evaluate(arch, 3) == sim.evaluate(arch, 3)
    assert pickle.loads(pickle.dumps(sim.evaluate(arch, 3))) == sim.evaluate(arch, 3)


def test_an_environment_sees_the_wrapped_evaluator(nb201_table: NB201Table) -> None:
    """Rewards, accuracies and costs (counted through the wrapper's build and count_costs) are the table's."""
    infos = []
    for evaluator in (nb201_table, SimulatedDurations(nb201_table, durations="flops", time_scale=0)):
        env = ChildNetEnv(space=SPACE, evaluator=evaluator)
        env.reset(seed=0)
        for op in ["nor_conv_3x3", "none"] * 3:
            *_, reward, _, _, info = env.step(OPS.index(op))
        infos.append((reward, info))
    (reward, info), (sim_reward, sim_info) = infos
    assert reward == sim_reward == 0.70
    assert sim_info["flops"] == info["flops"] == cell_costs(["nor_conv_3x3", "none"] * 3)["flops"]
    assert sim_info["train_seconds"] == pytest.approx(4.0 + info["flops"] / 1e7)
    del info["train_seconds"], sim_info["train_seconds"]
    assert sim_info == info


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"durations": "normal"}, "durations must be one of ['mnist1d', 'flops'], got 'normal'"),
        ({"time_scale": -1}, "time_scale must be a number >= 0, got -1"),
        ({"seconds_per_gflop": -0.5}, "seconds_per_gflop must be a number >= 0, got -0.5"),
        ({"min_seconds": math.nan}, "min_seconds must be a number >= 0, got nan"),
        ({"durations": "flops"}, "durations='flops' needs the FLOPs of each child, and TokenMatchEvaluator has"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        SimulatedDurations(TokenMatchEvaluator(TOY_TARGET), **kwargs)


def test_bad_evaluators_are_refused() -> None:
    with pytest.raises(ValueError, match=r"str must subclass nasrl\.env\.evaluators\.base\.Evaluator"):
        SimulatedDurations("table.csv")  # type: ignore[arg-type]

    class Shared(TokenMatchEvaluator):
        shares_weights = True

    with pytest.raises(ValueError, match="Shared shares weights between its children"):
        SimulatedDurations(Shared(TOY_TARGET))


def write_run(folder: Path, epochs: int = 10) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(
        "env:\n  space: cnn1d\n  evaluator:\n    _target_: nasrl.env.evaluators.child_trainer.ChildTrainer\n"
        f"    dataset: {{name: mnist1d, val_fraction: 0.2}}\n    epochs: {epochs}\n    lr: 0.003\n"
        "search:\n  workers: 1\n"
    )
    header = "index,episode,tokens,architecture,reward,val_accuracy,params,seconds,reused,cached,failed,reason,metrics"
    rows = [  # trained, reused, cached, failed, trained
        '0,0,1 2,a,0.8,0.8,100,12.5,0,0,0,,"{""flops"": 2000}"',
        '0,1,1 2,a,0.8,0.8,100,0.0,1,0,0,,"{""flops"": 2000}"',
        '1,2,1 3,b,0.8,0.8,100,0.0,0,1,0,,"{""flops"": 3000}"',
        '2,3,1 4,c,0.0,0.0,100,4.0,0,0,1,nan,"{""flops"": 4000}"',
        '3,4,1 0,d,0.7,0.7,50,3.25,0,0,0,,"{""flops"": 1000}"',
    ]
    (folder / "history.csv").write_text("\n".join([header, *rows]) + "\n")
    return folder


def test_data_file_keeps_trained_children_of_default_runs(tmp_path: Path) -> None:
    rows = measured_rows(write_run(tmp_path / "ok"))
    assert [(r["index"], r["flops"], r["seconds"]) for r in rows] == [("0", 2000, 12.5), ("3", 1000, 3.25)]
    with pytest.raises(ValueError, match="not ChildTrainer on mnist1d's cnn1d at its defaults.*'epochs': 5"):
        measured_rows(write_run(tmp_path / "short", epochs=5))


def test_default_flops_durations_over_nas_bench_201() -> None:
    """The defaults' claim over all 15625 cells: 5.6 s to 48 s, median 13.4 s (the measured MNIST-1D median:
    13.1 s)."""
    seconds = [4.0 + cell_costs(ops)["flops"] / 1e9 * 100.0 for ops in itertools.product(OPS, repeat=len(EDGES))]
    assert (min(seconds), statistics.median(seconds), max(seconds)) == pytest.approx((5.557, 13.421, 48.024), abs=0.001)
