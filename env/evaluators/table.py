"""Any tabular benchmark as an evaluator: a CSV with one row per architecture, looked up by its key.

The key column (``arch`` by default) holds each architecture's choices in its space's decision order,
joined by ``-`` (:func:`~nasrl.env.spaces.families.table.table_key`): TransNAS-Bench-101's micro cells read
``0-1-2-3-1-2``, its macro skeletons ``1-1-2-3`` (the depth is the number of parts). Every other column
that holds a number in every row is a metric: one of them (``reward``) is what the search maximises, and
all of them come back, raw, in ``EvalResult.metrics`` (so in ``info`` and ``history.csv``) and through
:meth:`TableEvaluator.row`, which scores an architecture on every column at once (transfer across tasks).

How the reward column becomes the reward (``reward_scale``), since a table's columns need not be
accuracies: ``minmax`` maps the table's worst value to 0 and its best to 1 (any column, whatever its unit
or sign: a negated loss, an SSIM, a percentage), ``percent`` divides by 100 (an accuracy in percent, as
NAS-Bench-201's), ``raw`` keeps the value. Higher is better in every column the reward may be.

Several reward columns (``env.reward=[class_object,class_scene]``) make a multi-task reward: the mean over
those columns of the architecture's :func:`percentile` in each (ties counted half), divided by 100. Percentiles
rather than min-max scores, so that one outlier row (a cell of zero operations, a diverged loss) does not
squeeze a task's scores together and give it less weight than the others; ``reward_scale`` is then unused. The
mean percentile itself comes back in ``metrics`` as ``mean_percentile`` (:data:`MULTI_TASK`).

:func:`normalised_regret` and :func:`percentile` score one value against a column's values: what transfer
studies (``experiments/bench_transfer.py``) report.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nasrl.env.evaluators.base import EvalResult, Evaluator
from nasrl.env.spaces.families.table import SEPARATOR, table_key
from nasrl.env.spaces.space import Architecture, SearchSpace

REWARD_SCALES = ("minmax", "percent", "raw")
MULTI_TASK = "mean_percentile"  # the metric a multi-task reward is made from (0 to 100)


def percentile(values: Sequence[float] | np.ndarray, value: float) -> float:
    """The percentile of ``value`` among ``values`` (a column over the table's rows): 100 x the share of rows
    below it, rows equal to it counted half (so the table's median row scores 50, and a tie of many rows does
    not lift them all to its top)."""
    return percentile_in_sorted(np.sort(np.asarray(values, dtype=float)), value)


def percentile_in_sorted(ordered: np.ndarray, value: float) -> float:
    """:func:`percentile` of ``value`` among ``ordered``, already sorted (a table's column, sorted once)."""
    below = np.searchsorted(ordered, value, side="left")
    at_most = np.searchsorted(ordered, value, side="right")
    return float(100.0 * (below + 0.5 * (at_most - below)) / len(ordered))


def normalised_regret(values: Sequence[float] | np.ndarray, value: float) -> float:
    """(best - ``value``) / (best - median) over ``values`` (a higher-is-better column over the table's rows):
    0 for the table's best, 1 for its median, above 1 below the median. A one-line error when the median is
    the best (more than half the rows tie at the top): nothing to normalise by."""
    column = np.asarray(values, dtype=float)
    best, median = float(column.max()), float(np.median(column))
    if best <= median:
        raise TableError(f"normalised regret is undefined: the column's median equals its best ({best:g})")
    return (best - value) / (best - median)


class TableError(ValueError):
    """A table that cannot be used with its settings; the message names the file, the line or column, and what
    is accepted."""


class TableEvaluator(Evaluator):
    """Evaluator that looks an architecture up in a CSV by its key (the module docstring has the format).

    Args:
        table: the CSV's path (relative to where you run). Required: a table is data, never shipped.
        reward: the column the search maximises (higher is better), or several (a multi-task reward: the mean
            of the architecture's percentiles in them / 100; the module docstring); required.
        key_column: the column holding each architecture's key: its choices in the space's decision order,
            joined by ``-``.
        reported: the columns reported beside the reward; null: every numeric column. Each comes back raw in
            ``EvalResult.metrics`` (``info``, ``history.csv``), the reward column's raw value included.
        reward_scale: how the reward column becomes the reward: ``minmax`` (the table's worst 0, its best 1),
            ``percent`` (value / 100: an accuracy in percent) or ``raw`` (the value itself).
    """

    def __init__(
        self,
        table: str | Path | None = None,
        reward: str | Sequence[str] | None = None,
        key_column: str = "arch",
        reported: Sequence[str] | None = None,
        reward_scale: str = "minmax",
    ) -> None:
        if table is None:
            raise TableError("env.table is not set: give the path of the CSV to look architectures up in")
        self.table = Path(str(table)).expanduser()
        self.key_column = key_column
        path = self.table.resolve()
        if not path.is_file():
            raise TableError(f"table {path} does not exist: set env.table to a CSV with a key column {key_column!r}")
        stat = path.stat()  # part of the cache's key: a table rewritten in place is read again
        self.columns, self.rows = _load(path, key_column, stat.st_mtime_ns, stat.st_size)
        if reward is None or isinstance(reward, str) and reward not in self.columns:
            what = " is not set" if reward is None else f"={reward!r} is not a numeric column of {self.table}"
            raise TableError(f"env.reward{what}: accepted are {list(self.columns)}")
        tasks = [reward] if isinstance(reward, str) else [str(c) for c in reward]
        unknown = [c for c in tasks if c not in self.columns]
        if not tasks or unknown or len(set(tasks)) < len(tasks):
            what = f"names {unknown}, not numeric columns of {self.table}" if unknown else "is empty or repeats one"
            accepted = list(self.columns)
            raise TableError(f"env.reward={tasks} {what}: give one column or several distinct ones of {accepted}")
        unknown = [c for c in reported or () if c not in self.columns]
        if unknown:
            raise TableError(f"env.reported names {unknown}, not numeric columns of {self.table}: {list(self.columns)}")
        if reward_scale not in REWARD_SCALES:
            raise TableError(f"env.reward_scale must be one of {list(REWARD_SCALES)}, got {reward_scale!r}")
        self.tasks: tuple[str, ...] = tuple(tasks)  # the reward's columns: one, or several (multi-task)
        self.reward: str = tasks[0] if len(tasks) == 1 else MULTI_TASK  # the metric the reward is made from
        self.reported = tuple(self.columns if reported is None else reported)
        self.reward_scale = reward_scale
        self._sorted = {c: np.sort([row[c] for row in self.rows.values()]) for c in tasks}
        values = [self._reward_value(row) for row in self.rows.values()] if len(tasks) == 1 else [0.0, 100.0]
        self.worst, self.best = min(values), max(values)
        self.space: SearchSpace | None = None

    # --- the contract ------------------------------------------------------------------------------------

    def fingerprint(self) -> dict[str, Any]:
        return {
            "evaluator": type(self).__name__,
            "table": str(self.table.resolve()),
            "key_column": self.key_column,
            "reward": self.reward if len(self.tasks) == 1 else list(self.tasks),
            "reward_scale": self.reward_scale,
        }

    def evaluate(self, arch: Architecture, seed: int, **round_options: Any) -> EvalResult:
        row = self.row(arch)
        metrics = {c: row[c] for c in self.reported}
        value = self._reward_value(row)
        if len(self.tasks) > 1:
            metrics[MULTI_TASK] = value
        return EvalResult(val_accuracy=self.scale(value), metrics=metrics)

    def _reward_value(self, row: dict[str, float]) -> float:
        """The raw number the reward is made from: the reward column's value, or the mean percentile."""
        if len(self.tasks) == 1:
            return row[self.tasks[0]]
        return float(np.mean([percentile_in_sorted(self._sorted[c], row[c]) for c in self.tasks]))

    @property
    def summary_columns(self) -> tuple[str, ...]:
        """The reward's column (raw) first, then the other reported ones."""
        return (self.reward, *(c for c in self.reported if c != self.reward))

    @property
    def score_label(self) -> str:
        if len(self.tasks) > 1:
            return f"mean percentile over {', '.join(self.tasks)} / 100"
        if self.reward_scale == "percent":
            return f"validation accuracy ({self.reward} / 100)"
        return f"{self.reward} ({'min-max scaled over the table' if self.reward_scale == 'minmax' else 'raw'})"

    def describe_data(self) -> str:
        """The table's file name without its suffix (``micro`` for TransNAS-Bench-101's cells)."""
        return self.table.stem

    def use_space(self, space: SearchSpace) -> None:
        """Check that every key of the table is an architecture of ``space`` (one-line error naming the first
        that is not)."""
        self.space = space
        check_keys(self.rows, space, self.table, self.key_column)

    # --- what tabular experiments read ---------------------------------------------------------------------

    def row(self, arch: Architecture | str) -> dict[str, float]:
        """Every numeric column of ``arch``'s row (an architecture or its key); a one-line error if absent."""
        key = arch if isinstance(arch, str) else table_key(arch)
        try:
            return self.rows[key]
        except KeyError:
            raise TableError(
                f"architecture {key} is not in {self.table} ({len(self.rows)} rows): the table lacks it, but "
                f"space '{self.space.name if self.space else '?'}' allows it; give a table with every "
                "architecture of the space, or a space (constraints) that rules out the missing ones"
            ) from None

    def scale(self, value: float) -> float:
        """``value`` of the reward column as the reward sees it (``reward_scale``; a mean percentile / 100)."""
        if self.reward_scale == "percent" or len(self.tasks) > 1:
            return value / 100.0
        if self.reward_scale == "minmax":
            return (value - self.worst) / (self.best - self.worst) if self.best > self.worst else 1.0
        return value


def numeric_columns(table: str | Path, key_column: str = "arch") -> tuple[str, ...]:
    """The numeric columns of ``table`` (those with a number in every row): the rewards it offers."""
    path = Path(str(table)).expanduser().resolve()
    if not path.is_file():
        raise TableError(f"table {path} does not exist: give a CSV with a key column {key_column!r}")
    stat = path.stat()
    return _load(path, key_column, stat.st_mtime_ns, stat.st_size)[0]


def check_keys(rows: dict[str, dict[str, float]], space: SearchSpace, table: Path, key_column: str) -> None:
    """Refuse, in one line, a key that is not an architecture of ``space``: a wrong number of choices, a choice
    outside its decision's, or a sequence its constraints rule out."""
    per_layer = list(space.layer_decisions)
    lengths = {depth * len(per_layer): depth for depth in space.depths}
    for key in rows:
        parts = key.split(SEPARATOR)
        depth = lengths.get(len(parts))
        if depth is None:
            raise TableError(
                f"{table}: key {key!r} in column {key_column!r} has {len(parts)} choices; space '{space.name}' "
                f"takes {' or '.join(map(str, sorted(lengths)))}, joined by '{SEPARATOR}'"
            )
        tokens = [space.depths.index(depth)] if space.variable_depth else []
        for i, part in enumerate(parts):
            decision = per_layer[i % len(per_layer)]
            if part not in decision.labels:
                raise TableError(
                    f"{table}: key {key!r}: choice {part!r} at place {i} is not one of decision "
                    f"'{decision.name}''s {list(decision.labels)} in space '{space.name}'"
                )
            tokens.append(decision.labels.index(part))
        try:
            space.decode(tokens)
        except ValueError as exc:
            raise TableError(f"{table}: key {key!r} is not an architecture of space '{space.name}': {exc}") from None


@functools.lru_cache(maxsize=8)  # many environments (a benchmark's seeds) share one parsed table
def _load(path: Path, key_column: str, *version: int) -> tuple[tuple[str, ...], dict[str, dict[str, float]]]:
    """The table's numeric columns (those with a number in every row) and its rows by key."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        if key_column not in fields:
            raise TableError(f"{path}: no key column {key_column!r} (env.key_column); its columns are {fields}")
        records = list(reader)
    if not records:
        raise TableError(f"{path}: the table has no rows")
    numeric = tuple(c for c in fields if c != key_column and all(_is_number(r.get(c)) for r in records))
    rows: dict[str, dict[str, float]] = {}
    for line, record in enumerate(records, start=2):
        key = (record[key_column] or "").strip()
        if key in rows:
            raise TableError(f"{path}, line {line}: duplicate key {key!r} in column {key_column!r}")
        rows[key] = {c: float(record[c]) for c in numeric}
    return numeric, rows


def _is_number(text: str | None) -> bool:
    try:
        float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True
