"""Compare search strategies over many seeds on a tabular environment (NAS-Bench-201 by default).

    nasrl-benchmark benchmark.seeds=100 benchmark.budget=200   # the table of `nasrl-data nb201`, or env.table=PATH

(``python scripts/benchmark.py`` is the same command.) Each search goes through ``run_search``, the loop of
``nasrl-train``, in a worker process with one torch thread.

Writes into its run folder: summary.json (per strategy and budget: mean, std and n of each reported
column of the architecture with the best reward seen, and of the hypervolume of the accuracy-against-
parameters front of the architectures each search evaluated), summary.md (the same as tables, with the
published NAS-Bench-201 numbers and Welch's t-test against the baseline strategy) and curves.png.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from nasrl.controller.build import build_env, build_policy, seed_everything
from nasrl.controller.pareto import COSTS, hypervolume
from nasrl.controller.search import MODES, run_search
from nasrl.env.childnet import token_env
from nasrl.env.runners.clock import VirtualClockRunner
from nasrl.env.runners.durations import DURATIONS, SimulatedDurations
from nasrl.scripts.app import register_configs, report, run_app, stops_on_bad_input

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def search_once(
    task: tuple[str, dict, dict, int, int, int, dict],
) -> tuple[str, int, list[float], list[dict], dict]:
    """One search; returns the reward and reported metrics (with ``params``) of each distinct evaluation, in
    order, and what it cost (episodes played, seconds, and with simulated workers the simulated hours)."""
    name, strategy_cfg, env_cfg, seed, budget, max_episodes, simulated = task
    start = time.monotonic()  # run_search runs the controller on one thread: one process per core
    seed_everything(seed)
    env = build_env(OmegaConf.create(env_cfg))
    policy = build_policy(OmegaConf.create(strategy_cfg), env, seed)
    runner, workers = None, simulated["workers"]
    if workers > 1 or simulated["mode"] == "async":  # children on a virtual clock, as `workers` real ones would
        clock = SimulatedDurations(token_env(env).evaluator, simulated["durations"], wait=False)
        runner = VirtualClockRunner(clock, workers)  # the clock's cost orders a round longest first
    state = run_search(env, policy, budget=budget, max_episodes=max_episodes, seed=seed, runner=runner,
                       workers=workers, mode=simulated["mode"])  # fmt: skip
    firsts = [row for row in state.history if not row["reused"]]
    cost = {"episodes": state.episode, "seconds": time.monotonic() - start}
    if runner is not None:
        cost |= {"simulated_hours": runner.now / 3600, "utilisation": runner.utilisation}
    metrics = [{**json.loads(row["metrics"]), "params": row["params"]} for row in firsts]
    return name, seed, [row["reward"] for row in firsts], metrics, cost


def best_index(rewards: list[float], metrics: list[dict], budget: int) -> int | None:
    """The architecture a search of ``budget`` distinct evaluations reports: the first with the best reward, among
    those within a constraint's limit (None: none was); :func:`best_so_far` applies the same rule at every k."""
    within = [k for k in range(min(budget, len(rewards))) if not metrics[k].get("over_limit")]
    return max(within, key=lambda k: (rewards[k], -k)) if within else None


def best_so_far(rewards: list[float], metrics: list[dict], column: str, budget: int) -> np.ndarray:
    """For k = 1..budget: ``column`` of the best-reward architecture among the first k (the last value
    is carried forward when a search stopped early at its episode cap). Architectures over a constraint's
    limit (never evaluated) are never the best: NaN until one within the limit was found."""
    out = np.empty(budget)
    best = -np.inf
    value = np.nan
    for k in range(budget):
        if k < len(rewards) and rewards[k] > best and not metrics[k].get("over_limit"):
            best, value = rewards[k], metrics[k].get(column, np.nan)
        out[k] = value
    return out


