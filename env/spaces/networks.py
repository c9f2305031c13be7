"""Child networks of the ``cnn1d``, ``cnn2d`` and ``mlp`` families (``env/spaces/families/``), and
:func:`build_network`, which builds any family's from a decoded :class:`~nasrl.env.spaces.space.Architecture`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nasrl.env.spaces.family import family_of
from nasrl.env.spaces.space import Architecture
from nasrl.env.threads import torch_threads

ACTIVATION_MODULES: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "silu": nn.SiLU,
    "identity": nn.Identity,
}
ACTIVATIONS = tuple(ACTIVATION_MODULES)  # what a space's ``activation`` decision may choose
POOLS = ("none", "max", "avg")


class ConvChildNet(nn.Module):
    """A 1-D or 2-D CNN with Zoph & Le connections.

    Layer i reads the channel-wise concatenation of the earlier layers that feed it, zero-padded at the
    end to the largest spatial size among them (Zoph & Le); a layer fed by nothing reads the network
    input. Every layer that feeds no later layer (the last one included) is average-pooled to
    ``head_pool`` per spatial dimension and concatenated into a linear classifier.
    """

    def __init__(self, arch: Architecture, input_shape: Sequence[int], num_classes: int, dims: int) -> None:
        super().__init__()
        if len(input_shape) < 2:
            raise ValueError(f"network '{arch.network}' needs inputs shaped (channels, ...), got {tuple(input_shape)}")
        self.dims = dims
        self.inputs = [tuple(i) for i in arch.inputs]
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        norm = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
        in_channels = input_shape[0]
        channels: list[int] = []
        self.layers = nn.ModuleList()
        for i, spec in enumerate(arch.layers):
            c_in = sum(channels[j] for j in self.inputs[i]) if self.inputs[i] else in_channels
            kernel: Any  # an int (1-D) or a (height, width) pair (2-D), as Conv1d / Conv2d take them
            if dims == 1:
                kernel = spec.get("kernel_size", 3)
                padding: Any = kernel // 2
            else:
                kernel = (spec.get("filter_height", 3), spec.get("filter_width", 3))
                padding = (kernel[0] // 2, kernel[1] // 2)
            block: list[nn.Module] = [
                conv(c_in, spec["filters"], kernel, stride=spec.get("stride", 1), padding=padding, bias=False),
                norm(spec["filters"]),
                ACTIVATION_MODULES[spec.get("activation", "relu")](),
            ]
            pool = spec.get("pool", "none")
            if pool != "none":
                pool_cls: dict[int, dict[str, Any]] = {
                    1: {"max": nn.MaxPool1d, "avg": nn.AvgPool1d},
                    2: {"max": nn.MaxPool2d, "avg": nn.AvgPool2d},
                }
                block.append(pool_cls[dims][pool](2, ceil_mode=True))
            self.layers.append(nn.Sequential(*block))
            channels.append(spec["filters"])
        fed = {j for inputs in self.inputs for j in inputs}
        self.leaves = [i for i in range(len(arch.layers)) if i not in fed]
        self.head_pool = arch.head_pool
        features = sum(channels[i] for i in self.leaves) * arch.head_pool**dims
        self.classifier = nn.Linear(features, num_classes)

    def _concat(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        if len(tensors) == 1:
            return tensors[0]
        sizes = [max(t.shape[2 + d] for t in tensors) for d in range(self.dims)]
        padded = []
        for t in tensors:
            pad: list[int] = []
            for d in reversed(range(self.dims)):  # F.pad lists the last dimension first
                pad.extend([0, sizes[d] - t.shape[2 + d]])
            padded.append(F.pad(t, pad) if any(pad) else t)
        return torch.cat(padded, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dims == 1 and x.dim() > 3:
            x = x.flatten(2)  # e.g. (N, 1, 8, 8) images read as (N, 1, 64) sequences
        outputs: list[torch.Tensor] = []
        for layer, inputs in zip(self.layers, self.inputs):
            h = self._concat([outputs[j] for j in inputs]) if inputs else x
            outputs.append(layer(h))
        pool = F.adaptive_avg_pool1d if self.dims == 1 else F.adaptive_avg_pool2d
        pooled = [pool(outputs[i], self.head_pool).flatten(1) for i in self.leaves]
        return self.classifier(torch.cat(pooled, dim=1))


class MLPChildNet(nn.Module):
    """A stack of fully connected layers on the flattened input."""

    def __init__(self, arch: Architecture, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        width = 1
        for s in input_shape:
            width *= s
        blocks: list[nn.Module] = [nn.Flatten()]
        for spec in arch.layers:
            blocks += [nn.Linear(width, spec["units"]), ACTIVATION_MODULES[spec.get("activation", "relu")]()]
            width = spec["units"]
        blocks.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_network(arch: Architecture, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """The child network of ``arch`` for inputs of ``input_shape`` (without the batch dimension), as its family
    (``arch.network``, see :mod:`nasrl.env.spaces.family`) builds it."""
    return family_of(arch.network).build(arch, tuple(input_shape), num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: torch.nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass of ``example`` (a batch of one) through ``model`` in eval mode, torch's
    convention: 2 per multiply-add. Leaves the model in eval mode. Runs on one torch thread: the count does
    not depend on threads, and more threads than free cores make the pass many times slower."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch_threads(1), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(example)
    return int(counter.get_total_flops())
