"""The ``cnn1d`` and ``cnn2d`` families: Zoph & Le's convolutional networks, with skip connections
(:class:`~nasrl.env.spaces.networks.ConvChildNet`; shared weights: :class:`~nasrl.env.spaces.supernet.ConvSupernet`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

from torch import nn

from nasrl.env.spaces.family import NetworkFamily, Rule, one_of, positive_int
from nasrl.env.spaces.networks import ACTIVATIONS, POOLS, ConvChildNet
from nasrl.env.spaces.space import Architecture, SearchSpace
from nasrl.env.spaces.supernet import ConvSupernet


class _Conv(NetworkFamily):
    dims: ClassVar[int]
    skip_connections = True
    required = frozenset({"filters"})

    def build_supernet(
        self,
        space: SearchSpace,
        input_shape: Sequence[int],
        num_classes: int,
        hidden_size: int = 64,
        dropout: float = 0.0,
        share_kernels: bool = False,
    ) -> nn.Module:
        return ConvSupernet(space, input_shape, num_classes, self.dims, share_kernels)


class Conv1d(_Conv):
    """A 1-D CNN; inputs with more than one spatial dimension are read as one sequence."""

    dims = 1
    decisions: ClassVar[dict[str, Rule]] = {
        "filters": positive_int(),
        "kernel_size": positive_int(),
        "stride": positive_int(),
        "pool": one_of(POOLS),
        "activation": one_of(ACTIVATIONS),
    }

    def build(self, arch: Architecture, input_shape: Sequence[int], num_classes: int) -> nn.Module:
        shape = tuple(input_shape)
        if len(shape) > 2:  # flatten spatial dimensions into one sequence
            shape = (shape[0], math.prod(shape[1:]))
        return ConvChildNet(arch, shape, num_classes, dims=1)


class Conv2d(_Conv):
    """A 2-D CNN for images shaped (channels, height, width)."""

    dims = 2
    decisions: ClassVar[dict[str, Rule]] = {
        "filters": positive_int(),
        "filter_height": positive_int(),
        "filter_width": positive_int(),
        "stride": positive_int(),
        "pool": one_of(POOLS),
        "activation": one_of(ACTIVATIONS),
    }

    def build(self, arch: Architecture, input_shape: Sequence[int], num_classes: int) -> nn.Module:
        shape = tuple(input_shape)
        if len(shape) != 3:
            raise ValueError(
                f"network 'cnn2d' needs image inputs shaped (channels, height, width), got {shape}; "
                "use the cnn1d or mlp space for this data set"
            )
        return ConvChildNet(arch, shape, num_classes, dims=2)
