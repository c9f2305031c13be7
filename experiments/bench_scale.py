"""Scale: architectures per hour and worker utilisation at 1 to 64 workers, in rounds and asynchronously.

    python experiments/bench_scale.py              # docs/results/scale.md's table (about 15 minutes)
    python experiments/bench_scale.py --backends virtual --workers 1 4 16 64 256
    python experiments/bench_scale.py --backends process --workers 4 --strategies lstm --modes async

Every search is real: the controller, its proposals and the rewards (the NAS-Bench-201 table's, ``--table``,
by default ``$NASRL_DATA/nb201/cifar10.csv``; where there is none, the synthetic token-match score). Only the
children's training time is simulated (:class:`~nasrl.env.runners.durations.SimulatedDurations`): each child
waits its duration, drawn from the child training times measured on MNIST-1D (``--durations mnist1d``) or
modelled from the cell's FLOPs (``--durations flops``), times ``--time-scale``, without using the CPU. So a
2-core machine can run 64 workers: what is measured is the scheduling, the rounds and the controller, not the
arithmetic.

Backends: ``process`` (``search.workers`` worker processes), ``ray`` (a local Ray with as many logical CPUs as
workers: Ray accepts more than the machine has) and ``virtual`` (:class:`~nasrl.env.runners.clock.VirtualClockRunner`:
the same schedule on a simulated clock, free of any overhead, the ceiling of each mode). The worker pool (or
Ray) starts and trains one warm-up round before the clock starts; each search then runs ``--per-worker``
architectures per worker (at least ``--min-budget``).

Per search, printed and written to ``--out`` (scale.csv, scale.md):
- ``arch_per_hour``: distinct architectures per hour of simulated time (wall seconds / time scale), what the
  search would achieve if its children really took the simulated times; ``ideal``: workers x 3600 / mean
  duration of the search's children, the rate of workers that never idle;
- ``utilisation``: simulated seconds of training / (workers x simulated seconds of the search): the share of
  worker time spent training children. The rest is lost to the round barrier (a round waits for its slowest
  child), the end of the search (the last children train while the other workers idle), and overheads that a
  simulated clock does not have (the controller's own time, sending jobs and results between processes).

Strategies are sized so that a round can fill the workers: the LSTM updates every ``workers`` architectures
(``batch_size``), evolution's population and batch are ``max(10, workers)`` and ``workers``, random search
proposes ``4 x workers`` per round. Asynchronously the same settings apply, without the rounds.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nasrl.controller.evolution import EvolutionPolicy
from nasrl.controller.lstm import LSTMPolicy
from nasrl.controller.policy import Policy, TokenSpec
from nasrl.controller.random_search import RandomPolicy
from nasrl.controller.search import MODES, run_search
from nasrl.env.childnet import ChildNetEnv
from nasrl.env.evaluators.downloads import NB201_TABLE, default_path
from nasrl.env.evaluators.synthetic import TokenMatchEvaluator
from nasrl.env.runners.clock import VirtualClockRunner
from nasrl.env.runners.durations import DURATIONS, SimulatedDurations
from nasrl.env.runners.local import ProcessRunner
from nasrl.env.runners.ray_runner import RayRunner

BACKENDS = ("process", "ray", "virtual")
STRATEGIES = ("random", "evolution", "lstm")
SYNTHETIC_TARGET = [2, 3, 1, 0, 0, 1, 4, 1, 1, 0, 0, 1, 5, 2, 0, 3]  # conf/env/synthetic.yaml's


def env_maker(table: Path | None) -> Callable[[], ChildNetEnv]:
    """A fresh environment for each search (an empty cache: every search trains its own children), over
    NAS-Bench-201 when its table exists (loaded once, shared), else the synthetic one (cnn1d space)."""
    if table is not None and table.exists():
        from nasrl.env.evaluators.nb201_table import NB201Table
        from nasrl.env.nb201 import NASBench201Env

        loaded = NB201Table(table)
        return lambda: NASBench201Env(loaded)
    evaluator = TokenMatchEvaluator(SYNTHETIC_TARGET)
    return lambda: ChildNetEnv("cnn1d", evaluator=evaluator)


def make_policy(strategy: str, env: ChildNetEnv, workers: int, seed: int) -> Policy:
    spec = TokenSpec.from_env(env)
    if strategy == "lstm":
        return LSTMPolicy(spec, seed=seed, batch_size=workers)
    if strategy == "evolution":
        return EvolutionPolicy(spec, seed=seed, population_size=max(10, workers), batch_size=workers)
    return RandomPolicy(spec, seed=seed)


def make_runner(backend: str, clock: SimulatedDurations, workers: int) -> Any:
    """The runner of ``backend`` with ``workers`` workers (warmed up by :func:`warm_up`, not here)."""
    if backend == "virtual":
        return VirtualClockRunner(clock, workers)  # the clock's duration and cost (a round longest first)
    if backend == "process":
        return ProcessRunner(clock, workers, threads_per_worker=1)
    return RayRunner(clock, num_cpus=workers)


def warm_up(runner: Any, clock: SimulatedDurations, env: ChildNetEnv, workers: int) -> float:
    """Rounds of ``2 x workers`` children until one takes no longer than its schedule allows, so every worker
    process exists and has paid its first child's one-time costs (imports; NAS-Bench-201's cost tables):
    a pool hands jobs to the processes that are ready, so one round is not enough. Returns the seconds spent."""
    start = time.monotonic()
    arch = env.space.decode(tuple(0 for _ in range(env.space.max_length)))
    for first in range(0, 40 * workers, 2 * workers):
        jobs = [(arch, seed) for seed in range(first, first + 2 * workers)]
        seconds = [clock.duration(a, s) * clock.time_scale for a, s in jobs]
        allowed = 1.5 * max(sum(seconds) / workers, max(seconds)) + 0.2
        began = time.monotonic()
        runner.run(jobs)
        if time.monotonic() - began <= allowed:
            break
    return time.monotonic() - start


def measure(
    env: ChildNetEnv, clock: SimulatedDurations, runner: Any, strategy: str, mode: str, workers: int, budget: int
) -> dict[str, Any]:
    """One search; its rate and utilisation in simulated time (see the module's docstring)."""
    policy = make_policy(strategy, env, workers, seed=0)
    start = time.monotonic()
    state = run_search(env, policy, budget=budget, max_episodes=20 * budget, runner=runner, workers=workers,
                       mode=mode)  # fmt: skip
    wall = time.monotonic() - start
    trained = [r for r in state.history if not r["reused"] and not r["cached"]]
    tokens = [tuple(int(t) for t in r["tokens"].split()) for r in trained]
    durations = [clock.duration(env.space.decode(t), env.child_seed(t)) for t in tokens]
    if isinstance(runner, VirtualClockRunner):
        simulated = runner.now
    else:
        simulated = wall / clock.time_scale
    mean = float(np.mean(durations))
    return {
        "workers": workers,
        "strategy": strategy,
        "mode": mode,
        "archs": state.distinct,
        "trained": len(trained),
        "wall_s": round(wall, 2),
        "simulated_h": round(simulated / 3600, 3),
        "arch_per_hour": round(state.distinct / simulated * 3600, 1),
        "ideal": round(workers * 3600 / mean, 1),
        "utilisation": round(sum(durations) / (workers * simulated), 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["virtual", "process", "ray"], choices=BACKENDS)
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 4, 16, 64])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--durations", default="mnist1d", choices=DURATIONS)
    parser.add_argument("--time-scale", type=float, default=0.01, help="wall seconds waited per simulated second")
    parser.add_argument("--per-worker", type=int, default=4, help="architectures per worker in each search")
    parser.add_argument("--min-budget", type=int, default=32)
    # default: the table of `nasrl-data nb201` (or --table ../shared/data/nb201/cifar10.csv where that folder is)
    parser.add_argument("--table", type=Path, default=default_path(NB201_TABLE))
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_scale"))
    args = parser.parse_args(argv)
    if any(w < 1 for w in args.workers) or not args.time_scale > 0:
        parser.error(f"--workers must be positive and --time-scale > 0, got {args.workers} and {args.time_scale}")
    if "ray" in args.backends:
        try:
            import ray  # noqa: F401
        except ImportError:
            parser.error('--backends ray needs Ray: pip install -e ".[ray]"')

    new_env = env_maker(args.table)
    env = new_env()
    print(f"environment: {type(env).__name__}, durations: {args.durations}, time scale {args.time_scale}", flush=True)
    rows = []
    for backend in args.backends:
        for workers in args.workers:
            clock = SimulatedDurations(env.evaluator, args.durations, time_scale=args.time_scale,
                                       wait=backend != "virtual")  # fmt: skip
            runner = make_runner(backend, clock, workers)
            try:
                started = warm_up(runner, clock, env, workers) if backend != "virtual" else 0.0
                for strategy in args.strategies:
                    for mode in args.modes:
                        if backend == "virtual":
                            runner = make_runner(backend, clock, workers)  # a fresh clock per search
                        budget = max(args.min_budget, args.per_worker * workers)
                        result = measure(new_env(), clock, runner, strategy, mode, workers, budget)
                        row = {"backend": backend, **result}
                        row["startup_s"] = round(started, 1)
                        rows.append(row)
                        print(", ".join(f"{k}={v}" for k, v in row.items()), flush=True)
            finally:
                runner.close()
    write(args.out, rows, args)


def write(out: Path, rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "scale.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    command = "python experiments/bench_scale.py " + " ".join(sys.argv[1:])
    lines = [
        f"`{command.strip()}` ({args.durations} durations, time scale {args.time_scale})",
        "",
        "| backend | workers | strategy | rounds: arch/h | rounds: utilisation | async: arch/h | async: utilisation "
        "| ideal arch/h |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    by_key = {(r["backend"], r["workers"], r["strategy"], r["mode"]): r for r in rows}
    for backend, workers, strategy in dict.fromkeys((r["backend"], r["workers"], r["strategy"]) for r in rows):
        cells = []
        for mode in MODES:
            r = by_key.get((backend, workers, strategy, mode))
            cells += [f"{r['arch_per_hour']:,.0f}", f"{r['utilisation']:.2f}"] if r else ["-", "-"]
        ideal = max(by_key[k]["ideal"] for k in by_key if k[:3] == (backend, workers, strategy))
        lines.append(f"| {backend} | {workers} | {strategy} | " + " | ".join(cells) + f" | {ideal:,.0f} |")
    (out / "scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
