"""Shared weights for a whole search space (ENAS, Pham et al. 2018): every child is a path through one module.

A supernet holds one weight tensor per (layer, choice) of its space, skip connections included, and
``forward(x, arch)`` runs only the parts ``arch`` chose, so only those receive gradients. The children
compute what the stand-alone networks of ``env/spaces/networks.py`` compute, with two documented departures:

- **Widths share leading channels.** A layer's ``filters`` (``units``) choice takes the first f output
  channels of the tensor of its (layer, kernel, source), as once-for-all networks and slimmable networks do,
  instead of a tensor per width: six widths would split each tensor's training six ways. An input of f_j
  channels reads the first f_j input channels.
- **Batch normalisation uses the statistics of the batch it normalises** (no running averages): a child's
  statistics are its own, computed on the batch it is scored on (NATS-Bench found that shared running
  statistics make weight-sharing rankings much worse on NAS-Bench-201).

A layer reading several earlier layers (Zoph & Le's concatenation, zero-padded at the end to the largest
size) is computed as a sum of one convolution per source, which is the same linear map: the weight of
(layer i, kernel k, source j) is the slice of the concatenated convolution that reads layer j.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nasrl.env.spaces.family import family_of
from nasrl.env.spaces.networks import ACTIVATION_MODULES
from nasrl.env.spaces.rnn import unroll_cell
from nasrl.env.spaces.space import Architecture, SearchSpace

_ACTIVATIONS = {name: make() for name, make in ACTIVATION_MODULES.items()}  # parameter-free, shared by all


def _choices(space: SearchSpace, name: str, default: Any) -> tuple[Any, ...]:
    for decision in space.layer_decisions:
        if decision.name == name:
            return tuple(decision.choices)
    return (default,)


def _uniform(shape: Sequence[int], fan_in: int) -> nn.Parameter:
    """torch's default initialisation of a conv or linear weight with ``fan_in`` inputs."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))


