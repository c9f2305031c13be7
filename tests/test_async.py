"""The asynchronous search (search.mode=async): every proposal trained and recorded once, staleness recorded,
the same search again from a recorded completion order, resume, and the virtual clock's schedule."""

from __future__ import annotations

import csv
import hashlib
import warnings
from pathlib import Path

import pytest

from nasrl.controller.evolution import EvolutionPolicy
from nasrl.controller.lstm import LSTMPolicy
from nasrl.controller.policy import TokenSpec
from nasrl.controller.random_search import RandomPolicy
from nasrl.controller.runfolder import read_completions, read_history
from nasrl.controller.search import run_search
from nasrl.env.childnet import ChildNetEnv
from nasrl.env.evaluators.base import Evaluator
from nasrl.env.evaluators.synthetic import TokenMatchEvaluator
from nasrl.env.runners.clock import VirtualClockRunner
from nasrl.env.runners.local import ProcessRunner
from tests.conftest import TOY_SPACE, TOY_TARGET, load_experiment

COLUMNS = ("tokens", "reward", "proposal", "staleness", "reused")


def heavy_tailed(arch, seed: int) -> float:
    """A deterministic duration in [1, 10] s, most near 1: a few children take ten times the others."""
    u = int(hashlib.sha256(f"{arch.tokens}:{seed}".encode()).hexdigest()[:8], 16) / 2**32
    return 1.0 + 9.0 * u**6


class InterruptAt(Evaluator):
    """TokenMatchEvaluator that raises KeyboardInterrupt (Ctrl-C) at its ``at``-th child."""

    def __init__(self, at: int) -> None:
        self.inner, self.at, self.calls = TokenMatchEvaluator(TOY_TARGET), at, 0

    def fingerprint(self) -> dict:
        return self.inner.fingerprint()

    def evaluate(self, arch, seed):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return self.inner.evaluate(arch, seed)


def make(tmp: Path | None = None, evaluator=None, policy: str = "lstm"):
    env = ChildNetEnv(TOY_SPACE, evaluator=evaluator or TokenMatchEvaluator(TOY_TARGET),
                      cache=None if tmp is None else tmp / "cache.sqlite")  # fmt: skip
    spec = TokenSpec.from_env(env)
    if policy == "lstm":
        return env, LSTMPolicy(spec, seed=0, batch_size=2)
    if policy == "evolution":
        return env, EvolutionPolicy(spec, seed=0, population_size=4, sample_size=2)
    return env, RandomPolicy(spec, seed=0)


def virtual(env, workers: int) -> VirtualClockRunner:
    return VirtualClockRunner(env.evaluator, workers, duration=heavy_tailed)


def rows(run: Path) -> list[tuple]:
    return [tuple(r[c] for c in COLUMNS) for r in read_history(run)]


def test_every_proposal_is_trained_and_recorded_once_and_staleness_is_recorded(tmp_path) -> None:
    env, policy = make()
    runner = virtual(env, workers=4)
    most, submit = [0], runner.submit

    def counting_submit(tag, job):
        submit(tag, job)
        most[0] = max(most[0], runner.in_flight)

    runner.submit = counting_submit  # type: ignore[method-assign]
    state = run_search(env, policy, budget=30, max_episodes=300, runner=runner, workers=4, mode="async",
                       run_dir=tmp_path / "run")  # fmt: skip
    proposals = [row["proposal"] for row in state.history]
    assert sorted(proposals) == list(range(state.proposals))  # each once, none lost
    assert proposals != sorted(proposals)  # results came back in another order than proposed
    assert state.distinct == 30 and most[0] == 4 and state.in_flight == []
    assert any(row["staleness"] > 0 for row in state.history) and min(r["staleness"] for r in state.history) >= 0
    assert policy.updates == state.episode // 2  # REINFORCE took every result, batch 2
    trained = [int(r["proposal"]) for r in read_history(tmp_path / "run") if r["reused"] == "0"]
    assert sorted(read_completions(tmp_path / "run")) == sorted(trained)


def test_a_recorded_completion_order_gives_the_same_search_and_so_does_resume(tmp_path) -> None:
    env, policy = make(tmp_path / "a")
    run_search(env, policy, budget=24, max_episodes=240, runner=virtual(env, 3), workers=3, mode="async",
               run_dir=tmp_path / "a")  # fmt: skip
    recorded = rows(tmp_path / "a")
    # in this process, one child after another, told the order in which the 3 virtual workers finished
    env, policy = make(tmp_path / "b")
    run_search(env, policy, budget=24, max_episodes=240, workers=3, mode="async", run_dir=tmp_path / "b",
               completion_order=tmp_path / "a")  # fmt: skip
    assert rows(tmp_path / "b") == recorded
    # interrupted at the 11th child, then resumed: the same search
    env, policy = make(tmp_path / "c", evaluator=InterruptAt(11))
    with pytest.raises(KeyboardInterrupt):
        run_search(env, policy, budget=24, max_episodes=240, workers=3, mode="async", run_dir=tmp_path / "c",
                   completion_order=tmp_path / "a")  # fmt: skip
    assert 0 < len(read_history(tmp_path / "c")) < len(recorded)
    env, policy = make(tmp_path / "c")
    run_search(env, policy, budget=24, max_episodes=240, workers=3, mode="async", run_dir=tmp_path / "c",
               completion_order=tmp_path / "a", resume=True)  # fmt: skip
    assert rows(tmp_path / "c") == recorded
    assert read_completions(tmp_path / "c") == read_completions(tmp_path / "a")


