"""Accuracy against cost: the cost-aware reward's values, the constraint (no training over the limit), the
counted costs, NAS-Bench-201's parameters and FLOPs against the benchmark's published figures."""

from __future__ import annotations

import csv
import itertools
import random

import pytest
from hydra import compose, initialize_config_module
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import play, run_script
from nasrl.controller.build import build_env
from nasrl.controller.policy import TokenSpec
from nasrl.controller.random_search import RandomPolicy
from nasrl.controller.search import run_search
from nasrl.env.childnet import ChildNetEnv
from nasrl.env.evaluators.base import EvalResult, Evaluator
from nasrl.env.evaluators.cache import EvaluationCache
from nasrl.env.evaluators.synthetic import TokenMatchEvaluator
from nasrl.env.nb201 import NASBench201Env
from nasrl.env.rewards import CostObjective
from nasrl.env.spaces.nb201_cell import EDGES, OPS, arch_string, cell_costs, measure_cell
from nasrl.env.spaces.networks import build_network, count_parameters
from nasrl.env.spaces.space import Architecture
from nasrl.scripts.app import register_configs

# mlp space tokens: depth index (depth 1), units index, activation index
SMALL, LARGE = [0, 0, 0], [0, 4, 0]  # one hidden layer of 32 / 512 units
SMALL_PARAMS = 8 * 32 + 32 + 32 * 3 + 3  # 387 for inputs of 8 features and 3 classes
LARGE_PARAMS = 8 * 512 + 512 + 512 * 3 + 3  # 6147


class CountingEvaluator(Evaluator):
    """Scores 0.8 without training, counts its calls, and builds the child so that costs can be counted."""

    input_shape = (8,)

    def __init__(self) -> None:
        self.calls = 0

    def fingerprint(self) -> dict:
        return {"evaluator": "counting"}

    def build(self, arch: Architecture):
        return build_network(arch, self.input_shape, 3)

    def evaluate(self, arch: Architecture, seed: int) -> EvalResult:
        self.calls += 1
        return EvalResult(0.8, params=count_parameters(self.build(arch)))


# --- the reward's value on known numbers ---------------------------------------------------------------------


def test_soft_reward_is_mnasnets_power_law_on_both_sides_of_the_target() -> None:
    soft = CostObjective(metric="params", target=100_000, mode="soft")
    assert soft.factor(100_000) == 1.0
    assert soft.factor(200_000) == pytest.approx(0.952638, abs=1e-6)  # 2 ** -0.07: twice the cost, about -5%
    assert soft.factor(50_000) == pytest.approx(1.049717, abs=1e-6)  # 0.5 ** -0.07: half the cost, about +5%
    assert soft.reward(0.9, 200_000) == pytest.approx(0.857374, abs=1e-6)


def test_hard_reward_is_flat_under_the_target_and_steep_over_it() -> None:
    hard = CostObjective(metric="latency_ms", target=2.0, mode="hard")
    assert hard.factor(1.0) == 1.0 and hard.factor(2.0) == 1.0  # w = 0 under the target
    assert hard.reward(0.9, 4.0) == pytest.approx(0.45)  # w = -1 over it: twice the latency, half the reward
    assert CostObjective("flops", 10.0, "hard", w_over=-2.0).factor(20.0) == pytest.approx(0.25)


