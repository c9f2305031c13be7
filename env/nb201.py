"""``nasrl/NASBench201-v0``: the NAS-Bench-201 cell (Dong & Yang, ICLR 2020), scored by table lookup.

Six decisions, one per edge of the cell in the benchmark's string order (node 1 <- 0, node 2 <- 0, 1,
node 3 <- 0, 1, 2), five operations each. The reward comes from a CSV with one row per cell (the format
that ``nasrl-data nb201`` writes: ``arch`` in NAS-Bench-201's string form plus accuracy columns in percent; by
default ``$NASRL_DATA/nb201/cifar10.csv``), so a whole search costs milliseconds. The same token protocol and
loop as ``ChildNet-v0``.

Each cell's parameters and FLOPs are those of the benchmark's CIFAR-10 network (:class:`NB201Network`, which
:meth:`NB201Table.build` builds): ``info["params"]`` and ``info["flops"]``, free because they are linear in
the numbers of each operation (:func:`cell_costs`). They equal NAS-Bench-201's published figures: its
``params`` (in millions) exactly, its ``flops`` (millions of multiply-adds of the convolutions and the
classifier, which also counts the classifier's 10 bias additions) as ``flops / 2 + 10``.

Costs measured elsewhere come from a cost table (``costs``: a CSV joined on ``costs_key``, by default ``index``, the
column both NAS-Bench-201 tables share): with the shared data's ``nb201/latency_ms.csv``, ``objective.metric=fpga``
weighs or limits each cell's latency on the FPGA that HW-NAS-Bench measured
(:class:`~nasrl.env.evaluators.cost_table.CostTable`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nasrl.env.childnet import ChildNetEnv
from nasrl.env.evaluators.cost_table import CostTable
from nasrl.env.evaluators.nb201_table import NB201Table
from nasrl.env.rewards import CostObjective
from nasrl.env.spaces.nb201_cell import NUM_CELLS, SPACE, arch_string
from nasrl.env.spaces.space import Architecture


class NASBench201Env(ChildNetEnv):
    """``ChildNetEnv`` over the NAS-Bench-201 cell, with the table lookup as its evaluator; ``objective`` weighs
    the accuracy against the cell's parameters, FLOPs or latency (:class:`~nasrl.env.rewards.CostObjective`).
    ``table`` null reads the data root's table (:class:`NB201Table`).

    Args:
        reward_column: the table's column that scores a cell: its value / 100 is the cell's validation
            accuracy, which the reward is made from (``valid_acc_12ep``: validation accuracy after 12 epochs).
        reported_columns: columns reported beside it, in percent: in ``EvalResult.metrics`` and the last step's
            ``info`` (``history.csv``), and in ``nasrl-benchmark``'s summary, whose hypervolume uses the first.
        expected_rows: how many rows the table must have (every NAS-Bench-201 cell once), so that a truncated
            file is refused; null accepts any number (a partial table).
        costs: a CSV of measured costs, one row per cell, relative to where you run (``latency_ms.csv``: 27 devices'
            latencies in ms); ``objective.metric`` may then name any of its columns (``fpga``), whose value is
            recorded for each child under that name. Every cell of the accuracy table must have a row. null: none.
        costs_key: the column that the cost table and the accuracy table both have, on which they are joined.
    """

    def __init__(
        self,
        table: str | Path | NB201Table | None = None,
        reward_column: str = "valid_acc_12ep",
        reported_columns: Sequence[str] = ("valid_acc_200ep", "test_acc_200ep"),
        expected_rows: int | None = NUM_CELLS,
        reward_transform: str | Callable[[float], float] = "identity",
        cache: Any = None,
        objective: CostObjective | None = None,
        costs: str | Path | None = None,
        costs_key: str = "index",
    ) -> None:
        if not isinstance(table, NB201Table):  # an NB201Table instance is shared as it is (benchmarks)
            table = NB201Table(table, reward_column, reported_columns, expected_rows)
        cost_table = None
        if costs is not None:
            keys = table.column_values(costs_key)
            cost_table = CostTable(costs, costs_key, key=lambda arch: keys.get(tuple(x["op"] for x in arch.layers)))
            cost_table.require_keys(keys.values(), f"the NAS-Bench-201 table {table.table}")
        super().__init__(
            space=SPACE,
            evaluator=table,
            reward_transform=reward_transform,
            cache=cache,
            objective=objective,
            cost_table=cost_table,
        )

    def describe(self, arch: Architecture) -> str:
        return arch_string([layer["op"] for layer in arch.layers])
