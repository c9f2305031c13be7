"""Cheaper children: the median stopping rule, training on a fraction of the data, a stopped child's row in
history.csv and TensorBoard, the same search with 1 and 2 workers and after a resume, the fidelity benchmark."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import run_experiment
from nasrl.controller.lstm import LSTMPolicy
from nasrl.controller.policy import TokenSpec
from nasrl.controller.search import run_search
from nasrl.env import ChildNetEnv
from nasrl.env.evaluators.base import EvalResult
from nasrl.env.evaluators.child_trainer import ChildTrainer, stratified_subset
from nasrl.env.evaluators.stopping import MedianStoppingRule
from nasrl.env.evaluators.synthetic import TokenMatchEvaluator
from nasrl.env.runners.local import ProcessRunner

# a few milliseconds per child: digits, 300 training examples, 3 epochs of 5 steps
TINY = {"dataset": {"name": "digits", "train_limit": 300}, "epochs": 3, "batch_size": 64}
RULE = {"enabled": True, "grace_epochs": 1, "min_children": 2}


def test_the_median_stopping_rule_on_known_curves() -> None:
    rule = MedianStoppingRule(enabled=True, grace_epochs=1, min_children=2)
    rule.observe("a", [0.2, 0.4, 0.6, 0.8], complete=True)
    assert rule.thresholds(4) == [None] * 4  # one completed child: fewer than min_children
    rule.observe("a", [0.9, 0.9, 0.9, 0.9], complete=True)  # the same key again counts once
    rule.observe("s", [0.0, 0.0], complete=False)  # a stopped child's curve makes no median
    rule.observe("b", [0.4, 0.6, 0.8, 1.0], complete=True)
    # running averages up to epoch s: child a 0.2, 0.3, 0.4; child b 0.4, 0.5, 0.6; the last epoch never stops
    assert rule.thresholds(4) == pytest.approx([0.3, 0.4, 0.5, None])
    thresholds = rule.thresholds(4)
    assert rule.should_stop(2, [0.35, 0.39], thresholds)  # best so far 0.39 < 0.4
    assert not rule.should_stop(2, [0.40, 0.30], thresholds)  # 0.40 is not strictly below
    assert not rule.should_stop(4, [0.0] * 4, thresholds)
    later = MedianStoppingRule(enabled=True, grace_epochs=3, min_children=2)
    later.load_state_dict(rule.state_dict())
    assert later.thresholds(4) == pytest.approx([None, None, 0.5, None])  # no stop before the grace epochs
    assert later.state_dict() == rule.state_dict() == {"seen": ["a", "b", "s"], "curves": rule.state_dict()["curves"]}
    with pytest.raises(ValueError, match=r"^env.evaluator.stopping.grace_epochs must be a positive integer, got 0$"):
        MedianStoppingRule(grace_epochs=0)


def test_a_fixed_stratified_fraction_of_the_training_split() -> None:
    y = torch.tensor([0] * 8 + [1] * 4 + [2] * 2)
    subset = stratified_subset(y, 0.5)
    assert torch.equal(subset, stratified_subset(y, 0.5))  # the same subset whoever asks
    assert torch.equal(subset, torch.sort(subset).values)
    assert torch.bincount(y[subset]).tolist() == [4, 2, 1]
    trainer = ChildTrainer(**TINY, train_fraction=0.25)
    assert trainer.train_size() == 75 and trainer.steps_per_epoch() == 2 and trainer.total_steps() == 6
    assert len(trainer.splits()[3]) == len(trainer.dataset.y_val)  # the validation split is untouched
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match=rf"^train_fraction must be a number in \(0, 1\], got {bad!r}$"):
            ChildTrainer(**TINY, train_fraction=bad)


def test_the_cache_key_changes_only_when_a_new_knob_leaves_its_default() -> None:
    default = ChildTrainer(**TINY).fingerprint()
    assert set(default) == {"evaluator", "dataset", "data_sizes", "epochs", "max_steps", "batch_size", "optimizer",
                            "lr", "weight_decay", "schedule", "num_threads"}  # fmt: skip
    assert ChildTrainer(**TINY, train_fraction=1.0, stopping={"enabled": False}).fingerprint() == default
    assert ChildTrainer(**TINY, train_fraction=0.5).fingerprint() == {**default, "train_fraction": 0.5}
    assert ChildTrainer(**TINY, stopping=RULE).fingerprint() == {
        **default,
        "stopping": {"rule": "MedianStoppingRule", "grace_epochs": 1, "min_children": 2},
    }


def test_a_stopped_child_is_marked_and_one_that_is_not_trains_as_without_the_rule() -> None:
    env = ChildNetEnv(space="mlp", evaluator=ChildTrainer(**TINY))
    arch = env.space.decode((0, 2, 0))  # one hidden layer of 128 relu units
    plain = env.evaluator.evaluate(arch, seed=7)
    ruled = ChildTrainer(**TINY, stopping=RULE)
    full = ruled.evaluate(arch, seed=7, stop_below=[None, None, None])
    assert full.val_accuracy == plain.val_accuracy and len(full.curve) == 3 and full.curve[-1] == plain.val_accuracy
    assert not full.stopped and "stopped" not in full.metrics
    stopped = ruled.evaluate(arch, seed=7, stop_below=[None, 1.01, None])  # nothing reaches 1.01: stop after epoch 2
    assert stopped.stopped and stopped.metrics["stopped"] == 1 and stopped.metrics["stopped_epoch"] == 2
    assert stopped.curve == full.curve[:2] and stopped.val_accuracy == full.curve[1]  # the partial score
    assert EvalResult(**{k: v for k, v in full.to_dict().items() if k != "curve"}).curve == []  # old cached JSON


def search(run: Path, budget: int, workers: int = 1, resume: bool = False) -> list[dict[str, str]]:
    """An LSTM search (rounds of 3) of tiny children with the rule on; its history.csv without seconds/cached."""
    env = ChildNetEnv(space="mlp", evaluator=ChildTrainer(**TINY, stopping=RULE))
    policy = LSTMPolicy(TokenSpec.from_env(env), seed=4, batch_size=3)
    runner = ProcessRunner(env.evaluator, workers) if workers > 1 else None
    try:
        run_search(env, policy, budget=budget, max_episodes=30, seed=4, run_dir=run, resume=resume, runner=runner,
                   workers=workers)  # fmt: skip
    finally:
        if runner is not None:
            runner.close()
    with open(run / "history.csv") as fh:
        return [{k: v for k, v in r.items() if k not in ("seconds", "cached")} for r in csv.DictReader(fh)]


def test_a_search_with_early_stopping_records_stopped_children_and_is_the_same_with_two_workers_and_resumed(
    tmp_path,
) -> None:
    full = search(tmp_path / "full", budget=9)
    stopped = [r for r in full if r["stopped"] == "1"]
    assert 0 < len(stopped) < len(full)
    assert all(r["stopped"] == "0" for r in full[:3])  # the first round: no completed child to judge against
    assert all('"stopped_epoch": ' in r["metrics"] for r in stopped)
    events = EventAccumulator(str(tmp_path / "full" / "tb"))
    events.Reload()
    logged = [int(e.value) for e in events.Scalars("child/stopped")]
    assert logged == [int(r["stopped"]) for r in full]
    assert "child/stopped_epoch" in events.Tags()["scalars"]

    assert search(tmp_path / "two", budget=9, workers=2) == full
    search(tmp_path / "part", budget=3)
    assert search(tmp_path / "part", budget=9, resume=True) == full  # the rule's curves came back with it


def test_the_fidelity_benchmark_on_a_tiny_space(tmp_path) -> None:
    full = "dataset.name=digits,dataset.train_limit=300,epochs=3,batch_size=64"
    settings = ["epochs=1", "train_fraction=0.5", "stopping.enabled=true,stopping.min_children=2"]
    args = ["--space", "mlp", "--archs", "6", "--workers", "1", "--cache", str(tmp_path / "cache.sqlite"),
            "--full", full, "--round-size", "2", "--settings", *settings]  # fmt: skip
    first = run_experiment("bench_fidelity.py", *args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "trained 6 of 6 children" in first.stdout
    rows = [line.split(" | ") for line in first.stdout.splitlines() if line.startswith("| epochs=1")]
    assert len(rows) == 1 and rows[0][5] == "0.333"  # 1 of 3 epochs: a third of the steps, exactly
    (fraction,) = [line for line in first.stdout.splitlines() if line.startswith("| train_fraction=0.5")]
    assert fraction.split(" | ")[5] == "0.600"  # 150 examples: 3 steps of 64 per epoch instead of 5
    again = run_experiment("bench_fidelity.py", *args, cwd=tmp_path)
    assert "trained 0 of 6 children" in again.stdout and "trained 6" not in again.stderr  # all cached
    assert [r for r in again.stdout.splitlines() if r.startswith("| ")] == [
        r for r in first.stdout.splitlines() if r.startswith("| ")
    ]


def test_random_search_rounds_do_not_depend_on_the_workers_when_early_stopping_is_on() -> None:
    from nasrl.controller.random_search import RandomPolicy
    from nasrl.controller.search import FREE_ROUND, _round_size

    env = ChildNetEnv(space="mlp", evaluator=TokenMatchEvaluator([0]))
    policy = RandomPolicy(TokenSpec.from_env(env), seed=0)
    assert [_round_size(policy, workers, 100) for workers in (1, 2)] == [4, 8]  # rounds do not matter: fill workers
    assert [_round_size(policy, workers, 100, rounds_matter=True) for workers in (1, 2, 64)] == [FREE_ROUND] * 3
    assert _round_size(policy, 2, 5, rounds_matter=True) == 5  # never more than the budget left