def test_constraint_names_the_cost_over_the_limit_and_does_not_scale_the_others() -> None:
    limit = CostObjective(metric="params", target=100_000, mode="constraint")
    assert limit.over_limit(100_001) == "params 100001 over the limit 100000"
    assert limit.over_limit(100_000) == "" and limit.factor(100_000) == 1.0
    assert CostObjective("latency_ms", 2.5, "constraint").over_limit(3.21449) == "latency_ms 3.214 over the limit 2.500"
    assert CostObjective().factor(1e9) == 1.0 and CostObjective().over_limit(1e9) == ""  # accuracy alone


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"metric": "watts", "target": 1}, "env.objective.metric must be one of ['params', 'flops', 'latency_ms']"),
        ({"metric": "params", "target": 1, "mode": "steep"}, "env.objective.mode must be one of"),
        ({"metric": "params"}, "env.objective.target must be a positive number"),
        ({"metric": "flops", "target": -5}, "got -5"),
        ({"metric": "params", "target": 1, "w": 0.07}, "env.objective.w must be a number <= 0"),
    ],
)
def test_bad_objective_settings_are_refused_naming_the_value(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        CostObjective(**kwargs).check_metric()  # the name is checked against the environment's costs


# --- the environment ------------------------------------------------------------------------------------------


def test_costs_reach_info_and_scale_the_reward() -> None:
    env = ChildNetEnv(space="mlp", evaluator=CountingEvaluator(), objective=CostObjective("params", 1000, "soft"))
    reward, info = play(env, LARGE)
    assert info["params"] == LARGE_PARAMS
    assert info["flops"] == 2 * (8 * 512 + 512 * 3)  # torch: 2 per multiply-add of each linear layer
    assert info["cost_factor"] == pytest.approx((LARGE_PARAMS / 1000) ** -0.07)
    assert reward == pytest.approx(0.8 * (LARGE_PARAMS / 1000) ** -0.07)
    assert "latency_ms" not in info  # measured only when asked for


def test_a_child_over_the_limit_is_neither_trained_nor_queued() -> None:
    evaluator = CountingEvaluator()
    objective = CostObjective("params", 1000, "constraint")
    env = ChildNetEnv(space="mlp", evaluator=evaluator, objective=objective, failure_reward=-1.0)
    reward, info = play(env, LARGE)
    assert (reward, info["over_limit"], info["failed"]) == (-1.0, 1, False)
    assert info["reason"] == f"params {LARGE_PARAMS} over the limit 1000" and evaluator.calls == 0
    env.defer_training()
    _, info = play(env, LARGE)
    assert "deferred" not in info and env.train_deferred() == 0 and evaluator.calls == 0
    reward, info = play(env, SMALL)
    assert (reward, info["over_limit"], info["params"], evaluator.calls) == (0.8, 0, SMALL_PARAMS, 1)


def test_children_over_the_limit_do_not_stop_a_search_as_failures() -> None:
    evaluator = CountingEvaluator()
    env = ChildNetEnv(space="mlp", evaluator=evaluator, objective=CostObjective("params", 1, "constraint"))
    policy = RandomPolicy(TokenSpec.from_env(env))
    state = run_search(env, policy, budget=6, max_episodes=60, max_consecutive_failures=2)
    assert state.distinct == 6 and evaluator.calls == 0
    assert all(row["failed"] == 0 and '"over_limit": 1' in row["metrics"] for row in state.history)


def test_latency_is_measured_once_and_kept_in_the_cache_file(tmp_path) -> None:
    objective = CostObjective(record_latency=True, latency_repeats=3, latency_warmup=1)
    path = tmp_path / "cache.sqlite"
    _, first = play(ChildNetEnv(space="mlp", evaluator=CountingEvaluator(), objective=objective, cache=path), SMALL)
    assert first["latency_ms"] > 0
    # another environment on the same file reads the stored value: a second measurement would differ
    _, again = play(ChildNetEnv(space="mlp", evaluator=CountingEvaluator(), objective=objective, cache=path), SMALL)
    assert again["latency_ms"] == first["latency_ms"]
    assert EvaluationCache(path)._db.execute("SELECT COUNT(*) FROM costs").fetchone()[0] == 1


def test_an_objective_needs_an_evaluator_that_builds_children() -> None:
    with pytest.raises(ValueError, match="TokenMatchEvaluator cannot build its children"):
        ChildNetEnv(space="mlp", evaluator=TokenMatchEvaluator([0]), objective=CostObjective("params", 10))
    _, info = play(ChildNetEnv(space="mlp", evaluator=TokenMatchEvaluator([0])), SMALL)
    assert "flops" not in info  # nothing to count: no costs recorded, accuracy alone


def test_the_command_line_sets_the_objective_and_refuses_a_bad_one_in_one_line(tmp_path) -> None:
    register_configs()
    overrides = ["env=synthetic", "env.objective.metric=params", "env.objective.target=20000"]
    with initialize_config_module("nasrl.conf", version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, "env.objective.mode=hard"])
    assert (cfg.env.objective.metric, cfg.env.objective.target, cfg.env.objective.mode) == ("params", 20000, "hard")
    with pytest.raises(ValueError, match="cannot build its children"):  # the synthetic reward has no network
        build_env(cfg.env)
    bad = ["env=synthetic", "env.objective.metric=watts", "env.objective.target=1", f"hydra.run.dir={tmp_path}"]
    result = run_script("train.py", *bad, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: env.objective.metric must be one of ['params', 'flops', 'latency_ms'] or null (accuracy alone), "
        "got 'watts'"
    ]


