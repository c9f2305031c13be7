"""Children trained at once (worker processes, Ray) and the evaluation cache shared between runs."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_train import history, train, train_synthetic

from conftest import TOY_SPACE, run_script
from nasrl.controller.policy import TokenSpec
from nasrl.controller.random_search import RandomPolicy
from nasrl.controller.search import run_search
from nasrl.env import ChildNetEnv, EvalResult, TokenMatchEvaluator
from nasrl.env.evaluators.cache import EvaluationCache
from nasrl.env.runners import make_runner
from nasrl.env.runners.local import ProcessRunner, longest_first

KILL_TOKENS = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0)  # the toy-space architecture whose worker dies


def dying_evaluator_class() -> type:
    """A class defined at call time, so Ray's cloudpickle ships it by value (its workers cannot import the
    tests folder)."""

    class Dying(TokenMatchEvaluator):
        """Kills its own worker process on the architecture ``KILL_TOKENS`` (the first ``deaths`` attempts,
        counted in ``log``); every other architecture scores like :class:`TokenMatchEvaluator`."""

        def __init__(self, log: str, deaths: int = 1000) -> None:
            super().__init__([1] * 10)
            self.log, self.deaths = log, deaths

        def evaluate(self, arch, seed):
            if tuple(arch.tokens) == KILL_TOKENS:
                with open(self.log, "a") as fh:
                    fh.write("attempt\n")
                with open(self.log) as fh:
                    if sum(1 for _ in fh) <= self.deaths:
                        os.kill(os.getpid(), signal.SIGKILL)
            return super().evaluate(arch, seed)

    return Dying


class DyingEvaluator(dying_evaluator_class()):
    """The same at module level, so spawned processes unpickle it by reference."""


class CostlyByTokens(TokenMatchEvaluator):
    """Scores like :class:`TokenMatchEvaluator`; its cost estimate is the sum of the tokens; appends the first
    token of each architecture it evaluates to ``log``."""

    def __init__(self, log: str) -> None:
        super().__init__([1] * 10)
        self.log = log

    def cost(self, arch) -> float:
        return float(sum(arch.tokens))

    def evaluate(self, arch, seed):
        with open(self.log, "a") as fh:
            fh.write(f"{arch.tokens[0]}\n")
        return super().evaluate(arch, seed)


def test_a_round_starts_its_most_expensive_children_first_and_returns_results_in_job_order(tmp_path) -> None:
    space = ChildNetEnv(space=TOY_SPACE, evaluator=TokenMatchEvaluator([1] * 10)).space
    evaluator = CostlyByTokens(str(tmp_path / "log"))
    jobs = [(space.decode((t,) * 10), seed) for seed, t in enumerate([1, 3, 0, 4, 2])]
    runner = ProcessRunner(evaluator, workers=1)  # one worker: it takes the jobs in submission order
    try:
        results = runner.run(jobs)
    finally:
        runner.close()
    assert (tmp_path / "log").read_text().split() == ["4", "3", "2", "1", "0"]
    assert [r.val_accuracy for r in results] == [1.0, 0.0, 0.0, 0.0, 0.0]  # only tokens 1...1 match the target


def test_longest_first_keeps_the_proposal_order_for_ties_and_without_an_estimate(tmp_path) -> None:
    space = ChildNetEnv(space=TOY_SPACE, evaluator=TokenMatchEvaluator([1] * 10)).space
    jobs = [(space.decode(tokens), 0) for tokens in [(0,) * 10, (2,) * 10, (1,) * 9 + (3,), (2,) * 10]]
    assert longest_first(CostlyByTokens(str(tmp_path / "log")), jobs) == [1, 3, 2, 0]
    assert longest_first(TokenMatchEvaluator([1] * 10), jobs) == [0, 1, 2, 3]

    class Unbuildable(CostlyByTokens):
        def cost(self, arch) -> float:
            if arch.tokens[0] == 2:
                raise RuntimeError("cannot build")
            return super().cost(arch)

    assert longest_first(Unbuildable(str(tmp_path / "log")), jobs) == [2, 0, 1, 3]  # unknown cost: last


def toy_jobs(env: ChildNetEnv) -> list:
    return [(env.space.decode(KILL_TOKENS), 1), (env.space.decode((1,) * 10), 2)]


@pytest.mark.slow
def test_two_workers_give_the_same_history_as_one(tmp_path) -> None:
    # REINFORCE with M=2 proposes the 2 architectures of an update at once: with 2 workers they train together
    for workers in (1, 2):
        train(tmp_path / f"w{workers}", "search.budget=6", "seed=2", "controller.batch_size=2",
              f"search.workers={workers}", cwd=tmp_path)  # fmt: skip
    one, two = history(tmp_path / "w1"), history(tmp_path / "w2")
    assert one == two
    assert sum(r["reused"] == "0" for r in one) == 6


def test_a_dead_local_worker_is_retried_then_recorded_as_failed(tmp_path) -> None:
    env = ChildNetEnv(space=TOY_SPACE, evaluator=TokenMatchEvaluator([1] * 10))
    # KILL_TOKENS kill their worker in their first 3 attempts: two in the first run, one in the second. One
    # evaluator for both runs spares a pool of fresh workers (seconds of imports each) between them.
    runner = ProcessRunner(DyingEvaluator(str(tmp_path / "log"), deaths=3), workers=2, max_retries=1)
    try:
        killed, fine = runner.run(toy_jobs(env))
        assert killed.failed and "worker died in each of 2 attempts" in killed.reason
        assert not fine.failed and fine.val_accuracy == 1.0
        assert (tmp_path / "log").read_text().count("attempt") == 2  # one try, one retry
        # a worker that dies once is retried and then succeeds; the runner keeps working after a death
        (result,) = runner.run(toy_jobs(env)[:1])
        assert not result.failed and (tmp_path / "log").read_text().count("attempt") == 4
    finally:
        runner.close()


# --- Ray ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    import cloudpickle
    import test_parallel

    cloudpickle.register_pickle_by_value(test_parallel)  # Ray workers cannot import the tests folder
    ray.init(num_cpus=2, include_dashboard=False, logging_level="error")
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_a_killed_ray_worker_is_retried_then_recorded_and_the_search_goes_on(tmp_path, local_ray) -> None:
    env = ChildNetEnv(space=TOY_SPACE, evaluator=dying_evaluator_class()(str(tmp_path / "log")))
    runner = make_runner(env.evaluator, workers=2, backend="ray", max_retries=1)
    killed, fine = runner.run(toy_jobs(env))
    assert killed.failed and "worker died" in killed.reason
    assert not fine.failed and fine.val_accuracy == 1.0
    assert (tmp_path / "log").read_text().count("attempt") == 2  # Ray's retry, then the failure record

    # the same inside a search: a policy that proposes the killing architecture first, then others
    class KillFirst(RandomPolicy):
        def act(self, obs):
            return 0 if self._first else super().act(obs)

        def start_episode(self):
            self._first = not hasattr(self, "_first")

    state = run_search(env, KillFirst(TokenSpec.from_env(env)), budget=4, max_episodes=10, runner=runner, workers=2)
    rows = state.history
    assert len(rows) == 4 and rows[0]["failed"] and "worker died" in rows[0]["reason"]
    assert not any(r["failed"] for r in rows[1:])


@pytest.mark.slow
def test_a_search_on_local_ray_records_every_child_like_the_local_backend(tmp_path) -> None:
    pytest.importorskip("ray")
    common = ["env=synthetic", "controller=random", "search.budget=4", "seed=1"]  # children need no training
    train_synthetic(tmp_path / "ray", *common, "search.workers=2", "search.backend=ray", "search.ray.num_cpus=2")
    train_synthetic(tmp_path / "local", *common, "search.workers=1")
    rows = history(tmp_path / "ray")
    assert len(rows) >= 4 and sum(r["reused"] == "0" for r in rows) == 4
    assert not any(r["failed"] == "1" for r in rows)
    assert rows == history(tmp_path / "local")


def test_ray_asked_for_without_ray_installed_is_a_one_line_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if Ray were not installed
    result = run_script("train.py", f"hydra.run.dir={tmp_path / 'run'}", "env=synthetic", "search.backend=ray",
                        cwd=tmp_path)  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert 'pip install -e ".[ray]"' in result.stderr.strip().splitlines()[-1]


# --- the evaluation cache -----------------------------------------------------------------------------------


def _write_many(path: str, writer: int, count: int) -> None:
    cache = EvaluationCache(path)
    for i in range(count):
        cache.put(f"{writer}-{i}", EvalResult(val_accuracy=i / count, params=writer, metrics={"i": i}))


def test_concurrent_cache_writers_lose_nothing(tmp_path) -> None:
    path = str(tmp_path / "cache.sqlite")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(path, w, 300)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    cache = EvaluationCache(path)
    assert len(cache) == 1200
    assert cache.get("3-150") == EvalResult(val_accuracy=0.5, params=3, metrics={"i": 150})


def test_a_writer_killed_mid_write_leaves_the_cache_readable(tmp_path) -> None:
    path = str(tmp_path / "cache.sqlite")
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_write_many, args=(path, 0, 10**7))
    proc.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not Path(path).exists() or len(EvaluationCache(path)) < 200):
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    cache = EvaluationCache(path)
    n = len(cache)
    assert n >= 200 and cache.get("0-0") is not None and cache.get(f"0-{n - 1}") is not None
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.slow
def test_a_repeated_search_against_the_same_cache_trains_nothing(tmp_path) -> None:
    shared = tmp_path / "shared.sqlite"
    common = ["search.budget=4", "seed=3", f"env.cache={shared}"]
    train(tmp_path / "first", *common, cwd=tmp_path)
    train(tmp_path / "again", *common, cwd=tmp_path)
    first, again = history(tmp_path / "first", drop=()), history(tmp_path / "again", drop=())
    assert sum(r["cached"] == "0" and r["reused"] == "0" for r in first) == 4
    assert all(r["cached"] == "1" or r["reused"] == "1" for r in again)  # nothing trained
    assert sum(float(r["seconds"]) for r in again) == 0
    assert [r["reward"] for r in again] == [r["reward"] for r in first]
    assert not (tmp_path / "again" / "cache.sqlite").exists()
    assert len(EvaluationCache(shared)) == 4


KILLED_SEARCH = """
import os, sys, time
from nasrl.env import ChildNetEnv, TokenMatchEvaluator
from nasrl.env.runners.local import ProcessRunner
if __name__ == "__main__":
    env = ChildNetEnv({space!r}, evaluator=TokenMatchEvaluator([0] * 10))
    runner = ProcessRunner(env.evaluator, 2)
    runner.run([(env.space.decode(tuple([0] * 10)), seed) for seed in range(4)])
    print(*runner._pool._processes, flush=True)
    time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers end with their parent on Linux only")
def test_worker_processes_end_with_a_search_killed_by_sigkill(tmp_path) -> None:
    script = tmp_path / "search.py"
    script.write_text(KILLED_SEARCH.format(space=TOY_SPACE))
    search = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(pid) for pid in search.stdout.readline().split()]  # type: ignore[union-attr]
        assert len(workers) == 2 and all(alive(pid) for pid in workers)
    finally:
        search.kill()  # SIGKILL: the search cannot stop its workers itself
        search.wait()
    deadline = time.monotonic() + 60
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in workers)


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
