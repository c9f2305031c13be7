"""The ``mlp`` family: fully connected layers stacked on the flattened input
(:class:`~nasrl.env.spaces.networks.MLPChildNet`; shared weights: :class:`~nasrl.env.spaces.supernet.MLPSupernet`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from torch import nn

from nasrl.env.spaces.family import NetworkFamily, Rule, one_of, positive_int
from nasrl.env.spaces.networks import ACTIVATIONS, MLPChildNet
from nasrl.env.spaces.space import Architecture, SearchSpace
from nasrl.env.spaces.supernet import MLPSupernet


class MLP(NetworkFamily):
    """Each layer reads the one before it; the classifier reads the last."""

    decisions: ClassVar[dict[str, Rule]] = {"units": positive_int(), "activation": one_of(ACTIVATIONS)}
    required = frozenset({"units"})

    def reads(self, arch: Architecture, layer: int) -> list[int]:
        return list(arch.inputs[layer]) or [layer - 1]  # layer 0 reads -1, the input

    def outputs(self, arch: Architecture) -> list[int]:
        return [len(arch.layers) - 1]

    def build(self, arch: Architecture, input_shape: Sequence[int], num_classes: int) -> nn.Module:
        return MLPChildNet(arch, tuple(input_shape), num_classes)

    def build_supernet(
        self,
        space: SearchSpace,
        input_shape: Sequence[int],
        num_classes: int,
        hidden_size: int = 64,
        dropout: float = 0.0,
        share_kernels: bool = False,
    ) -> nn.Module:
        return MLPSupernet(space, input_shape, num_classes)
