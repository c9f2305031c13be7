"""The ``table`` family: an architecture that is a row of a lookup table, not a network to build.

A space of this family may name any decisions, with any plain values (numbers or words without ``-``); an
architecture reads as its table key, every layer's values in the space's decision order joined by ``-``
(``0-1-2-3-1-2``, or ``1-1-2-3`` for a four-module macro skeleton). :class:`~nasrl.env.table.TableEnv` looks
that key up in a CSV (``env=table``). It builds no network, so costs come from the table's columns only.
"""

from __future__ import annotations

from typing import Any, ClassVar

from nasrl.env.spaces.family import Edge, Graph, NetworkFamily, Rule
from nasrl.env.spaces.space import Architecture

SEPARATOR = "-"


def _plain(value: Any) -> bool:
    # the key is the values' text joined by SEPARATOR: a value containing it (or a negative number) would not split
    text = str(value)
    return (
        isinstance(value, (int, float, str))
        and not isinstance(value, bool)
        and text == text.strip()
        and bool(text)
        and SEPARATOR not in text
        and "," not in text
    )


def table_key(arch: Architecture) -> str:
    """The table key of ``arch``: each layer's decision values, in order, joined by ``-``."""
    return SEPARATOR.join(str(value) for layer in arch.layers for value in layer.values())


class TableRow(NetworkFamily):
    """Any decisions, any plain values: the layers are the key's parts, in order."""

    any_decision: ClassVar[Rule | None] = Rule(
        f"a number or word without '{SEPARATOR}', ',' or surrounding spaces (the key joins values with '{SEPARATOR}')",
        _plain,
    )
    ends = ("key", "row")

    def describe(self, arch: Architecture) -> str:
        """The table key, e.g. ``0-1-2-3-1-2``."""
        return table_key(arch)

    def graph(self, arch: Architecture) -> Graph:
        """The key's parts in a row, from the first decision to the last."""
        labels = [" ".join(str(v) for v in layer.values()) for layer in arch.layers]
        edges = tuple(Edge(i, i + 1) for i in range(len(labels) - 1))
        return Graph(tuple(labels), edges, layout="row", captions=("first", "last"))
