"""Accuracy against cost: the non-dominated architectures of a search, their hypervolume, and the run files.

An architecture is on the front of a cost (``params``, ``flops``, ``latency_ms``, or a column of the environment's
cost table that the objective weighs, such as NAS-Bench-201's ``fpga`` latency: ``TokenEnv.recorded_costs``) when
no other evaluated architecture has at least its validation accuracy at no more of that cost, and is better in one
of the two.
Only the first evaluation of each architecture counts (``history.csv``'s reused rows repeat it), and only
children whose accuracy is a full result: failed children, children over a constraint's limit (never
trained) and children stopped early (a partial score, ``stopped`` 1) are left out.

:func:`write_pareto` writes, at the end of a search, ``pareto.csv`` (one row per architecture on any front,
with its costs and the fronts it is on) and ``pareto.png`` (one panel per recorded cost, log x: every
evaluated architecture in grey, the front highlighted as a step line).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from nasrl.controller.runfolder import atomic_write

COSTS = ("params", "flops", "latency_ms")
AXIS_LABELS = {
    "params": "parameters",
    "flops": "FLOPs of one forward pass of one example (2 per multiply-add)",
    "latency_ms": "latency (ms, median of timed forward passes)",
}
CSV_COLUMNS = ["index", "architecture", "tokens", "val_accuracy", *COSTS, "fronts"]  # with the counted costs only


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated ``(accuracy, cost)`` points, accuracy maximised and cost minimised, in
    order of increasing cost. Equal points are all kept (none is better than the other)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][1], -points[i][0]))
    front: list[int] = []
    best: tuple[float, float] | None = None  # the highest accuracy so far, at the lowest cost that reached it
    for i in order:
        accuracy, cost = points[i]
        if best is None or accuracy > best[0]:
            front.append(i)
            best = (accuracy, cost)
        elif (accuracy, cost) == best:  # the same point again
            front.append(i)
    return front


def hypervolume(points: Iterable[tuple[float, float]], reference: tuple[float, float]) -> float:
    """The area that ``(accuracy, cost)`` points dominate and that dominates ``reference`` = (the lowest accuracy
    that counts, the highest cost that counts): the union of the rectangles from each point to the reference.
    Points not better than the reference in both (accuracy above, cost below) add nothing."""
    ref_accuracy, ref_cost = reference
    kept = sorted((c, a) for a, c in points if a > ref_accuracy and c < ref_cost)
    area, best = 0.0, ref_accuracy
    for k, (cost, accuracy) in enumerate(kept):
        best = max(best, accuracy)  # the best accuracy reachable at this cost or less
        next_cost = kept[k + 1][0] if k + 1 < len(kept) else ref_cost
        area += (next_cost - cost) * (best - ref_accuracy)
    return area


def candidates(history: Iterable[dict[str, Any]], costs: Sequence[str] = COSTS) -> list[dict[str, Any]]:
    """The rows that count (see the module's docstring), each as ``index``, ``architecture``, ``tokens``,
    ``val_accuracy`` and the recorded ``costs`` (positive numbers only). Takes the loop's rows or
    ``history.csv``'s (strings)."""
    out = []
    for row in history:
        metrics = row.get("metrics") or {}
        if isinstance(metrics, str):
            metrics = json.loads(metrics) if metrics else {}
        if _flag(row.get("reused")) or _flag(row.get("failed")) or _flag(row.get("stopped")):
            continue
        if _flag(metrics.get("over_limit")):
            continue
        entry: dict[str, Any] = {
            "index": int(row["index"]),
            "architecture": row.get("architecture", ""),
            "tokens": row.get("tokens", ""),
            "val_accuracy": float(row["val_accuracy"]),
        }
        for name in costs:
            value = row.get(name) if name == "params" else metrics.get(name)
            if value not in (None, "") and float(value) > 0:  # 0: not recorded (an evaluator without costs)
                entry[name] = float(value)
        out.append(entry)
    return out


def fronts(rows: Sequence[dict[str, Any]], costs: Sequence[str] = COSTS) -> dict[str, list[int]]:
    """For each of ``costs`` that some of ``rows`` (from :func:`candidates`) record: the positions of the rows on
    its front, by increasing cost."""
    result = {}
    for name in costs:
        having = [i for i, r in enumerate(rows) if name in r]
        if having:
            front = pareto_front([(rows[i]["val_accuracy"], rows[i][name]) for i in having])
            result[name] = [having[j] for j in front]
    return result


def write_pareto(
    run_dir: str | Path, history: Iterable[dict[str, Any]], costs: Sequence[str] = COSTS
) -> dict[str, list[int]]:
    """Write ``run_dir/pareto.csv`` and, when a cost was recorded, ``run_dir/pareto.png``; return the fronts
    (cost name -> the ``index`` of each architecture on it). ``costs``: those to look for (the environment's
    ``recorded_costs``; each beyond the counted ones adds a column after theirs). Each file is written whole or not
    at all."""
    run_dir = Path(run_dir)
    rows = candidates(history, costs)
    by_cost = fronts(rows, costs)
    on = sorted({i for front in by_cost.values() for i in front}, key=lambda i: rows[i]["index"])
    buf = io.StringIO()
    columns = [*CSV_COLUMNS[:-1], *(c for c in costs if c not in COSTS), "fronts"]
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for i in on:
        r = rows[i]
        writer.writerow(
            {
                **{k: r[k] for k in ("index", "architecture", "tokens")},
                "val_accuracy": round(r["val_accuracy"], 6),
                **{name: _number(r[name]) if name in r else "" for name in columns[4:-1]},
                "fronts": " ".join(name for name, front in by_cost.items() if i in front),
            }
        )
    atomic_write(run_dir / "pareto.csv", lambda fh: fh.write(buf.getvalue().encode()))
    if by_cost:
        png = _plot(rows, by_cost)
        atomic_write(run_dir / "pareto.png", lambda fh: fh.write(png))
    return {name: [rows[i]["index"] for i in front] for name, front in by_cost.items()}


def _plot(rows: Sequence[dict[str, Any]], by_cost: dict[str, list[int]]) -> bytes:
    """pareto.png's bytes. The figure API without pyplot: no global backend is chosen for the caller."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter, FuncFormatter, LogLocator, NullFormatter

    fig = Figure(figsize=(5.5 * len(by_cost), 4.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(by_cost), squeeze=False)[0]
    for ax, (name, front) in zip(axes, by_cost.items()):
        every = [r for r in rows if name in r]
        ax.scatter([r[name] for r in every], [r["val_accuracy"] for r in every], s=12, color="0.7", label="evaluated")
        x = [rows[i][name] for i in front]
        y = [rows[i]["val_accuracy"] for i in front]
        # the best accuracy reachable at each cost: flat from a front point to the next, which is higher
        ax.step(x + [max(r[name] for r in every)], y + [y[-1]], where="post", color="tab:red", linewidth=1.2)
        ax.scatter(x, y, s=22, color="tab:red", zorder=3, label=f"front ({len(front)})")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 100k, 200k, 500k, 1M: readable, not crowded
        # counts as 20 k, 5 M; milliseconds as plain numbers (an engineering "500 m" ms would mislead)
        counted = name in ("params", "flops")  # a measurement (ms on a device) reads best as a plain number
        ax.xaxis.set_major_formatter(EngFormatter() if counted else FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(AXIS_LABELS.get(name, f"{name} (from the cost table)"))
        ax.set_ylabel("validation accuracy")
        ax.set_title(f"accuracy against {name}: {len(every)} architectures")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=110)
    return out.getvalue()


def _flag(value: Any) -> bool:
    """A 0/1 column read from the loop (int, bool) or from a CSV file (string)."""
    if isinstance(value, str):
        return value.strip() not in ("", "0", "False", "false")
    return bool(value)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4f}"
