"""The ``nb201_cell`` family: NAS-Bench-201's cell, six edges each choosing an operation. Its spaces are scored by
looking the cell up in the benchmark's table (``env/nb201.py``), not by training; :meth:`NB201Cell.build` builds
the benchmark's CIFAR-10 network around the cell (:mod:`nasrl.env.spaces.nb201_cell`), whose parameters and FLOPs
are the cell's costs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from torch import nn

from nasrl.env.spaces.family import Edge, Graph, NetworkFamily, Rule, one_of
from nasrl.env.spaces.nb201_cell import EDGES, OPS, NB201Network
from nasrl.env.spaces.space import Architecture


class NB201Cell(NetworkFamily):
    """Layer i of an architecture is edge i of :data:`~nasrl.env.spaces.nb201_cell.EDGES`: its ``op``."""

    decisions: ClassVar[dict[str, Rule]] = {"op": one_of(OPS)}
    required = frozenset({"op"})

    def graph(self, arch: Architecture) -> Graph:
        """Nodes 0 (input) to 3 (output) in a row, an edge per operation (``none`` cuts it)."""
        ops = [layer["op"] for layer in arch.layers]
        edges = tuple(Edge(src, dst, op, cut=op == "none") for (dst, src), op in zip(EDGES, ops))
        return Graph(("0", "1", "2", "3"), edges, layout="row", captions=("input", "output"))

    def build(self, arch: Architecture, input_shape: Sequence[int], num_classes: int) -> nn.Module:
        """The benchmark's network of the cell, for CIFAR-sized RGB images."""
        shape = tuple(input_shape)
        if len(shape) != 3 or shape[0] != 3:
            raise ValueError(f"network 'nb201_cell' needs RGB images shaped (3, height, width), got {shape}")
        return NB201Network(tuple(layer["op"] for layer in arch.layers), num_classes=num_classes)
