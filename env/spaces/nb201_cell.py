"""The NAS-Bench-201 cell (Dong & Yang 2020): its six edges and five operations, its string form, and the
benchmark's CIFAR-10 network built around it, whose parameters and FLOPs are each cell's costs.

Each cell's parameters and FLOPs are those of the benchmark's CIFAR-10 network (:class:`NB201Network`, which
this module builds), computed without building it from the numbers of each operation (:func:`cell_costs`).
They equal NAS-Bench-201's published figures: its ``params`` (in millions) are ours / 1e6, its ``flops``
(millions of multiply-adds of the convolutions and the classifier, which also counts the classifier's 10 bias
additions) as ``flops / 2 + 10``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from nasrl.env.spaces.networks import count_flops, count_parameters
from nasrl.env.threads import torch_threads

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to node, from node), in the string's order
NUM_CELLS = len(OPS) ** len(EDGES)  # 15625
INPUT_SHAPE = (3, 32, 32)  # CIFAR-10 images: the network the costs are counted for
SPACE = {"name": "nb201", "network": "nb201_cell", "depth": len(EDGES), "layer": [{"name": "op", "choices": list(OPS)}]}


def arch_string(ops: Sequence[str]) -> str:
    """NAS-Bench-201's string for the six edge operations, e.g. ``|nor_conv_3x3~0|+|...~0|...~1|+|...|``."""
    nodes = []
    for node in (1, 2, 3):
        nodes.append("|" + "|".join(f"{ops[i]}~{src}" for i, (dst, src) in enumerate(EDGES) if dst == node) + "|")
    return "+".join(nodes)


# --- the benchmark's network (Dong & Yang 2020, section 2.1; D-X-Y/AutoDL-Projects' TinyNetwork) -------------


def _relu_conv_bn(c_in: int, c_out: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ReLU(), nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(c_out)
    )


class _Zero(nn.Module):
    """The ``none`` operation: the edge carries nothing (zeros of the input's shape)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def _operation(name: str, channels: int) -> nn.Module:
    if name == "none":
        return _Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return _relu_conv_bn(channels, channels, 1, 1)
    if name == "nor_conv_3x3":
        return _relu_conv_bn(channels, channels, 3, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NAS-Bench-201 operation {name!r}; accepted are {list(OPS)}")


class NB201Cell(nn.Module):
    """The searched cell: node 0 is the input, node i the sum of op(node j) over its edges j < i; node 3 is
    the output. Every edge keeps the number of channels and the resolution."""

    def __init__(self, ops: Sequence[str], channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList(_operation(op, channels) for op in ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for node in (1, 2, 3):
            nodes.append(sum(self.edges[i](nodes[src]) for i, (dst, src) in enumerate(EDGES) if dst == node))
        return nodes[3]


class _ResidualReduction(nn.Module):
    """The fixed block between stages: a ResNet basic block of stride 2 (ReLU-conv-BN twice), its shortcut a
    2x2 average pool and a 1x1 convolution."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = _relu_conv_bn(c_in, c_out, 3, 2)
        self.conv_b = _relu_conv_bn(c_out, c_out, 3, 1)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    """NAS-Bench-201's network for a cell: a 3x3 convolution to ``channels`` with batch norm, three stages of
    ``cells_per_stage`` cells with ``channels``, 2x and 4x channels, a residual reduction block between
    stages, then batch norm, ReLU, global average pooling and a linear classifier. Returns the logits."""

    def __init__(self, ops: Sequence[str], channels: int = 16, cells_per_stage: int = 5, num_classes: int = 10) -> None:
        super().__init__()
        if len(ops) != len(EDGES):
            raise ValueError(f"a NAS-Bench-201 cell has {len(EDGES)} edge operations, got {len(ops)}: {list(ops)}")
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)]
        for stage in range(3):
            width = channels * 2**stage
            if stage > 0:
                layers.append(_ResidualReduction(width // 2, width))
            layers += [NB201Cell(ops, width) for _ in range(cells_per_stage)]
        layers += [nn.BatchNorm2d(width), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def measure_cell(ops: Sequence[str], counter: str = "hooks") -> dict[str, int]:
    """``params`` and ``flops`` (torch's convention) of the CIFAR-10 network of ``ops``, by building it (tens
    of milliseconds; :func:`cell_costs` gives the same numbers for free). ``counter``: ``flop_counter``
    counts with torch's ``FlopCounterMode`` (:func:`nasrl.env.spaces.networks.count_flops`), whose first use in a
    process costs 1-2 s (it imports torch._dynamo); ``hooks`` counts the same (2 per multiply-add of the convolutions
    and the classifier, which is all this network multiplies) in milliseconds, so that each process of a
    benchmark starts at once. A test checks that both agree."""
    with torch.random.fork_rng(devices=[]):  # building draws initial weights
        model = NB201Network(tuple(ops))
    example = torch.zeros(1, *INPUT_SHAPE)
    flops = count_flops(model, example) if counter == "flop_counter" else _multiply_add_flops(model, example)
    return {"params": count_parameters(model), "flops": flops}


def _multiply_add_flops(model: nn.Module, example: torch.Tensor) -> int:
    """2 x the multiply-adds of the convolutions and linear layers in one forward pass of ``example``."""
    total = 0

    def count(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kernel = module.kernel_size[0] * module.kernel_size[1]
            total += 2 * output.numel() * module.in_channels // module.groups * kernel
        elif isinstance(module, nn.Linear):
            total += 2 * output.numel() * module.in_features

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        model.eval()
        with torch_threads(1), torch.no_grad():  # more threads than free cores: many times slower
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return total


@functools.lru_cache(maxsize=1)
def _per_edge_costs() -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """The network of the all-``none`` cell, and what one edge of each other operation adds to it. Every edge
    of a stage has the same shape (channels in = out, stride 1), so an edge's cost does not depend on where it
    is, and a cell's cost is linear in how many edges hold each operation: five builds give them all."""
    base = measure_cell(["none"] * len(EDGES))
    extra = {}
    for op in OPS[1:]:
        full = measure_cell([op] * len(EDGES))
        extra[op] = {k: (full[k] - base[k]) // len(EDGES) for k in base}
    return base, extra


@functools.cache  # one entry per vector of operation counts (210 of them)
def _costs_of_counts(counts: tuple[int, ...]) -> dict[str, int]:
    base, extra = _per_edge_costs()
    return {k: base[k] + sum(n * extra[op][k] for op, n in zip(OPS[1:], counts[1:])) for k in base}


def cell_costs(ops: Sequence[str]) -> dict[str, int]:
    """``params`` and ``flops`` (torch's convention: 2 per multiply-add) of the CIFAR-10 network of the cell
    ``ops``, from the numbers of each operation (memoized), equal to :func:`measure_cell`'s."""
    return dict(_costs_of_counts(tuple(list(ops).count(op) for op in OPS)))
