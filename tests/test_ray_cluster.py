"""A search against a real Ray cluster of two nodes on this machine that loses a node mid-search (issue 18).

Ray's own cluster utilities start a head node (this process connects to it) and a worker node, one CPU each:
two children train at once, one on each node. The search goes the users' way (``search.backend=ray
search.ray.address=<the cluster's>``); its children only seem to train (:class:`SimulatedDurations` sleeps: no
CPU). At the first result recorded while a child trains on the worker node, that node is killed, every process
of it at once; Ray retries its children on the head node, and the search must record every architecture once,
with its own result. Most of the test's time is Ray starting processes (each child's worker imports torch).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from test_configs import composed

from nasrl.controller.build import build_policy, build_runner
from nasrl.controller.search import run_search
from nasrl.env import ChildNetEnv, EvalResult, TokenMatchEvaluator
from nasrl.env.runners.durations import SimulatedDurations

# Seed 0 proposes 6 architectures whose simulated (mnist1d) durations are 7.0, 16.2, 16.3, 11.6, 16.5 and 7.5 s:
# scaled, 0.28 to 0.66 s on the head node and 6 times that on the worker node (NodeLogged): a head child's
# result comes while a worker child has at least a second to go.
SEED, BUDGET, TIME_SCALE = 0, 6, 0.04
# A killed node's dropped connections give it away at once; a node that only stops answering is found by health
# checks, by default every 3 s and dead after 5 failures (15 s or more). Here after 0.6 s, so a test that meets
# that case waits less than a second rather than a quarter of a minute.
FAST_NODE_DEATH = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 200,
    "health_check_timeout_ms": 200,
    "health_check_failure_threshold": 3,
}
# Processes a test cluster does without (each a Python process to start on a 2-core machine): the dashboard's
# modules, the autoscaler's monitor, the log monitor (which copies the workers' output to this process).
LEAN = {"include_dashboard": False, "no_monitor": True, "include_log_monitor": False}


class NodeLogged(SimulatedDurations):
    """Simulated children that append ``start|end <Ray node id> <time> <tokens>`` to the file ``log`` around
    each attempt, so the test sees where every attempt ran and which ones never ended. The time of a start is
    when the attempt will end (``time.time()`` clock, the same in every process of this machine).

    So that a result comes while a child trains on ``lost_node`` whatever the machine's load (Ray may start
    that node's first worker process seconds after the head's), a child elsewhere starts only once one has
    started there (an event in the log, not a delay), and children there take ``slowdown`` times as long: a
    head child's result then always comes before that child's end."""

    def __init__(self, evaluator: Any, log: str, lost_node: str, slowdown: float = 6.0, **kwargs: Any) -> None:
        super().__init__(evaluator, **kwargs)
        self.log, self.lost_node, self.slowdown = log, lost_node, slowdown

    def evaluate(self, arch: Any, seed: int, **options: Any) -> EvalResult:
        import ray

        node = ray.get_runtime_context().get_node_id()
        extra = 0.0
        if node == self.lost_node:
            extra = (self.slowdown - 1) * self.duration(arch, seed) * self.time_scale
        else:
            self._wait_for_a_start_on(self.lost_node)
        self._write("start", node, time.time() + self.duration(arch, seed) * self.time_scale + extra, arch.tokens)
        result = super().evaluate(arch, seed, **options)
        time.sleep(extra)  # the result's seconds stay the simulated duration
        self._write("end", node, time.time(), arch.tokens)
        return result

    def _wait_for_a_start_on(self, node: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout  # a bound, not a delay: the test fails by its assertions after it
        while time.monotonic() < deadline and not any(
            event == "start" and n == node for event, n, _, _ in attempts(self.log)
        ):
            time.sleep(0.01)

    def _write(self, event: str, node: str, when: float, tokens: Sequence[int]) -> None:
        with open(self.log, "a") as fh:  # one short line per write: appends from several processes stay whole
            fh.write(f"{event} {node} {when:.3f} {' '.join(map(str, tokens))}\n")


def attempts(log: str | Path) -> list[tuple[str, str, float, str]]:
    """(event, node id, time, tokens) for each line of a :class:`NodeLogged` log."""
    if not os.path.exists(log):
        return []
    fields = [line.split(" ", 3) for line in Path(log).read_text().splitlines()]
    return [(event, node, float(when), tokens) for event, node, when, tokens in fields]


def in_flight(log: str | Path, node: str, for_at_least: float = 0.0) -> set[str]:
    """The tokens of the children started on ``node``, not ended there, and due to end no sooner than
    ``for_at_least`` seconds from now (0: all not ended)."""
    lines, now = attempts(log), time.time()
    ended = {tokens for event, n, _, tokens in lines if event == "end" and n == node}
    return {
        tokens
        for event, n, end, tokens in lines
        if event == "start" and n == node and tokens not in ended and (not for_at_least or end >= now + for_at_least)
    }


def kill_node(cluster: Any, node: Any) -> None:
    """Kill every process of ``node`` at once, as if its machine were lost: Ray's ``remove_node`` kills the
    node's own processes (raylet, object store, agents), and the worker processes the raylet started (the
    children training there), which would otherwise train on until they notice their raylet is gone."""
    own = {info.process.pid for infos in node.all_processes.values() for info in infos}
    for pid in [*own, *(pid for pid, parent in parents().items() if parent in own)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    cluster.remove_node(node, allow_graceful=False)  # what is left of it, and the cluster's own bookkeeping


def parents() -> dict[int, int]:
    """The parent of each process of this machine (Linux: ``/proc/PID/stat``)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            found[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    return found


class NodeKiller:
    """Wraps a runner: at the first result recorded while a child trains on ``node`` with ``margin`` seconds or
    more to go (by ``log``), kills that node (:func:`kill_node`) from the result callback, so the children there
    die mid-training (the margin: not one that ends as the kill begins). Keeps the tokens of every job it was
    given (``jobs``) and of the children it killed (``killed``)."""

    def __init__(self, runner: Any, cluster: Any, node: Any, log: Path, margin: float = 0.15) -> None:
        self.runner, self.cluster, self.node, self.log, self.margin = runner, cluster, node, log, margin
        self.jobs: list[str] = []
        self.killed: set[str] = set()

    def run(self, jobs: Sequence[tuple[Any, int]], on_result: Any = None) -> list[EvalResult]:
        self.jobs += [" ".join(map(str, arch.tokens)) for arch, _ in jobs]

        def record(i: int, result: EvalResult) -> None:
            if on_result is not None:
                on_result(i, result)
            if not self.killed and in_flight(self.log, self.node.node_id, for_at_least=self.margin):
                kill_node(self.cluster, self.node)
                self.killed = in_flight(self.log, self.node.node_id)  # all that will never end there

        return self.runner.run(jobs, record)

    def close(self) -> None:
        self.runner.close()


@pytest.fixture
def ray_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    """A head node and a worker node of one CPU each; shut down, and its files removed, whatever the test did."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    # Ray workers cannot import the tests folder (Ray pickles with its own copy of cloudpickle)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    assert not ray.is_initialized(), "a Ray left running by another test would be used instead of the cluster"
    # Ray's files, and the address a plain ray.init() would join, go here, not to /tmp/ray: other people's
    # ray.init() on this machine must not join this cluster while it runs (short path: Unix socket names)
    ray_tmp = tempfile.mkdtemp(prefix="nasrl-ray-")
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
    cluster = None
    try:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 1, "_system_config": FAST_NODE_DEATH, **LEAN},
        )
        worker = cluster.add_node(num_cpus=1, **LEAN)  # 2: a third worker importing torch, seconds slower
        cluster.wait_for_nodes()
        yield cluster, worker
    finally:
        ray.shutdown()  # the runner's close() did, unless the test failed before
        if cluster is not None:
            cluster.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.slow
def test_a_search_on_a_ray_cluster_that_loses_a_node_records_every_child_once(ray_cluster, tmp_path) -> None:
    cluster, worker = ray_cluster
    cfg = composed(
        "env=synthetic", "controller=random", f"seed={SEED}", f"search.budget={BUDGET}", "search.workers=2",
        "search.backend=ray", f"search.ray.address={cluster.address}", "search.max_retries=2",
    )  # fmt: skip
    target = list(cfg.env.evaluator.target)
    log = tmp_path / "attempts.log"
    evaluator = NodeLogged(TokenMatchEvaluator(target), str(log), worker.node_id, durations="mnist1d",
                           time_scale=TIME_SCALE)  # fmt: skip
    env = ChildNetEnv(space=cfg.env.space, evaluator=evaluator)
    runner = NodeKiller(build_runner(cfg.search, env), cluster, worker, log)
    try:
        state = run_search(
            env, build_policy(cfg.controller, env, cfg.seed), budget=cfg.search.budget,
            max_episodes=cfg.search.max_episodes, seed=cfg.seed, runner=runner, workers=cfg.search.workers,
        )  # fmt: skip
    finally:
        runner.close()

    # the worker node was killed while children trained on it, and none of them ended there
    lines = attempts(log)
    head, lost = cluster.head_node.node_id, worker.node_id
    assert runner.killed, "no result came while a child trained on the worker node: nothing was killed"
    assert in_flight(log, lost) == runner.killed and {node for _, node, _, _ in lines} == {head, lost}
    # every architecture proposed trained to its end exactly once: the killed ones again, on the head node
    ended = [(node, tokens) for event, node, _, tokens in lines if event == "end"]
    assert len(runner.jobs) == BUDGET and sorted(tokens for _, tokens in ended) == sorted(runner.jobs)
    assert {tokens for node, tokens in ended if node == head} >= runner.killed
    # ... and is recorded once among the first evaluations, with its own result: no failure, nothing lost
    assert sorted(row["tokens"] for row in state.history if not row["reused"]) == sorted(runner.jobs)
    score = TokenMatchEvaluator(target)
    for row in state.history:
        tokens = tuple(int(t) for t in row["tokens"].split())
        arch = env.space.decode(tokens)
        assert not row["failed"], row["reason"]
        assert row["val_accuracy"] == score.evaluate(arch, 0).val_accuracy
        assert row["reused"] or row["seconds"] == evaluator.duration(arch, env.child_seed(tokens))
