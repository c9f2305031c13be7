"""How well an architecture searched for one task does on the others: a transfer matrix over a table's tasks.

    python experiments/bench_transfer.py --table ../shared/data/transnas101/micro.csv --space transnas101_micro \\
        --strategies random evolution --seeds 10 --budget 50 --loo-budget 100 --out transfer-micro

For one space's table and each strategy x seed, it searches once with each task (numeric column) as the reward
and takes the architecture the search returns (its best by its own reward, the first found among ties); it
scores that architecture's normalised regret on every task (``normalised_regret``: 0 = the task's best
architecture in the table, 1 = its median). The mean over seeds is a tasks x tasks matrix per strategy (rows =
the task searched on, columns = the task scored on).

Leave-one-task-out: for each task, one search with the multi-task reward of the other tasks (``env.reward`` a
list: the mean of their percentiles), scored on the held-out task (regret and percentile); beside it what
issue 35 calls the ceiling: the architecture(s) best on the mean of the other tasks' percentiles, scored on
the held-out task (the mean over ties). It is what a perfect optimiser of the multi-task reward returns, not an
upper bound on the held-out score: a search that stops short of that optimum can land higher.

Searches are ``nasrl-benchmark``'s (``search_once``: the ``nasrl-train`` loop, in a pool of ``--workers``
processes, or in this one with ``--workers 1``); a strategy is one of ``conf/benchmark.yaml``'s, and Hydra
overrides of that config follow ``--``.
Writes into ``--out``: ``matrix.csv``, ``loo.csv``, ``transfer.md`` (both as tables), ``transfer.png`` (a heat
map per strategy) and ``summary.json`` (settings, seconds, both results).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from nasrl.env.evaluators.table import TableError, TableEvaluator, normalised_regret, numeric_columns, percentile
from nasrl.scripts.app import register_configs
from nasrl.scripts.benchmark import best_index, search_once

LOO = "without:"  # a leave-one-out search's name: without:TASK


def returned(rewards: list[float], metrics: list[dict], budget: int) -> dict[str, float]:
    """Every column of the architecture a search returns (:func:`nasrl.scripts.benchmark.best_index`)."""
    best = best_index(rewards, metrics, budget)
    if best is None:
        raise TableError(f"no architecture of the first {budget} met the objective's limit")
    return metrics[best]


def transfer_matrix(searches: dict[str, list[dict[str, float]]], tasks: list[str], table: TableEvaluator) -> np.ndarray:
    """Mean normalised regret, over the returned architectures (``searches``: for each task searched on, one
    row of columns per seed), on each task: rows = searched on, columns = scored on."""
    columns = {t: [row[t] for row in table.rows.values()] for t in tasks}
    return np.array(
        [[np.mean([normalised_regret(columns[j], arch[j]) for arch in searches[i]]) for j in tasks] for i in tasks]
    )


def ceiling(tasks: list[str], held_out: str, table: TableEvaluator) -> tuple[float, float]:
    """Regret and percentile on ``held_out`` of the architecture(s) best on the mean of the other tasks'
    percentiles (the mean over ties): the best a multi-task search on the others can return."""
    rows = list(table.rows.values())
    others = [t for t in tasks if t != held_out]
    score = np.mean([percentile_all(table, t) for t in others], axis=0)
    best = np.flatnonzero(np.isclose(score, score.max()))
    column = [row[held_out] for row in rows]
    return (
        float(np.mean([normalised_regret(column, rows[k][held_out]) for k in best])),
        float(np.mean([percentile(column, rows[k][held_out]) for k in best])),
    )


def percentile_all(table: TableEvaluator, task: str) -> np.ndarray:
    """The percentile (``percentile``) of every row of ``table`` in column ``task``, in row order, at once."""
    column = np.array([row[task] for row in table.rows.values()])
    ordered = np.sort(column)
    below = np.searchsorted(ordered, column, side="left")
    at_most = np.searchsorted(ordered, column, side="right")
    return 100.0 * (below + 0.5 * (at_most - below)) / len(column)


def study(
    table_path: str,
    space: str,
    strategies: list[str],
    seeds: int,
    first_seed: int,
    budget: int,
    workers: int = 2,
    tasks: list[str] | None = None,
    overrides: list[str] | None = None,
    loo_budget: int | None = None,
) -> dict[str, Any]:
    """Run every search (strategy x seed x (each task, and each leave-one-out)) and score them; returns the
    matrices (per strategy, as nested lists), the leave-one-out rows and the seconds it took. The task searches
    spend ``budget`` distinct evaluations, the leave-one-out searches ``loo_budget`` (default: ``budget``)."""
    register_configs()
    with initialize_config_module("nasrl.conf", version_base=None):  # the installed configs
        cfg = compose(
            "benchmark", overrides=["env=table", f"env.space={space}", f"env.table={table_path}", *(overrides or [])]
        )
    unknown = [s for s in strategies if s not in cfg.strategies]
    if unknown:
        raise ValueError(f"--strategies names {unknown}, accepted are {list(cfg.strategies)}")
    table = TableEvaluator(table_path, reward=tasks or list(numeric_columns(table_path)))  # checks the names
    tasks = list(table.tasks)
    if len(tasks) < 2:
        raise ValueError(f"--tasks needs at least 2 tasks (columns), got {tasks}")
    env = OmegaConf.to_container(cfg.env, resolve=True)
    assert isinstance(env, dict)
    rewards: dict[str, Any] = {t: t for t in tasks} | {LOO + h: [t for t in tasks if t != h] for h in tasks}
    simulated = {"workers": 1, "mode": "rounds", "durations": "flops"}
    budgets = {search: (loo_budget or budget) if search.startswith(LOO) else budget for search in rewards}
    jobs = [
        (f"{name}|{search}", OmegaConf.to_container(cfg.strategies[name], resolve=True), env | {"reward": reward},
         seed, budgets[search], cfg.benchmark.max_episodes_factor * budgets[search], simulated)
        for name in strategies for search, reward in rewards.items()
        for seed in range(first_seed, first_seed + seeds)
    ]  # fmt: skip
    start = time.monotonic()
    found: dict[str, dict[str, list[dict[str, float]]]] = {name: {s: [] for s in rewards} for name in strategies}
    with contextlib.ExitStack() as stack:
        if workers > 1:
            searches = stack.enter_context(mp.get_context("spawn").Pool(workers)).imap(search_once, jobs, chunksize=4)
        else:  # one worker: in this process (no start-up of a process with its imports)
            searches = map(search_once, jobs)
        for label, _, evaluated, metrics, _ in searches:
            name, search = label.split("|")
            found[name][search].append(returned(evaluated, metrics, budgets[search]))
    seconds = time.monotonic() - start

    values = {t: [row[t] for row in table.rows.values()] for t in tasks}
    loo = []
    for held in tasks:
        regret_ceiling, percentile_ceiling = ceiling(tasks, held, table)
        entry: dict[str, Any] = {
            "held_out": held,
            "ceiling": {"regret": regret_ceiling, "percentile": percentile_ceiling},
        }
        for name in strategies:
            archs = found[name][LOO + held]
            regrets = [normalised_regret(values[held], a[held]) for a in archs]
            percentiles = [percentile(values[held], a[held]) for a in archs]
            entry[name] = {
                "regret": float(np.mean(regrets)),
                "regret_std": float(np.std(regrets, ddof=1)) if len(regrets) > 1 else 0.0,
                "percentile": float(np.mean(percentiles)),
            }
        loo.append(entry)
    return {
        "tasks": tasks,
        "matrix": {name: transfer_matrix(found[name], tasks, table).tolist() for name in strategies},
        "loo": loo,
        "seconds": seconds,
        "searches": len(jobs),
    }


def write(out: Path, result: dict[str, Any], settings: dict[str, Any]) -> None:
    """``matrix.csv``, ``loo.csv``, ``transfer.md``, ``transfer.png`` and ``summary.json`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    tasks, strategies = result["tasks"], list(result["matrix"])
    with open(out / "matrix.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["strategy", "searched_on", *tasks])
        for name in strategies:
            for task, row in zip(tasks, result["matrix"][name], strict=True):
                writer.writerow([name, task, *(f"{v:.4f}" for v in row)])
    with open(out / "loo.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["held_out", *(f"{s}_{k}" for s in [*strategies, "ceiling"] for k in ("regret", "percentile"))])
        for e in result["loo"]:
            cells = [e[s][k] for s in [*strategies, "ceiling"] for k in ("regret", "percentile")]
            writer.writerow([e["held_out"], *(f"{v:.4f}" for v in cells)])

    budgets = f"budget {settings['budget']}, leave-one-out budget {settings.get('loo_budget') or settings['budget']}"
    searches = f"{result['searches']} searches in {result['seconds']:.0f} s ({budgets})."
    lines = [f"Settings: {settings['command']}", "", searches, ""]
    for name in strategies:
        lines += [f"Mean normalised regret, `{name}` (rows: searched on; columns: scored on; 0 = the task's best, "
                  "1 = its median):", "", "| searched on | " + " | ".join(tasks) + " |",
                  "| --- |" + " --- |" * len(tasks)]  # fmt: skip
        for task, row in zip(tasks, result["matrix"][name], strict=True):
            lines.append(f"| {task} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
        lines.append("")
    header = " | ".join(f"`{s}` regret (percentile)" for s in strategies)
    lines += ["Leave-one-task-out: searched on the mean percentile of the other tasks, scored on the held-out one:",
              "", f"| held out | {header} | ceiling regret (percentile) |",
              "| --- |" + " --- |" * (len(strategies) + 1)]  # fmt: skip
    for e in result["loo"]:
        cells = [f"{e[s]['regret']:.2f} ± {e[s]['regret_std']:.2f} ({e[s]['percentile']:.1f})" for s in strategies]
        ceil = e["ceiling"]
        lines.append(
            f"| {e['held_out']} | " + " | ".join(cells) + f" | {ceil['regret']:.2f} ({ceil['percentile']:.1f}) |"
        )
    loo = result["loo"]
    means = [
        f"{np.mean([e[s]['regret'] for e in loo]):.2f} ({np.mean([e[s]['percentile'] for e in loo]):.1f})"
        for s in [*strategies, "ceiling"]
    ]
    lines.append("| **mean** | " + " | ".join(means) + " |")
    (out / "transfer.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps({"settings": settings, **result}, indent=2))
    heat_map(out / "transfer.png", result)


def heat_map(path: Path, result: dict[str, Any]) -> None:
    """One panel per strategy: the transfer matrix, the value written in each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks, strategies = result["tasks"], list(result["matrix"])
    top = max(1.0, max(float(np.max(m)) for m in result["matrix"].values()))
    fig, axes = plt.subplots(1, len(strategies), figsize=(2.0 + 3.6 * len(strategies), 4.4), squeeze=False)
    for panel, (ax, name) in enumerate(zip(axes[0], strategies, strict=True)):
        matrix = np.array(result["matrix"][name])
        image = ax.imshow(matrix, cmap="viridis_r", vmin=0.0, vmax=top)
        for i in range(len(tasks)):
            for j in range(len(tasks)):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if matrix[i, j] > top / 2 else "black")  # fmt: skip
        ax.set_xticks(range(len(tasks)), tasks, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(tasks)), tasks if panel == 0 else [], fontsize=7)  # the rows are the same in each
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("scored on", fontsize=8)
        if panel == 0:
            ax.set_ylabel("searched on", fontsize=8)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="mean normalised regret")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", required=True, help="the table's CSV (TransNAS-Bench-101's micro.csv, ...)")
    parser.add_argument("--space", default=None, help="its space (default: transnas101_ + the table's file name)")
    parser.add_argument("--tasks", nargs="+", default=None, help="the columns to search and score (default: all)")
    parser.add_argument("--strategies", nargs="+", default=["random", "evolution", "lstm"])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--budget", type=int, default=50, help="distinct evaluations per search")
    parser.add_argument(
        "--loo-budget", type=int, default=None, help="distinct evaluations per leave-one-out search (default: --budget)"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="transfer", help="the folder to write into")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the benchmark's config, after --")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.budget < 1 or (args.loo_budget is not None and args.loo_budget < 1):
        parser.error(
            f"--seeds, --budget and --loo-budget must be at least 1, got {args.seeds}, {args.budget} "
            f"and {args.loo_budget}"
        )
    space = args.space or f"transnas101_{Path(args.table).stem}"
    try:
        result = study(args.table, space, args.strategies, args.seeds, args.first_seed, args.budget, args.workers,
                       args.tasks, args.overrides, args.loo_budget)  # fmt: skip
    except (TableError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    command = "python experiments/bench_transfer.py " + " ".join(sys.argv[1:] if argv is None else argv)
    write(Path(args.out), result, {"command": command, **vars(args), "space": space})
    print((Path(args.out) / "transfer.md").read_text())


if __name__ == "__main__":
    main()
