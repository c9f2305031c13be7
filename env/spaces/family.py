"""Network families: what kind of child network a space describes, and the one place a family is found by name.

A family (a subclass of :class:`NetworkFamily`) declares the per-layer decisions its spaces may take and how
each value is checked, which structural options it supports (Zoph & Le skip connections, ENAS node inputs),
how an architecture reads (:meth:`NetworkFamily.describe`) and is drawn (:meth:`NetworkFamily.graph`, plain
data the monitor draws), and builds its network, its supernet where it has one, or its language model.

A space names its family by ``network:``: a shipped family (``cnn1d``, ``cnn2d``, ``mlp``, ``rnn_cell``,
``nb201_cell``, and the standard recurrent cells ``lstm``, ``gru``, ``rnn_tanh`` that retraining compares
against) or the importable dotted path of a subclass, e.g. ``network: my_pkg.families.Toy``. :func:`family_of`
resolves both, so a worker process or a Ray task rebuilds the family from an architecture's ``network``.
Shipped families are registered as strings and imported when first asked for (as Gymnasium registers its
environments): this module stays below the space and the networks it describes.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from torch import nn

    from nasrl.env.spaces.space import Architecture, SearchSpace

# family name -> "module:class"; the families spaces can search, then the standard cells (no decisions)
SHIPPED_FAMILIES = {
    "cnn1d": "nasrl.env.spaces.families.conv:Conv1d",
    "cnn2d": "nasrl.env.spaces.families.conv:Conv2d",
    "mlp": "nasrl.env.spaces.families.mlp:MLP",
    "nb201_cell": "nasrl.env.spaces.families.nb201_cell:NB201Cell",
    "table": "nasrl.env.spaces.families.table:TableRow",
    "rnn_cell": "nasrl.env.spaces.families.rnn_cell:RNNCell",
    "lstm": "nasrl.env.spaces.families.rnn_cell:LSTM",
    "gru": "nasrl.env.spaces.families.rnn_cell:GRU",
    "rnn_tanh": "nasrl.env.spaces.families.rnn_cell:RNNTanh",
}


class FamilyError(ValueError):
    """A family that cannot be found or used; the message names it and what is accepted (``reason``: the
    message without the list of what is accepted, for callers that accept less)."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


@dataclass(frozen=True)
class Rule:
    """How the values of one decision are checked: ``accepted`` says it in an error message."""

    accepted: str
    valid: Callable[[Any], bool]


def positive_int() -> Rule:
    return Rule("a positive integer", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0)


def one_of(values: Sequence[Any]) -> Rule:
    values = tuple(values)
    return Rule(f"one of {list(values)}", lambda v: v in values)


@dataclass(frozen=True)
class Edge:
    source: int
    target: int
    label: str = ""
    cut: bool = False  # the edge carries nothing (NAS-Bench-201's ``none``): drawn dotted


@dataclass(frozen=True)
class Graph:
    """A drawing of an architecture as plain data; ``controller/monitor.py`` draws any family's.

    ``nodes`` are labels, node 0 the input end and the last node the output end. ``layout``: ``column``
    draws boxes from the input down to the output (the ends shaded), each edge an arc on the left; ``row``
    draws circles left to right, each edge an arrow with its label, and ``captions`` beneath the two ends."""

    nodes: tuple[str, ...]
    edges: tuple[Edge, ...]
    layout: str = "column"
    captions: tuple[str, str] | None = None


