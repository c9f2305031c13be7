"""Recurrent child networks: a searched ENAS cell or a standard cell inside one language model.

:class:`DAGCell` is the recurrent cell of ENAS (Pham et al. 2018, section 2.1), as searched by the
``rnn_cell`` space (``env/spaces/rnn_cell.yaml``). Node 0 reads the input x_t and the previous state
h_{t-1}; every later node l reads one earlier node j; each node has an activation f_l and a highway gate::

    c_0 = sigmoid(x_t W_xc + h_{t-1} W_hc)     h_0 = c_0 * f_0(x_t W_xh + h_{t-1} W_hh) + (1 - c_0) * h_{t-1}
    c_l = sigmoid(h_j W_c^l)                    h_l = c_l * f_l(h_j W_h^l) + (1 - c_l) * h_j

and the new state h_t averages the loose ends (the nodes no other node reads). Identity and ReLU nodes
leave the state unbounded, so h_t is scaled down to norm :data:`MAX_STATE_NORM` where it grows past it,
per example and step, as the ENAS PyTorch port does (``shared_rnn.py``, "exploding gradient"). The
standard cells (``lstm``, ``gru``, ``rnn_tanh``: torch's own modules) plug into the same :class:`LanguageModel`, so a
searched cell and a baseline are trained by one loop with one parameter count to compare at. Which cell a
language model holds, and its zero state, its family says (``env/spaces/families/rnn_cell.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

from nasrl.env.spaces.family import family_of, recurrent_families
from nasrl.env.spaces.fast_cell import fast_unroll
from nasrl.env.spaces.networks import count_parameters
from nasrl.env.spaces.space import Architecture

MAX_STATE_NORM = 25.0  # ENAS-pytorch's max_norm
# in this order in the space files' error messages (the rnn_cell family's accepted values)
CELL_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "identity": lambda x: x,
    "sigmoid": torch.sigmoid,
}


class DAGCell(nn.Module):
    """One layer of the searched cell, unrolled over a sequence by :meth:`forward`."""

    def __init__(self, arch: Architecture, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.activations = [str(layer["activation"]) for layer in arch.layers]
        self.sources = [inputs[0] if inputs else -1 for inputs in arch.inputs]  # -1: node 0 reads x_t, h_{t-1}
        read = {j for j in self.sources if j >= 0}
        self.loose_ends = [i for i in range(len(arch.layers)) if i not in read]
        self.hidden_size = hidden_size
        self.w_x = nn.Linear(input_size, 2 * hidden_size, bias=False)  # both halves: gate c and candidate
        self.w_h = nn.ModuleList(nn.Linear(hidden_size, 2 * hidden_size, bias=False) for _ in arch.layers)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x``: (time, batch, input_size), ``h``: (batch, hidden) -> outputs (time, batch, hidden), last h."""
        weights = [cast(nn.Linear, linear).weight.t() for linear in self.w_h]
        return unroll_cell(self.w_x(x), h, weights, self.sources, self.activations, self.loose_ends)


def unroll_cell(
    projected: torch.Tensor,
    h: torch.Tensor,
    weights: list[torch.Tensor],
    sources: list[int],
    activations: list[str],
    loose_ends: list[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ENAS cell over a sequence (the equations at the top of this module): ``projected`` is the input's
    share of node 0 for every step (time, batch, 2 hidden), ``weights[l]`` (hidden, 2 hidden) maps the state
    node l reads (``sources[l]``; -1: h_{t-1}) and ``activations[l]`` names its activation. Returns the outputs
    (time, batch, hidden) and the last state. Shared by :class:`DAGCell` and the weight-sharing supernet; computed
    by one compiled loop for every cell, with a backward written by hand (``env/spaces/fast_cell.py``), and equal to
    :func:`unroll_cell_reference` within float tolerance."""
    return fast_unroll(projected, h, weights, sources, activations, loose_ends, MAX_STATE_NORM)


def unroll_cell_reference(
    projected: torch.Tensor,
    h: torch.Tensor,
    weights: list[torch.Tensor],
    sources: list[int],
    activations: list[str],
    loose_ends: list[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`unroll_cell` as a plain loop of torch operations that autograd differentiates: the definition the
    fast cell is tested against (and the implementation before it, several times slower)."""
    outputs = []
    for t in range(projected.shape[0]):
        nodes: list[torch.Tensor] = []
        for node, (source, name) in enumerate(zip(sources, activations)):
            prev = h if source < 0 else nodes[source]
            weight = weights[node]
            pre = torch.addmm(projected[t], prev, weight) if source < 0 else prev @ weight
            gate, candidate = pre.chunk(2, dim=-1)
            nodes.append(torch.lerp(prev, CELL_ACTIVATIONS[name](candidate), torch.sigmoid(gate)))
        h = nodes[loose_ends[0]] if len(loose_ends) == 1 else torch.stack([nodes[i] for i in loose_ends]).mean(0)
        norms = h.norm(dim=-1, keepdim=True)
        if norms.max() > MAX_STATE_NORM:  # rare: only unbounded activations get there
            h = h * (MAX_STATE_NORM / norms).clamp(max=1.0)
        outputs.append(h)
    return torch.stack(outputs), h


class LanguageModel(nn.Module):
    """Embedding, ``num_layers`` recurrent cells, and a softmax over the vocabulary whose weights are the
    embedding's (weight tying, as in ENAS and most PTB models). Dropout on the embedding and the outputs."""

    def __init__(
        self, arch: Architecture, vocab_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__()
        family = family_of(arch.network)
        if not family.language_model:
            accepted = recurrent_families()
            raise ValueError(f"network {arch.network!r} is not a recurrent cell; accepted are {accepted}")
        self.network = arch.network
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        self.drop = nn.Dropout(dropout)
        self.cells = nn.ModuleList(family.cell(arch, hidden_size) for _ in range(num_layers))
        self.decoder = nn.Linear(hidden_size, vocab_size)
        self.decoder.weight = self.embedding.weight
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def initial_state(self, batch_size: int) -> list[Any]:
        family = family_of(self.network)
        return [family.cell_state(batch_size, self.hidden_size) for _ in self.cells]

    def forward(self, tokens: torch.Tensor, state: list[Any]) -> tuple[torch.Tensor, list[Any]]:
        """``tokens``: (time, batch) -> logits (time, batch, vocab) and the next state."""
        h = self.drop(self.embedding(tokens))
        new_state = []
        for cell, s in zip(self.cells, state):
            h, s = cell(h, s)
            new_state.append(s)
        return self.decoder(self.drop(h)), new_state


def detach_state(state: Any) -> Any:
    """The state with its history cut (truncated backpropagation through time)."""
    if isinstance(state, torch.Tensor):
        return state.detach()
    return type(state)(detach_state(s) for s in state)


def build_language_model(
    arch: Architecture, vocab_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0
) -> LanguageModel:
    return LanguageModel(arch, vocab_size, hidden_size, num_layers, dropout)


def hidden_size_for(
    arch: Architecture, vocab_size: int, params: int, num_layers: int = 1, low: int = 4, high: int = 4096
) -> int:
    """The hidden size at which the language model of ``arch`` has the parameter count closest to
    ``params`` (what an equal-parameter comparison of cells needs). Counted, not estimated."""

    def count(h: int) -> int:
        with torch.random.fork_rng(devices=[]):
            model = build_language_model(arch, vocab_size, h, num_layers)
        return count_parameters(model)

    while high - low > 1:  # the count grows with the hidden size
        mid = (low + high) // 2
        low, high = (mid, high) if count(mid) <= params else (low, mid)
    return low if params - count(low) <= count(high) - params else high