def test_asynchronous_evolution_with_more_workers_than_its_population(tmp_path) -> None:
    env, policy = make(policy="evolution")
    state = run_search(env, policy, budget=40, max_episodes=400, runner=virtual(env, 8), workers=8, mode="async")
    assert state.distinct == 40 and sorted(r["proposal"] for r in state.history) == list(range(state.proposals))
    rewards = [r["reward"] for r in state.history]  # tournaments took over from the random start:
    assert sum(rewards[-16:]) / 16 > sum(rewards[:8]) / 8 + 0.1  # (0.19 -> 0.36 with this seed)


def test_the_virtual_clock_keeps_workers_busier_asynchronously_than_in_rounds() -> None:
    env, _ = make()
    runner = VirtualClockRunner(env.evaluator, 4, duration=lambda arch, seed: 1.0)
    jobs = [(env.space.decode(tuple([0] * 10)), s) for s in range(8)]
    runner.run(jobs)
    assert runner.now == 2.0 and runner.utilisation == 1.0  # two rounds of four 1 s children
    use = {}
    for mode in ("rounds", "async"):  # REINFORCE with batch 8: a round is 8 children, its slowest holds the rest
        env, policy = make()
        policy.batch_size = 8
        runner = virtual(env, 8)
        run_search(env, policy, budget=64, max_episodes=640, runner=runner, workers=8, mode=mode)
        use[mode] = runner.utilisation
    assert use["async"] > use["rounds"] + 0.1, use


def test_asynchronous_search_on_worker_processes_records_every_child_once(tmp_path) -> None:
    env, policy = make(policy="random")
    runner = ProcessRunner(env.evaluator, workers=2)
    try:
        state = run_search(env, policy, budget=12, max_episodes=120, runner=runner, workers=2, mode="async")
    finally:
        runner.close()
    assert state.distinct == 12 and sorted(r["proposal"] for r in state.history) == list(range(state.proposals))


def test_bad_modes_are_refused_in_one_line() -> None:
    env, policy = make()
    with pytest.raises(ValueError, match=r"search.mode must be one of \['rounds', 'async'\], got 'asynch'"):
        run_search(env, policy, budget=4, max_episodes=40, mode="asynch")
    with pytest.raises(ValueError, match="search.completion_order replays an asynchronous run"):
        run_search(env, policy, budget=4, max_episodes=40, completion_order="x")


def test_the_scale_benchmark_writes_its_table(tmp_path) -> None:
    bench_scale = load_experiment("bench_scale.py")

    bench_scale.main(["--backends", "virtual", "--workers", "1", "4", "--strategies", "lstm", "--per-worker", "8",
                      "--table", str(tmp_path / "none.csv"), "--out", str(tmp_path)])  # fmt: skip
    rows = {(r["workers"], r["mode"]): r for r in csv.DictReader(open(tmp_path / "scale.csv"))}
    assert set(rows) == {("1", "rounds"), ("1", "async"), ("4", "rounds"), ("4", "async")}
    assert float(rows["1", "rounds"]["utilisation"]) == 1.0 == float(rows["1", "async"]["utilisation"])
    assert float(rows["4", "async"]["utilisation"]) > float(rows["4", "rounds"]["utilisation"])
    assert "| virtual | 4 | lstm |" in (tmp_path / "scale.md").read_text()


def test_idle_workers_are_warned_of_when_the_settings_leave_them_idle_not_when_a_round_is_partly_done() -> None:
    """The LSTM proposes what is left of its update's batch: after re-sampled architectures (fed back at once) a
    round is smaller than the batch by design. The warning is for a batch smaller than the workers."""
    layer = [{"name": "units", "choices": [8, 16]}, {"name": "activation", "choices": ["relu", "tanh"]}]
    space = {"name": "tiny", "network": "mlp", "depth": [1, 2], "layer": layer}
    for batch_size, warned in ((4, False), (2, True)):
        env = ChildNetEnv(space, evaluator=TokenMatchEvaluator((0, 1, 1, 1, 1)))
        policy = LSTMPolicy(TokenSpec.from_env(env), seed=0, batch_size=batch_size)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            state = run_search(env, policy, budget=15, max_episodes=300, runner=virtual(env, 4), workers=4)
        assert state.episode > state.distinct  # architectures were drawn again: rounds were partly done
        assert any("worker(s) idle" in str(w.message) for w in caught) == warned, batch_size