class NetworkFamily:
    """A kind of child network. Subclass it, fill in the class attributes, implement :meth:`build` (or, for a
    recurrent cell, :meth:`cell` and :meth:`cell_state`), and name the class's dotted path in a space's
    ``network:``. The instance holds no state: :func:`family_of` makes one per name."""

    decisions: ClassVar[dict[str, Rule]] = {}  # the per-layer decisions a space may take, in any subset
    any_decision: ClassVar[Rule | None] = None  # a rule: its spaces may name any decision, its values checked so
    required: ClassVar[frozenset[str]] = frozenset()  # those every space of the family must take
    skip_connections: ClassVar[bool] = False  # accepts Zoph & Le's anchor decisions
    node_inputs: ClassVar[bool] = False  # needs (and alone accepts) one input decision per layer > 0 (ENAS)
    language_model: ClassVar[bool] = False  # a recurrent cell: built into a language model, trained on text
    ends: ClassVar[tuple[str, str]] = ("input", "classifier")  # the end nodes of the drawing

    @property
    def searchable(self) -> bool:
        """Whether a space can name this family: it has decisions (a standard recurrent cell has none)."""
        return bool(self.decisions) or self.any_decision is not None

    def decision_rule(self, name: str) -> Rule | None:
        """How the values of decision ``name`` are checked; None: a space of this family cannot take it."""
        return self.decisions.get(name, self.any_decision)

    def reads(self, arch: Architecture, layer: int) -> list[int]:
        """The layers ``layer`` reads; -1 is the network input. By default its recorded inputs, else the input."""
        return list(arch.inputs[layer]) or [-1]

    def outputs(self, arch: Architecture) -> list[int]:
        """The layers the output reads: by default the loose ends (layers no other layer reads)."""
        fed = {j for i in range(len(arch.layers)) for j in self.reads(arch, i)}
        return [i for i in range(len(arch.layers)) if i not in fed]

    def describe(self, arch: Architecture) -> str:
        """One readable line, e.g. ``0:[filters=32 activation=relu](in) 1:[filters=64 activation=relu](0)``:
        each layer with the layers it reads in parentheses (``in``: the network input)."""
        parts = []
        for i, layer in enumerate(arch.layers):
            params = " ".join(f"{k}={v}" for k, v in layer.items())
            src = ",".join("in" if j < 0 else str(j) for j in self.reads(arch, i))
            parts.append(f"{i}:[{params}]({src})")
        return " ".join(parts)

    def graph(self, arch: Architecture) -> Graph:
        """The layers from the input (node 0) down to the output (node n + 1), an edge per connection."""
        n = len(arch.layers)
        labels = [f"{i}: " + " ".join(f"{k}={v}" for k, v in layer.items()) for i, layer in enumerate(arch.layers)]
        edges = [Edge(j + 1, i + 1) for i in range(n) for j in self.reads(arch, i)]
        edges += [Edge(j + 1, n + 1) for j in self.outputs(arch)]
        return Graph((self.ends[0], *labels, self.ends[1]), tuple(edges))

    def build(self, arch: Architecture, input_shape: Sequence[int], num_classes: int) -> nn.Module:
        """The child network of ``arch`` for inputs of ``input_shape`` (no batch dimension): logits."""
        raise FamilyError(
            f"network '{arch.network}' builds language models (build_language_model), not classifiers"
            if self.language_model
            else f"network '{arch.network}' does not build networks"
        )

    def build_supernet(
        self,
        space: SearchSpace,
        input_shape: Sequence[int],
        num_classes: int,
        hidden_size: int = 64,
        dropout: float = 0.0,
        share_kernels: bool = False,
    ) -> nn.Module:
        """Shared weights for every child of ``space`` (see ``env/spaces/supernet.py``). By default: none."""
        raise FamilyError(
            f"weight sharing supports the spaces of networks {supernet_families()}; space '{space.name}' builds "
            f"'{space.network}' networks"
        )

    def cell(self, arch: Architecture, hidden_size: int) -> nn.Module:
        """One recurrent layer of a language model (``language_model`` families)."""
        raise FamilyError(f"network {arch.network!r} is not a recurrent cell; accepted are {recurrent_families()}")

    def cell_state(self, batch_size: int, hidden_size: int) -> Any:
        """The zero state one layer of :meth:`cell` starts from."""
        raise FamilyError(f"{type(self).__name__} is not a recurrent cell; accepted are {recurrent_families()}")


def searchable_families() -> list[str]:
    """The shipped families a space can name (those with decisions), sorted."""
    return sorted(name for name in SHIPPED_FAMILIES if family_of(name).searchable)


def supernet_families() -> list[str]:
    """The shipped families with a supernet, in registry order."""
    base = NetworkFamily.build_supernet
    return [name for name in SHIPPED_FAMILIES if type(family_of(name)).build_supernet is not base]


def recurrent_families() -> list[str]:
    """The shipped language-model families, in registry order."""
    return [name for name in SHIPPED_FAMILIES if family_of(name).language_model]


@functools.cache
def family_of(network: str) -> NetworkFamily:
    """The family a space's ``network:`` names: a shipped one by name, a user's by its dotted path."""
    target = SHIPPED_FAMILIES.get(network)
    if target is not None:
        module, _, attr = target.partition(":")
    elif isinstance(network, str) and "." in network.strip("."):
        module, _, attr = network.rpartition(".")
    else:
        raise _refusal(f"unknown network {network!r}")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise _refusal(f"network {network!r} cannot be imported ({exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, NetworkFamily)):
        raise _refusal(f"network {network!r} is not a subclass of NetworkFamily")
    return cls()


def _refusal(reason: str) -> FamilyError:
    accepted = f"accepted are {sorted(SHIPPED_FAMILIES)} or the dotted path of a NetworkFamily subclass"
    return FamilyError(f"{reason}; {accepted}", reason)
