"""``nasrl/Table-v0``: any tabular benchmark, a search space YAML plus a CSV (``env=table``).

The space (``network: table``, :mod:`nasrl.env.spaces.families.table`) lists the decisions; the CSV holds one
row per architecture, keyed by its choices in the space's decision order joined by ``-``, and its numeric
columns (:class:`~nasrl.env.evaluators.table.TableEvaluator`). The same token protocol and loop as
``ChildNet-v0``; an episode's architecture reads as its key (``info["architecture"]``, ``history.csv``).
Shipped spaces: ``transnas101_micro`` and ``transnas101_macro`` (TransNAS-Bench-101, seven tasks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nasrl.env.childnet import ChildNetEnv
from nasrl.env.evaluators.table import TableEvaluator
from nasrl.env.rewards import CostObjective
from nasrl.env.spaces.space import SearchSpace, load_space


class TableEnv(ChildNetEnv):
    """``ChildNetEnv`` over a space of the ``table`` family, with a :class:`TableEvaluator` as its evaluator. An
    episode whose architecture the table lacks stops the search with a one-line error (``TableError``), not a
    failed child: a table is meant to hold the whole space, so a gap is a wrong table or a wrong space.

    Args:
        space: the search space (a shipped name such as ``transnas101_micro``, or a YAML path) whose
            ``network`` is ``table``; required.
        table: the CSV's path (relative to where you run); required.
        reward: the column the search maximises (higher is better), or a list of columns: a multi-task reward,
            the mean of the architecture's percentiles in them / 100 (``TableEvaluator``); required.
        key_column: the column holding each architecture's choices in the space's decision order, joined by ``-``.
        reported: the columns reported (raw, in ``info`` and ``history.csv``); null: every numeric column.
        reward_scale: how the reward column becomes the reward: ``minmax`` (the table's worst 0, its best 1),
            ``percent`` (value / 100, for an accuracy in percent) or ``raw``.
    """

    def __init__(
        self,
        space: str | Path | dict[str, Any] | SearchSpace | None = None,
        table: str | Path | TableEvaluator | None = None,
        reward: str | Sequence[str] | None = None,
        key_column: str = "arch",
        reported: Sequence[str] | None = None,
        reward_scale: str = "minmax",
        reward_transform: str | Callable[[float], float] = "identity",
        cache: Any = None,
        objective: CostObjective | None = None,
    ) -> None:
        if space is None:
            raise ValueError("env.space is not set: name a space whose network is 'table' (e.g. transnas101_micro)")
        loaded = load_space(space)
        if loaded.network != "table":
            raise ValueError(
                f"env.space={loaded.name!r} has network {loaded.network!r}; env=table needs a space with network: table"
            )
        # a TableEvaluator instance is shared as it is (a benchmark's seeds)
        evaluator = table if isinstance(table, TableEvaluator) else TableEvaluator(
            table, reward, key_column, reported, reward_scale
        )  # fmt: skip
        super().__init__(
            space=loaded, evaluator=evaluator, reward_transform=reward_transform, cache=cache, objective=objective
        )
        self.table: TableEvaluator = evaluator

    def _finish(self) -> tuple[dict, float, bool, bool, dict]:
        self.table.row(self.space.decode(self._tokens))  # a key the table lacks: one line, before anything else
        return super()._finish()
