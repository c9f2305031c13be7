"""Measured costs from a table: a CSV with one row per architecture, a key column and one column per cost (the
latency of every NAS-Bench-201 cell on 27 devices, ``nb201/latency_ms.csv``, keyed by ``index``), joined to an
environment's architectures through a key function.

:class:`CostTable` is the one place where such a join happens. The environment that uses it says how an
architecture maps to the table's key (NAS-Bench-201: the ``index`` of the cell's row in its accuracy table; a
tabular environment: its own key column); the objective (``env.objective.metric``) then accepts any column of the
cost table as it accepts ``params``, ``flops`` and ``latency_ms``. Every error is one line naming the file, the
value and what is accepted.
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Callable, Iterable
from pathlib import Path

from nasrl.env.spaces.space import Architecture


class CostTableError(ValueError):
    """A cost table that cannot be used, or an architecture it has no row for; the message says which."""


class CostTable:
    """The costs of each architecture, read from ``path`` (a CSV).

    Args:
        path: the CSV: a header, ``key_column``, and every other column a number (a cost: milliseconds, joules,
            bytes) on every row.
        key_column: the column that identifies an architecture; its values are compared as text, stripped.
        key: an architecture's value of ``key_column`` (NAS-Bench-201: its row's ``index`` in the accuracy table);
            None where the architecture has none, which :meth:`costs` refuses like a missing row.
    """

    def __init__(self, path: str | Path, key_column: str, key: Callable[[Architecture], str | None]) -> None:
        self.path = Path(str(path)).expanduser()
        self.key_column = key_column
        self.key = key
        self.columns, self.rows = _load(self.path.resolve(), key_column)

    def require_keys(self, keys: Iterable[str], where: str) -> None:
        """Refuse the join when some of ``keys`` (every architecture of ``where``) have no row: found when the
        environment is built, not in the middle of a search."""
        missing = [k for k in keys if k.strip() not in self.rows]
        if missing:
            raise CostTableError(
                f"{len(missing)} architectures of {where} have no row in the cost table {self.path} "
                f"(first: {self.key_column}={missing[0]!r}); it needs one row per architecture"
            )

    def costs(self, arch: Architecture, columns: Iterable[str] | None = None) -> dict[str, float]:
        """``arch``'s costs: the ``columns`` named (default: all), by column name."""
        key = self.key(arch)
        row = self.rows.get(key.strip()) if key is not None else None
        if row is None:
            which = f"{self.key_column}={key!r}" if key is not None else f"no {self.key_column} to look up"
            raise CostTableError(f"architecture {arch.describe()} ({which}) has no row in the cost table {self.path}")
        return {c: row[c] for c in (self.columns if columns is None else columns)}


@functools.lru_cache(maxsize=4)  # a benchmark's searches in one process share one parsed table
def _load(path: Path, key_column: str) -> tuple[tuple[str, ...], dict[str, dict[str, float]]]:
    if not path.is_file():
        raise CostTableError(f"cost table {path} (env.costs) does not exist: give the path of a CSV with the key "
                             f"column {key_column!r} and one column per cost")  # fmt: skip
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        if key_column not in header:
            raise CostTableError(
                f"cost table {path} has no key column {key_column!r} (env.costs_key); its columns are {header}"
            )
        columns = tuple(c for c in header if c != key_column)
        if not columns:
            raise CostTableError(f"cost table {path} has no column besides its key {key_column!r}: no costs")
        rows: dict[str, dict[str, float]] = {}
        for line, record in enumerate(reader, start=2):
            key = (record[key_column] or "").strip()
            if key in rows:
                raise CostTableError(f"cost table {path}, line {line}: duplicate key {key_column}={key!r}")
            row = {}
            for column in columns:
                text = record.get(column)
                try:
                    value = float(text)  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    value = math.nan
                if not math.isfinite(value):
                    raise CostTableError(
                        f"cost table {path}, line {line} ({key_column}={key!r}): {column} is {text!r}; "
                        "every cost must be a finite number"
                    )
                row[column] = value
            rows[key] = row
    return columns, rows