class ConvSupernet(nn.Module):
    """Every child of a ``cnn1d`` or ``cnn2d`` space (:class:`~nasrl.env.spaces.networks.ConvChildNet`) in one module.

    With ``share_kernels``, the kernel sizes of a (layer, source) share the tensor of the largest one, each
    reading its central taps (once-for-all's elastic kernel, without its transform matrices), and a layer's
    batch norm is shared too: every tensor then trains with all the kernels instead of a quarter of them.

    Parameters, by name: ``conv[l{i}_k{kernel}_s{source}]`` (source 0: the network input, j + 1: layer j),
    ``bn_weight`` / ``bn_bias[l{i}_k{kernel}]`` and ``head[s{j}]`` (the classifier's slice that reads layer j)
    plus one ``head_bias``.
    """

    def __init__(
        self, space: SearchSpace, input_shape: Sequence[int], num_classes: int, dims: int, share_kernels: bool = False
    ) -> None:
        super().__init__()
        self.dims = dims
        shape = tuple(input_shape)
        if self.dims == 1 and len(shape) > 2:  # images read as sequences, as build_network does
            shape = (shape[0], math.prod(shape[1:]))
        if len(shape) != self.dims + 1:
            raise ValueError(f"space '{space.name}' ({space.network}) cannot read inputs shaped {tuple(input_shape)}")
        self.space_name = space.name
        self.width = max(_choices(space, "filters", 0))
        self.head_pool = space.head_pool
        kernels: list[tuple[int, ...]]
        if self.dims == 1:
            kernels = [(k,) for k in _choices(space, "kernel_size", 3)]
        else:
            kernels = [(h, w) for h in _choices(space, "filter_height", 3) for w in _choices(space, "filter_width", 3)]
        self.share_kernels = share_kernels
        self.largest = tuple(max(k[d] for k in kernels) for d in range(self.dims))
        self.conv = nn.ParameterDict()
        self.bn_weight = nn.ParameterDict()
        self.bn_bias = nn.ParameterDict()
        for i in range(space.max_depth):
            for kernel in [self.largest] if share_kernels else kernels:
                for source in range(i + 1):
                    c_in = shape[0] if source == 0 else self.width
                    self.conv[self._conv_key(i, kernel, source)] = _uniform(
                        (self.width, c_in, *kernel), c_in * math.prod(kernel)
                    )
                self.bn_weight[self._bn_key(i, kernel)] = nn.Parameter(torch.ones(self.width))
                self.bn_bias[self._bn_key(i, kernel)] = nn.Parameter(torch.zeros(self.width))
        features = self.width * self.head_pool**self.dims
        self.head = nn.ParameterDict(
            {f"s{j}": _uniform((num_classes, features), features) for j in range(space.max_depth)}
        )
        self.head_bias = nn.Parameter(torch.zeros(num_classes))

    @staticmethod
    def _conv_key(layer: int, kernel: tuple[int, ...], source: int) -> str:
        return f"l{layer}_k{'x'.join(map(str, kernel))}_s{source}"

    @staticmethod
    def _bn_key(layer: int, kernel: tuple[int, ...]) -> str:
        return f"l{layer}_k{'x'.join(map(str, kernel))}"

    def _kernel(self, spec: dict[str, Any]) -> tuple[int, ...]:
        """The kernel whose tensors a layer reads: its own, or the largest with ``share_kernels``."""
        if self.share_kernels:
            return self.largest
        return self._own_kernel(spec)

    def _own_kernel(self, spec: dict[str, Any]) -> tuple[int, ...]:
        if self.dims == 1:
            return (spec.get("kernel_size", 3),)
        return (spec.get("filter_height", 3), spec.get("filter_width", 3))

    def _weight(self, tensor: torch.Tensor, kernel: tuple[int, ...], filters: int, channels: int) -> torch.Tensor:
        """The slice of ``tensor`` a layer of ``filters`` filters and ``kernel`` reads from ``channels`` inputs:
        leading filters and channels, and (``share_kernels``) the central taps of the largest kernel."""
        weight = tensor[:filters, :channels]
        if tuple(weight.shape[2:]) != kernel:
            for dim, (size, k) in enumerate(zip(weight.shape[2:], kernel), start=2):
                weight = weight.narrow(dim, (size - k) // 2, k)
        return weight

    @staticmethod
    def _sources(inputs: tuple[int, ...]) -> list[int]:
        return [j + 1 for j in inputs] if inputs else [0]

    def child_parameters(self, arch: Architecture) -> list[nn.Parameter]:
        """The parameter tensors that ``arch`` reads (whole tensors; a width uses their leading slice)."""
        params: list[nn.Parameter] = []
        fed = {j for inputs in arch.inputs for j in inputs}
        for i, (spec, inputs) in enumerate(zip(arch.layers, arch.inputs)):
            kernel = self._kernel(spec)
            params += [self.conv[self._conv_key(i, kernel, s)] for s in self._sources(tuple(inputs))]
            params += [self.bn_weight[self._bn_key(i, kernel)], self.bn_bias[self._bn_key(i, kernel)]]
            if i not in fed:
                params.append(self.head[f"s{i}"])
        return [*params, self.head_bias]

    def forward(self, x: torch.Tensor, arch: Architecture) -> torch.Tensor:
        if self.dims == 1 and x.dim() > 3:
            x = x.flatten(2)
        conv = F.conv1d if self.dims == 1 else F.conv2d
        outputs: list[torch.Tensor] = []
        for i, (spec, inputs) in enumerate(zip(arch.layers, arch.inputs)):
            kernel, own, filters = self._kernel(spec), self._own_kernel(spec), spec["filters"]
            reads = [outputs[j] for j in inputs] if inputs else [x]
            size = [max(t.shape[2 + d] for t in reads) for d in range(self.dims)]
            h: torch.Tensor | None = None
            for source, t in zip(self._sources(tuple(inputs)), reads):
                pad: list[int] = []
                for d in reversed(range(self.dims)):  # F.pad lists the last dimension first
                    pad.extend([0, size[d] - t.shape[2 + d]])
                t = F.pad(t, pad) if any(pad) else t
                weight = self._weight(self.conv[self._conv_key(i, kernel, source)], own, filters, t.shape[1])
                part = conv(t, weight, stride=spec.get("stride", 1), padding=tuple(k // 2 for k in own))
                h = part if h is None else h + part
            assert h is not None
            key = self._bn_key(i, kernel)
            h = F.batch_norm(h, None, None, self.bn_weight[key][:filters], self.bn_bias[key][:filters], training=True)
            h = _ACTIVATIONS[spec.get("activation", "relu")](h)
            pool = spec.get("pool", "none")
            if pool != "none":
                pooling: Any = {
                    (1, "max"): F.max_pool1d,
                    (1, "avg"): F.avg_pool1d,
                    (2, "max"): F.max_pool2d,
                    (2, "avg"): F.avg_pool2d,
                }[(self.dims, pool)]
                h = pooling(h, 2, ceil_mode=True)
            outputs.append(h)
        fed = {j for inputs in arch.inputs for j in inputs}
        adaptive = F.adaptive_avg_pool1d if self.dims == 1 else F.adaptive_avg_pool2d
        logits: torch.Tensor = self.head_bias
        for j in range(len(arch.layers)):
            if j not in fed:
                features = adaptive(outputs[j], self.head_pool).flatten(1)
                logits = logits + F.linear(features, self.head[f"s{j}"][:, : features.shape[1]])
        return logits


class MLPSupernet(nn.Module):
    """Every child of an ``mlp`` space (:class:`~nasrl.env.spaces.networks.MLPChildNet`) in one module: one
    weight per layer (its ``units`` take the leading rows) and one classifier per depth (the layer it reads)."""

    def __init__(self, space: SearchSpace, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.space_name = space.name
        self.width = max(_choices(space, "units", 0))
        flat = math.prod(input_shape)
        self.weight = nn.ParameterList(
            _uniform((self.width, flat if i == 0 else self.width), flat if i == 0 else self.width)
            for i in range(space.max_depth)
        )
        self.bias = nn.ParameterList(nn.Parameter(torch.zeros(self.width)) for _ in range(space.max_depth))
        self.head = nn.ParameterList(_uniform((num_classes, self.width), self.width) for _ in range(space.max_depth))
        self.head_bias = nn.ParameterList(nn.Parameter(torch.zeros(num_classes)) for _ in range(space.max_depth))

    def child_parameters(self, arch: Architecture) -> list[nn.Parameter]:
        """The parameter tensors that ``arch`` reads (whole tensors; a width uses their leading slice)."""
        depth = len(arch.layers)
        layers = [p for i in range(depth) for p in (self.weight[i], self.bias[i])]
        return [*layers, self.head[depth - 1], self.head_bias[depth - 1]]

    def forward(self, x: torch.Tensor, arch: Architecture) -> torch.Tensor:
        h = x.flatten(1)
        for i, spec in enumerate(arch.layers):
            units = spec["units"]
            h = F.linear(h, self.weight[i][:units, : h.shape[1]], self.bias[i][:units])
            h = _ACTIVATIONS[spec.get("activation", "relu")](h)
        last = len(arch.layers) - 1
        return F.linear(h, self.head[last][:, : h.shape[1]], self.head_bias[last])


class RecurrentSupernet(nn.Module):
    """Every cell of an ``rnn_cell`` space inside one language model (ENAS's shared RNN): the embedding (tied
    to the softmax), node 0's input weight, and one weight per (node l, the node j it reads), ``w_h[n{l}_s{j}]``
    (j = -1: node 0 reads h_{t-1}). Activations have no weights. A path computes what
    :class:`~nasrl.env.spaces.rnn.LanguageModel` with a :class:`~nasrl.env.spaces.rnn.DAGCell` computes (one layer)."""

    def __init__(self, space: SearchSpace, vocab_size: int, hidden_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.space_name = space.name
        self.hidden_size = hidden_size
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        self.decoder_bias = nn.Parameter(torch.zeros(vocab_size))
        self.drop = nn.Dropout(dropout)
        self.w_x = _uniform((2 * hidden_size, hidden_size), hidden_size)
        keys = ["n0_s-1", *(f"n{node}_s{j}" for node in range(1, space.max_depth) for j in range(node))]
        self.w_h = nn.ParameterDict({key: _uniform((2 * hidden_size, hidden_size), hidden_size) for key in keys})

    @staticmethod
    def _sources(arch: Architecture) -> list[int]:
        return [inputs[0] if inputs else -1 for inputs in arch.inputs]

    def child_parameters(self, arch: Architecture) -> list[nn.Parameter]:
        """The parameter tensors that ``arch`` reads."""
        nodes = [self.w_h[f"n{node}_s{j}"] for node, j in enumerate(self._sources(arch))]
        return [self.embedding.weight, self.decoder_bias, self.w_x, *nodes]

    def initial_state(self, batch_size: int) -> list[torch.Tensor]:
        return [torch.zeros(batch_size, self.hidden_size)]

    def forward(
        self, tokens: torch.Tensor, state: list[torch.Tensor], arch: Architecture
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``tokens``: (time, batch) -> logits (time, batch, vocab) and the next state, through ``arch``'s cell."""
        sources = self._sources(arch)
        read = set(sources)
        loose_ends = [i for i in range(len(sources)) if i not in read]
        activations = [str(layer["activation"]) for layer in arch.layers]
        weights = [self.w_h[f"n{node}_s{j}"].t() for node, j in enumerate(sources)]
        x = self.drop(self.embedding(tokens))
        outputs, h = unroll_cell(F.linear(x, self.w_x), state[0], weights, sources, activations, loose_ends)
        return F.linear(self.drop(outputs), self.embedding.weight, self.decoder_bias), [h]


def build_supernet(
    space: SearchSpace,
    input_shape: Sequence[int],
    num_classes: int,
    hidden_size: int = 64,
    dropout: float = 0.0,
    share_kernels: bool = False,
) -> nn.Module:
    """The shared weights of every child of ``space`` for inputs of ``input_shape`` (no batch dimension) and
    ``num_classes`` outputs; a recurrent cell's: for a vocabulary of ``num_classes`` words, ``hidden_size`` units.
    ``share_kernels``: a convolution's kernel sizes share one tensor (see :class:`ConvSupernet`). The space's family
    builds it; one without a supernet refuses, naming those that have one."""
    return family_of(space.network).build_supernet(space, input_shape, num_classes, hidden_size, dropout, share_kernels)