# --- NAS-Bench-201 ----------------------------------------------------------------------------------------------

ALL_3X3 = ("nor_conv_3x3",) * 6
RESNET = ("nor_conv_3x3", "none", "nor_conv_3x3", "skip_connect", "none", "skip_connect")  # the paper's ResNet


@pytest.mark.parametrize(
    "ops, params_m, macs_m",
    [
        (ALL_3X3, 1.531546, 220.11969),  # the largest cell
        (("none",) * 6, 0.073306, 7.78305),  # the smallest (no path: the network is stem, reductions, classifier)
        (("skip_connect",) * 6, 0.073306, 7.78305),
        (("avg_pool_3x3",) * 6, 0.073306, 7.78305),
        (RESNET, 0.559386, 78.56193),
    ],
)
def test_nb201_costs_equal_the_benchmarks_figures(ops: tuple, params_m: float, macs_m: float) -> None:
    # NAS-Bench-201 gives millions of parameters, and millions of multiply-adds of the convolutions and the
    # classifier plus the classifier's 10 bias additions; torch counts 2 FLOPs per multiply-add
    costs = cell_costs(ops)
    assert costs["params"] == round(params_m * 1e6)
    assert costs["flops"] / 2 + 10 == round(macs_m * 1e6)


def test_nb201_shortcut_equals_counting_a_real_build() -> None:
    rng = random.Random(0)
    cells = [ALL_3X3, RESNET, *(tuple(rng.choice(OPS) for _ in EDGES) for _ in range(2))]
    for ops in cells:  # FlopCounterMode on the built network, as for any other child
        assert cell_costs(ops) == measure_cell(ops, counter="flop_counter"), ops
    assert cell_costs(cells[-1]) == measure_cell(cells[-1], counter="hooks")


def test_nb201_env_reports_params_and_flops_of_each_cell(tmp_path) -> None:
    table = tmp_path / "table.csv"
    cells = list(itertools.islice(itertools.product(OPS, repeat=len(EDGES)), 0, None, 997))
    with open(table, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["arch", "valid_acc_12ep", "valid_acc_200ep", "test_acc_200ep"])
        w.writerows([arch_string(ops), 50, 60, 59] for ops in cells)
    objective = CostObjective("flops", 100e6, "constraint")
    env = NASBench201Env(table, expected_rows=None, objective=objective)
    for ops in cells[:6]:
        reward, info = play(env, [OPS.index(op) for op in ops])
        costs = cell_costs(ops)
        assert (info["params"], info["flops"]) == (costs["params"], costs["flops"])
        assert reward == (0.0 if costs["flops"] > 100e6 else 0.5) and info["over_limit"] == int(costs["flops"] > 100e6)


def test_val_accuracy_is_logged_for_every_episode_under_a_cost_objective(tmp_path) -> None:
    """Under a cost objective the reward is not the accuracy, so TensorBoard draws search/val_accuracy; a child
    under a hard target has reward = accuracy, and its episode must still be on the curve (no gaps)."""
    objective = CostObjective("params", 10**9, "hard")  # every child under the target: factor 1
    env = ChildNetEnv(space="mlp", evaluator=CountingEvaluator(), objective=objective)
    state = run_search(env, RandomPolicy(TokenSpec.from_env(env)), budget=4, max_episodes=20, run_dir=tmp_path)
    assert all(row["reward"] == row["val_accuracy"] for row in state.history)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    steps = [event.step for event in events.Scalars("search/val_accuracy")]
    assert steps == [event.step for event in events.Scalars("search/reward")] and len(steps) == state.episode
