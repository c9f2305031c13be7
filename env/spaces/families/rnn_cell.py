"""The recurrent families, built into a :class:`~nasrl.env.spaces.rnn.LanguageModel`: ``rnn_cell``, the searched
cell of ENAS (:class:`~nasrl.env.spaces.rnn.DAGCell`; shared weights:
:class:`~nasrl.env.spaces.supernet.RecurrentSupernet`), and the standard cells it is compared against (``lstm``,
``gru``, ``rnn_tanh``: torch's own modules), which have no decisions and no space."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from nasrl.env.spaces.family import NetworkFamily, Rule, one_of
from nasrl.env.spaces.rnn import CELL_ACTIVATIONS, DAGCell
from nasrl.env.spaces.space import Architecture, SearchSpace
from nasrl.env.spaces.supernet import RecurrentSupernet

STANDARD_CELLS = ("lstm", "gru", "rnn_tanh")


def standard_cell(name: str) -> Architecture:
    """The architecture record of a standard cell (``lstm``, ``gru`` or ``rnn_tanh``): no tokens."""
    if name not in STANDARD_CELLS:
        raise ValueError(f"unknown standard cell {name!r}; accepted are {list(STANDARD_CELLS)}")
    return Architecture(space=name, network=name, tokens=(), layers=[], inputs=[])


class RNNCell(NetworkFamily):
    """ENAS's cell: node 0 reads x_t and h_{t-1}, node l > 0 the one earlier node its ``input`` token names."""

    decisions: ClassVar[dict[str, Rule]] = {"activation": one_of(tuple(CELL_ACTIVATIONS))}
    required = frozenset({"activation"})
    node_inputs = True
    language_model = True
    ends = ("x_t, h_t-1", "h_t: mean of the loose ends")

    def build_supernet(
        self,
        space: SearchSpace,
        input_shape: Sequence[int],
        num_classes: int,
        hidden_size: int = 64,
        dropout: float = 0.0,
        share_kernels: bool = False,
    ) -> nn.Module:
        return RecurrentSupernet(space, num_classes, hidden_size, dropout)  # num_classes: the vocabulary

    def cell(self, arch: Architecture, hidden_size: int) -> nn.Module:
        return DAGCell(arch, hidden_size, hidden_size)

    def cell_state(self, batch_size: int, hidden_size: int) -> Any:
        return torch.zeros(batch_size, hidden_size)


class _StandardCell(NetworkFamily):
    language_model = True
    module: ClassVar[type[nn.Module]]

    def cell(self, arch: Architecture, hidden_size: int) -> nn.Module:
        return self.module(hidden_size, hidden_size)

    def cell_state(self, batch_size: int, hidden_size: int) -> Any:
        return torch.zeros(1, batch_size, hidden_size)


class LSTM(_StandardCell):
    module = nn.LSTM

    def cell_state(self, batch_size: int, hidden_size: int) -> Any:
        return (torch.zeros(1, batch_size, hidden_size), torch.zeros(1, batch_size, hidden_size))


class GRU(_StandardCell):
    module = nn.GRU


class RNNTanh(_StandardCell):
    module = nn.RNN