def front_hypervolume(metrics: list[dict], column: str, k: int, reference: tuple[float, float]) -> float:
    """Hypervolume of the (``column``, params) front of the first ``k`` evaluations, against ``reference`` =
    (accuracy, params), divided by the area of the box from the reference to (100, 0 parameters): the share
    of that box the front dominates (children over a constraint's limit, never trained, are left out)."""
    points = [
        (float(m[column]), float(m["params"]))
        for m in metrics[:k]
        if column in m and m.get("params") and not m.get("over_limit")
    ]
    ref_accuracy, ref_params = reference
    return hypervolume(points, reference) / ((100.0 - ref_accuracy) * ref_params)


def hypervolume_over_seeds(
    runs: list[tuple[list[float], list[dict]]], column: str, k: int, reference: tuple[float, float]
) -> dict[str, Any]:
    """Mean, std and n over a strategy's searches (``runs``: rewards and metrics of each) of
    :func:`front_hypervolume` after ``k`` evaluations."""
    volumes = np.array([front_hypervolume(metrics, column, k, reference) for _, metrics in runs])
    return {
        "mean": float(volumes.mean()),
        "std": float(volumes.std(ddof=1)) if len(volumes) > 1 else 0.0,
        "n": int(len(volumes)),
    }


def summarize(
    results: dict[str, list[tuple[list[float], list[dict]]]],
    columns: list[str],
    report_at: list[int],
    budget: int,
    baseline: str,
    hv_reference: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Per strategy and budget in ``report_at``: mean, std, max and n over seeds of each column of the best-reward
    architecture (with Welch's p against ``baseline``) and, given ``hv_reference``, of the normalised
    hypervolume of the (first column, params) front (:func:`front_hypervolume`). Under a constraint, a search
    that found no architecture within the limit yet has none: n counts the searches that did."""
    from scipy.stats import ttest_ind

    summary: dict[str, Any] = {}
    curves = {
        name: {c: np.stack([best_so_far(r, m, c, budget) for r, m in runs]) for c in columns}
        for name, runs in results.items()
    }
    for name in results:
        summary[name] = {}
        for b in report_at:
            entry: dict[str, Any] = {}
            for c in columns:
                values = curves[name][c][:, b - 1]
                values = values[~np.isnan(values)]
                entry[c] = {
                    "mean": float(values.mean()) if len(values) else float("nan"),
                    "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                    "max": float(values.max()) if len(values) else float("nan"),
                    "n": int(len(values)),
                }
                if baseline in curves and name != baseline and len(values) > 1:
                    base = curves[baseline][c][:, b - 1]
                    base = base[~np.isnan(base)]
                    entry[c]["p_vs_" + baseline] = float(ttest_ind(values, base, equal_var=False).pvalue)
            if hv_reference is not None:
                entry["hypervolume"] = hypervolume_over_seeds(results[name], columns[0], b, hv_reference)
            summary[name][str(b)] = entry
    return {"summary": summary, "curves": curves}


def write_markdown(
    path: Path,
    summary: dict,
    columns: list[str],
    report_at: list[int],
    baseline: str,
    published: dict,
    settings: str,
    effort: dict | None = None,
    hv_reference: tuple[float, float] | None = None,
) -> None:
    lines = [f"# Benchmark: {settings}", ""]
    header = "| strategy | evaluations | " + " | ".join(f"{c} (mean ± std)" for c in columns)
    header += f" | n | p vs {baseline} ({columns[0]}, Welch) |"
    lines += [header, "|" + " --- |" * (len(columns) + 4)]
    for name, by_budget in summary.items():
        for b in report_at:
            e = by_budget[str(b)]
            cells = " | ".join(f"{e[c]['mean']:.2f} ± {e[c]['std']:.2f}" for c in columns)
            p = e[columns[0]].get("p_vs_" + baseline)
            p_text = "-" if p is None else (f"{p:.1e}" if p < 0.001 else f"{p:.3f}")
            lines.append(f"| {name} | {b} | {cells} | {e[columns[0]]['n']} | {p_text} |")
    if hv_reference is not None:
        ref_accuracy, ref_params = hv_reference
        lines += [
            "",
            f"| strategy | evaluations | hypervolume of the {columns[0]} against parameters front (mean ± std), "
            f"reference ({ref_accuracy:g}, {ref_params:,.0f} parameters), as a share of the box from it to "
            "(100, 0 parameters) |",
            "| --- | --- | --- |",
        ]
        for name, by_budget in summary.items():
            for b in report_at:
                hv = by_budget[str(b)]["hypervolume"]
                lines.append(f"| {name} | {b} | {hv['mean']:.4f} ± {hv['std']:.4f} |")
    if effort:
        simulated = any("simulated_hours" in e for e in effort.values())
        lines += ["", "| strategy | episodes per search (mean) | seconds per search (mean, one core) |"
                  + (" simulated hours per search | worker utilisation |" if simulated else "")]  # fmt: skip
        lines += ["| --- | --- | --- |" + (" --- | --- |" if simulated else "")]
        for name, e in effort.items():
            extra = f" {e['simulated_hours']:.2f} | {e['utilisation']:.3f} |" if simulated else ""
            lines.append(f"| {name} | {e['episodes']:.0f} | {e['seconds']:.2f} |{extra}")
    if published:
        lines += [
            "",
            "Published NAS-Bench-201 numbers (Dong & Yang 2020, Table 5; 12,000 s budget, about 100 evaluations):",
            "",
            "| column | strategy | mean ± std |",
            "| --- | --- | --- |",
        ]
        for column, entries in published.items():
            for name, (mean, std) in entries.items():
                lines.append(f"| {column} | {name} | {mean:.2f}{'' if std is None else f' ± {std:.2f}'} |")
    path.write_text("\n".join(lines) + "\n")


def plot_curves(path: Path, curves: dict, column: str, published: dict, zoom_after: float = 0.1) -> Figure:
    """Write ``curves.png``: per strategy, the mean over seeds of ``column`` of the best-reward architecture
    against distinct evaluations, with the 95% confidence interval of that mean (Student's t, n seeds) as a
    band, and the ``published`` means of ``column`` as dotted lines labelled on the right edge. The y axis
    spans where the strategies differ: from the lowest mean after the first ``zoom_after`` of the budget to
    just above the highest band and published line. With a published entry named ``optimum...`` (the
    table's best, e.g. "optimum of the table") a second panel shows each strategy's regret, optimum - mean,
    on a log axis over the whole budget. Returns the (closed) figure, for tests to read its axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.transforms import blended_transform_factory
    from scipy.stats import t as student_t

    if not 0 <= zoom_after < 1:
        raise ValueError(f"zoom_after must be a share of the budget in [0, 1), got {zoom_after!r}")
    lines = {name: (mean, std) for name, (mean, std) in published.get(column, {}).items()}
    optimum = next((mean for name, (mean, _) in lines.items() if name.startswith("optimum")), None)
    fig, axes = plt.subplots(1, 2 if optimum is not None else 1, figsize=(12 if optimum is not None else 7.5, 4.8))
    ax = np.atleast_1d(axes)[0]
    sizes, low, high = set(), np.inf, -np.inf
    stats = {}
    for name, by_column in curves.items():
        values = by_column[column]
        n = values.shape[0]
        sizes.add(n)
        mean = np.nanmean(values, axis=0)
        # the interval of the mean, not the spread of the seeds: t quantile x standard error
        half = student_t.ppf(0.975, n - 1) * np.nanstd(values, axis=0, ddof=1) / np.sqrt(n) if n > 1 else 0 * mean
        stats[name] = (mean, half)
        x = np.arange(1, values.shape[1] + 1)
        (line,) = ax.plot(x, mean, label=f"{name} (n={n})")
        ax.fill_between(x, mean - half, mean + half, alpha=0.25, color=line.get_color(), linewidth=0)
        start = min(int(np.ceil(zoom_after * len(mean))), len(mean) - 1)
        low = min(low, float(np.nanmin(mean[start:])))
        high = max(high, float(np.nanmax((mean + half)[start:])))
    if lines:
        low = min(low, *(m for m, _ in lines.values()))
        high = max(high, *(m for m, _ in lines.values()))
    if not (np.isfinite(low) and np.isfinite(high)):  # a column no architecture reported: nothing to zoom on
        low, high = 0.0, 100.0
    pad = max(0.06 * (high - low), 0.05)  # a flat curve still gets a readable axis
    ax.set_ylim(low - pad, high + pad)
    # published lines: labelled at the right edge, labels pushed apart to one text height at least
    gap = 0.055 * (high - low + 2 * pad)
    ordered = sorted(lines.items(), key=lambda item: item[1][0])
    label_y = [m for _, (m, _) in ordered]
    for i in range(1, len(label_y)):
        label_y[i] = max(label_y[i], label_y[i - 1] + gap)
    overflow = label_y[-1] - (high + pad) if label_y else 0.0
    if overflow > 0:  # pushed past the top: shift down, then apart again from the top
        label_y[-1] -= overflow
        for i in range(len(label_y) - 2, -1, -1):
            label_y[i] = min(label_y[i], label_y[i + 1] - gap)
    edge = blended_transform_factory(ax.transAxes, ax.transData)
    for (name, (mean, std)), y in zip(ordered, label_y):
        ax.axhline(mean, linestyle=":", linewidth=1, color="gray")
        text = f"{mean:.2f}" + ("" if std is None else f" ± {std:.2f}") + f" {name}"
        ax.annotate(text, (1.0, mean), xytext=(1.01, y), textcoords=edge, xycoords=edge, fontsize=7, color="dimgray",
                    va="center", arrowprops={"arrowstyle": "-", "color": "lightgray", "linewidth": 0.6})  # fmt: skip
    budget = max(v[column].shape[1] for v in curves.values())
    ax.set_xlabel("distinct architectures evaluated")
    ax.set_ylabel(f"{column} of the best-reward architecture")
    ax.set_title(f"y from the lowest mean after {int(np.ceil(zoom_after * budget))} evaluations; "
                 "dotted: published", fontsize=9)  # fmt: skip
    ax.legend(loc="lower right", fontsize=8)
    if optimum is not None:
        right = np.atleast_1d(axes)[1]
        for name, (mean, half) in stats.items():
            x = np.arange(1, len(mean) + 1)
            floor = 1e-3  # a band reaching the optimum has no log: draw it down to a thousandth of a point
            (line,) = right.plot(x, np.maximum(optimum - mean, floor), label=name)
            right.fill_between(x, np.maximum(optimum - mean - half, floor), np.maximum(optimum - mean + half, floor),
                               alpha=0.25, color=line.get_color(), linewidth=0)  # fmt: skip
        right.set_yscale("log")
        right.set_xlabel("distinct architectures evaluated")
        right.set_ylabel(f"regret: {optimum:.2f} (optimum) - mean {column}")
        right.set_title("the whole budget, regret to the table's optimum (log axis)", fontsize=9)
        right.grid(True, which="both", axis="y", linewidth=0.3, alpha=0.5)
    n_text = f"n={sizes.pop()} seeds" if len(sizes) == 1 else "n seeds per strategy in the legend"
    fig.suptitle(f"mean ± 95% confidence interval of the mean over {n_text}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig


@hydra.main(config_path="pkg://nasrl.conf", config_name="benchmark", version_base="1.3")
def benchmark(cfg: DictConfig) -> None:
    with stops_on_bad_input():
        _benchmark(cfg)


def _benchmark(cfg: DictConfig) -> None:
    bench = cfg.benchmark
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    unknown = [s for s in bench.strategies if s not in cfg.strategies]
    if unknown:
        raise ValueError(f"benchmark.strategies names {unknown}, accepted are {list(cfg.strategies)}")
    report_at = [b for b in bench.report_at if b <= bench.budget] or [bench.budget]
    metric = cfg.env.get("objective", {}).get("metric")
    hv_reference: tuple[float, float] | None = _hv_reference(bench.hv_reference)
    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    evaluator = token_env(build_env(OmegaConf.create(env_cfg))).evaluator  # fail fast on a bad table, here
    columns = list(evaluator.summary_columns)
    if evaluator.input_shape is None:  # no networks, so no parameter counts: no accuracy-against-parameters front
        hv_reference = None
    if not columns:
        raise ValueError(
            "the benchmark needs a tabular environment with reported columns (env=nb201, env=table, "
            "env=transnas101_micro, ...)"
        )
    if cfg.env.get("costs") is not None and metric not in (None, *COSTS):
        columns.append(metric)  # the reported architecture's cost from the table: its mean, and its max
    if bench.simulated_workers < 1 or bench.mode not in MODES or bench.durations not in DURATIONS:
        raise ValueError(
            f"benchmark.simulated_workers must be >= 1 (got {bench.simulated_workers}), benchmark.mode one of "
            f"{list(MODES)} (got {bench.mode!r}), benchmark.durations one of {list(DURATIONS)} "
            f"(got {bench.durations!r})"
        )
    tasks = [
        (
            name,
            OmegaConf.to_container(cfg.strategies[name], resolve=True),
            env_cfg,
            seed,
            bench.budget,
            bench.max_episodes_factor * bench.budget,
            {"workers": bench.simulated_workers, "mode": bench.mode, "durations": bench.durations},
        )
        for name in bench.strategies
        for seed in range(bench.first_seed, bench.first_seed + bench.seeds)
    ]
    start = time.monotonic()
    results: dict[str, list] = {name: [None] * bench.seeds for name in bench.strategies}
    costs: dict[str, list] = {name: [] for name in bench.strategies}
    with mp.get_context("spawn").Pool(bench.workers) as pool:
        for name, seed, rewards, metrics, cost in pool.imap_unordered(search_once, tasks, chunksize=4):
            results[name][seed - bench.first_seed] = (rewards, metrics)
            costs[name].append(cost)
    seconds = time.monotonic() - start
    effort = {  # episodes include re-sampled architectures, which cost no evaluation but an update
        name: {key: float(np.mean([c[key] for c in runs])) for key in runs[0]} for name, runs in costs.items()
    }

    out = summarize(results, columns, report_at, bench.budget, bench.baseline, hv_reference)
    published = OmegaConf.to_container(bench.published, resolve=True) if "published" in bench else {}
    published = {c: lines for c, lines in published.items() if c in columns}  # NAS-Bench-201's, on its tables only
    if metric is not None:  # the published searches had no cost objective: not comparable
        published = {}
    (run_dir / "summary.json").write_text(
        json.dumps(
            {
                "settings": OmegaConf.to_container(bench),
                "seconds": seconds,
                "effort": effort,
                "hypervolume": None
                if hv_reference is None
                else {
                    "column": columns[0],
                    "reference": {"accuracy": hv_reference[0], "params": hv_reference[1]},
                    "normalised_by": "(100 - reference accuracy) * reference params",
                },
                "summary": out["summary"],
            },
            indent=2,
        )
    )
    reward = cfg.env.get("reward_column", cfg.env.get("reward", "?"))
    settings = f"{bench.seeds} seeds x budget {bench.budget}, reward {reward}"
    if metric is not None:
        objective = cfg.env.objective
        settings += f", objective {objective.mode} on {metric} (target {objective.target:g})"
    if bench.simulated_workers > 1 or bench.mode == "async":
        settings += (f", search.mode={bench.mode} with {bench.simulated_workers} simulated workers "
                     f"({bench.durations} durations, virtual clock)")  # fmt: skip
    write_markdown(
        run_dir / "summary.md",
        out["summary"],
        columns,
        report_at,
        bench.baseline,
        published,
        settings,
        effort,
        hv_reference,
    )
    plot_curves(run_dir / "curves.png", out["curves"], columns[0], published)
    report((run_dir / "summary.md").read_text())
    report(f"{len(tasks)} searches in {seconds:.0f} s; run folder: {run_dir}")


def _hv_reference(value: Any) -> tuple[float, float]:
    """``benchmark.hv_reference``, checked: [accuracy below 100, a positive parameter count]."""
    ref = [float(v) for v in value]
    if len(ref) != 2 or not ref[0] < 100 or not ref[1] > 0:
        raise ValueError(
            f"benchmark.hv_reference must be [accuracy below 100, parameters above 0], got {list(value)!r}"
        )
    return ref[0], ref[1]


def main() -> None:
    """The console script ``nasrl-benchmark``."""
    register_configs()
    run_app(benchmark)


if __name__ == "__main__":
    main()
