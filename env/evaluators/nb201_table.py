"""The NAS-Bench-201 lookup table as an evaluator: a CSV with one row per cell (the format that ``nasrl-data nb201``
writes to ``$NASRL_DATA/nb201/cifar10.csv``: ``arch`` in NAS-Bench-201's string form plus accuracy columns in
percent), so a whole search costs milliseconds.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from nasrl.env.evaluators.base import EvalResult, Evaluator
from nasrl.env.evaluators.downloads import NB201_TABLE, default_path
from nasrl.env.spaces.nb201_cell import INPUT_SHAPE, NUM_CELLS, OPS, NB201Network, arch_string, cell_costs
from nasrl.env.spaces.space import Architecture


class TableError(ValueError):
    """A lookup table that cannot be used; the message says what was expected where."""


def parse_arch_string(text: str) -> tuple[str, ...]:
    """The six edge operations of a NAS-Bench-201 string; refuses anything else."""
    nodes = text.strip().split("+")
    ops: list[str] = []
    try:
        if len(nodes) != 3:
            raise ValueError
        for node, part in enumerate(nodes, start=1):
            edges = part.strip("|").split("|")
            if len(edges) != node:
                raise ValueError
            for src, edge in enumerate(edges):
                op, source = edge.split("~")
                if op not in OPS or int(source) != src:
                    raise ValueError
                ops.append(op)
    except ValueError:
        raise TableError(
            f"unknown architecture string {text!r}: expected NAS-Bench-201's form "
            f"'|op~0|+|op~0|op~1|+|op~0|op~1|op~2|' with op in {list(OPS)}"
        ) from None
    return tuple(ops)


class NB201Table(Evaluator):
    """Evaluator that looks a cell up in a NAS-Bench-201 CSV table.

    ``table`` null reads the data root's (``$NASRL_DATA/nb201/cifar10.csv``, which ``nasrl-data nb201`` builds).
    ``val_accuracy`` is ``reward_column`` / 100; the ``reported_columns`` come back, in percent, as
    ``EvalResult.metrics`` (and in the last step's ``info``). ``expected_rows`` guards against a
    truncated table (null skips the check, for partial tables). ``EvalResult.params`` is the cell's
    network's parameter count (:func:`cell_costs`); :meth:`build` builds that network, for latency.
    """

    input_shape = INPUT_SHAPE  # CIFAR-10 images: what the costs are counted for
    num_classes = 10

    def __init__(
        self,
        table: str | Path | None = None,
        reward_column: str = "valid_acc_12ep",
        reported_columns: Sequence[str] = ("valid_acc_200ep", "test_acc_200ep"),
        expected_rows: int | None = NUM_CELLS,
    ) -> None:
        self.table = default_path(NB201_TABLE) if table is None else Path(str(table)).expanduser()
        self.reward_column = reward_column
        self.reported_columns = tuple(reported_columns)
        self.rows = _load_table(self.table.resolve(), reward_column, self.reported_columns, expected_rows)

    def fingerprint(self) -> dict[str, Any]:
        return {"evaluator": type(self).__name__, "table": str(self.table.resolve()), "reward": self.reward_column}

    @property
    def summary_columns(self) -> tuple[str, ...]:
        return self.reported_columns

    def describe_data(self) -> str:
        """The table's file name without its suffix (``cifar10`` for NAS-Bench-201's)."""
        return self.table.stem

    def evaluate(self, arch: Architecture, seed: int, **round_options: Any) -> EvalResult:
        key = tuple(layer["op"] for layer in arch.layers)
        if key not in self.rows:
            raise KeyError(f"architecture {arch_string(key)} is not in {self.table}")
        row = self.rows[key]
        return EvalResult(
            val_accuracy=row[self.reward_column] / 100.0,
            params=cell_costs(key)["params"],
            metrics={c: row[c] for c in self.reported_columns},
        )

    def column_values(self, column: str) -> dict[tuple[str, ...], str]:
        """Each cell's value of ``column`` of the table, as text (``index``: the key that NAS-Bench-201's other
        tables, such as its devices' latencies, are joined on)."""
        return _load_column(self.table.resolve(), column)

    def build(self, arch: Architecture) -> nn.Module:
        """The benchmark's CIFAR-10 network with this cell (:class:`NB201Network`)."""
        return NB201Network(tuple(layer["op"] for layer in arch.layers), num_classes=self.num_classes)

    def count_costs(self, arch: Architecture) -> dict[str, int]:
        """``params`` and ``flops`` (torch's convention, 2 per multiply-add) of the cell's network, free."""
        return cell_costs(tuple(layer["op"] for layer in arch.layers))


@functools.lru_cache(maxsize=4)
def _load_column(path: Path, column: str) -> dict[tuple[str, ...], str]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if column not in (reader.fieldnames or []):
            raise TableError(
                f"NAS-Bench-201 table {path} has no column {column!r} to join the cost table on (env.costs_key); "
                f"it has {reader.fieldnames}"
            )
        return {parse_arch_string(record["arch"]): (record[column] or "").strip() for record in reader}


@functools.lru_cache(maxsize=4)  # many environments (a benchmark's seeds) share one parsed table
def _load_table(
    path: Path, reward_column: str, reported: tuple[str, ...], expected_rows: int | None
) -> dict[tuple[str, ...], dict[str, float]]:
    if not path.is_file():
        raise TableError(
            f"NAS-Bench-201 table {path} does not exist: `nasrl-data nb201` builds the tables in "
            f"{default_path(NB201_TABLE).parent} (read when env.table is null), or set env.table to a CSV with "
            f"the columns 'arch', {reward_column!r}, {', '.join(map(repr, reported))}"
        )
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        needed = ["arch", reward_column, *reported]
        missing = [c for c in needed if c not in (reader.fieldnames or [])]
        if missing:
            raise TableError(f"{path}: missing columns {missing}; it has {reader.fieldnames}, needed are {needed}")
        rows: dict[tuple[str, ...], dict[str, float]] = {}
        for line, record in enumerate(reader, start=2):
            ops = parse_arch_string(record["arch"])
            if ops in rows:
                raise TableError(f"{path}, line {line}: duplicate architecture {record['arch']}")
            try:
                rows[ops] = {c: float(record[c]) for c in needed[1:]}
            except (TypeError, ValueError):
                raise TableError(f"{path}, line {line}: non-numeric value in columns {needed[1:]}") from None
    if expected_rows is not None and len(rows) != expected_rows:
        raise TableError(
            f"{path}: {len(rows)} rows, expected {expected_rows} (every NAS-Bench-201 cell once); "
            "a truncated file? Set expected_rows=null to accept a partial table"
        )
    return rows
