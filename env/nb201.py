"""``nasrl/NASBench201-v0``: the NAS-Bench-201 cell (Dong & Yang, ICLR 2020), scored by table lookup.

Six decisions, one per edge of the cell in the benchmark's string order (node 1 <- 0, node 2 <- 0, 1,
node 3 <- 0, 1, 2), five operations each. The reward comes from a CSV with one row per cell (the format
of ``shared/data/nb201/cifar10.csv``: ``arch`` in NAS-Bench-201's string form plus accuracy columns in
percent), so a whole search costs milliseconds. The same token protocol and loop as ``ChildNet-v0``.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nasrl.env.childnet import ChildNetEnv
from nasrl.env.evaluation import EvalResult
from nasrl.env.space import NB201_OPS, Architecture

OPS = NB201_OPS
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to node, from node), in the string's order
NUM_CELLS = len(OPS) ** len(EDGES)  # 15625
SPACE = {"name": "nb201", "network": "nb201_cell", "depth": len(EDGES), "layer": [{"name": "op", "choices": list(OPS)}]}


class TableError(ValueError):
    """A lookup table that cannot be used; the message says what was expected where."""


def arch_string(ops: Sequence[str]) -> str:
    """NAS-Bench-201's string for the six edge operations, e.g. ``|nor_conv_3x3~0|+|...~0|...~1|+|...|``."""
    nodes = []
    for node in (1, 2, 3):
        nodes.append("|" + "|".join(f"{ops[i]}~{src}" for i, (dst, src) in enumerate(EDGES) if dst == node) + "|")
    return "+".join(nodes)


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


class NB201Table:
    """Evaluator that looks a cell up in a NAS-Bench-201 CSV table.

    ``val_accuracy`` is ``reward_column`` / 100; the ``reported_columns`` come back, in percent, as
    ``EvalResult.metrics`` (and in the last step's ``info``). ``expected_rows`` guards against a
    truncated table (null skips the check, for partial tables).
    """

    def __init__(
        self,
        table: str | Path,
        reward_column: str = "valid_acc_12ep",
        reported_columns: Sequence[str] = ("valid_acc_200ep", "test_acc_200ep"),
        expected_rows: int | None = NUM_CELLS,
    ) -> None:
        self.table = Path(str(table)).expanduser()
        self.reward_column = reward_column
        self.reported_columns = tuple(reported_columns)
        self.rows = _load_table(self.table.resolve(), reward_column, self.reported_columns, expected_rows)

    def fingerprint(self) -> dict[str, Any]:
        return {"evaluator": type(self).__name__, "table": str(self.table.resolve()), "reward": self.reward_column}

    def evaluate(self, arch: Architecture, seed: int) -> EvalResult:
        key = tuple(layer["op"] for layer in arch.layers)
        if key not in self.rows:
            raise KeyError(f"architecture {arch_string(key)} is not in {self.table}")
        row = self.rows[key]
        return EvalResult(
            val_accuracy=row[self.reward_column] / 100.0,
            metrics={c: row[c] for c in self.reported_columns},
        )


@functools.lru_cache(maxsize=4)  # many environments (a benchmark's seeds) share one parsed table
def _load_table(
    path: Path, reward_column: str, reported: tuple[str, ...], expected_rows: int | None
) -> dict[tuple[str, ...], dict[str, float]]:
    if not path.is_file():
        raise TableError(
            f"NAS-Bench-201 table {path} does not exist: set env.table to a CSV with the columns "
            f"'arch', {reward_column!r}, {', '.join(map(repr, reported))} (e.g. ../shared/data/nb201/cifar10.csv)"
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


class NASBench201Env(ChildNetEnv):
    """``ChildNetEnv`` over the NAS-Bench-201 cell, with the table lookup as its evaluator."""

    def __init__(
        self,
        table: str | Path | NB201Table,
        reward_column: str = "valid_acc_12ep",
        reported_columns: Sequence[str] = ("valid_acc_200ep", "test_acc_200ep"),
        expected_rows: int | None = NUM_CELLS,
        reward_transform: str | Callable[[float], float] = "identity",
        cache: Any = None,
    ) -> None:
        if not isinstance(table, NB201Table):  # an NB201Table instance is shared as it is (benchmarks)
            table = NB201Table(table, reward_column, reported_columns, expected_rows)
        super().__init__(space=SPACE, evaluator=table, reward_transform=reward_transform, cache=cache)

    def describe(self, arch: Architecture) -> str:
        return arch_string([layer["op"] for layer in arch.layers])
