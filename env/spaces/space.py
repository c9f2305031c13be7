"""Search spaces: YAML data that lists the decisions of a network, and the token protocol over it.

A space file (``env/spaces/*.yaml``, shipped with the package, or any path) looks like::

    name: cnn1d
    network: cnn1d            # its family (env/spaces/families/), or the dotted path of a user's NetworkFamily
    depth: [1, 2, 3, 4, 5, 6] # a list: the first token chooses the depth; an int: fixed depth
    skip_connections: true    # Zoph & Le anchors: one binary "does layer j feed layer i" per j < i
    head_pool: 1              # spatial size each output is pooled to before the classifier
    layer:                    # the decisions taken for every layer, in this order
      - {name: filters, choices: [16, 32, 64, 128]}
      - {name: activation, choices: [relu, tanh]}
    constraints:              # optional: how many layers may take some values of a decision
      - {decision: filters, among: [128], min: 0, max: 2}

An episode emits, in order: the depth token (if the depth varies), then for each layer i the skip
decisions for j = 0..i-1 (if enabled), then the layer's own decisions, then (``node_inputs``, the ENAS
recurrent cell) the one earlier layer 0..i-1 that layer i > 0 reads; the action mask rules out the rest.
A constraint bounds how many layers take one of the values ``among`` for ``decision`` (TransNAS-Bench-101's
macro skeletons halve the resolution 1 to 4 times); the mask then allows a choice (or a depth) only if the
rest of the sequence can still meet every constraint, so no sequence that breaks one is ever emitted.
Every token sequence the space allows decodes (``SearchSpace.decode``) to an :class:`Architecture` that its
family (:mod:`nasrl.env.spaces.family`) can build. The family decides which decisions a layer may take and
which values they accept, and whether skip connections or node inputs are allowed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from nasrl.env.spaces.family import FamilyError, NetworkFamily, family_of, searchable_families

SHIPPED_SPACES = files("nasrl.env.spaces")  # found through the package, so a wheel works from any folder

TOP_LEVEL_KEYS = (
    "name", "network", "depth", "skip_connections", "node_inputs", "head_pool", "layer", "constraints", "description"
)  # fmt: skip
CONSTRAINT_KEYS = ("decision", "among", "min", "max")

DEPTH = "depth"
SKIP = "skip"
INPUT = "input"


class SpaceError(ValueError):
    """A search space file that cannot be used; the message names the file, the key and what is accepted."""


@dataclass(frozen=True)
class DecisionType:
    """One kind of decision: the controller keeps one output head per decision type."""

    name: str
    choices: tuple[Any, ...]
    kind: str = "categorical"  # "categorical"; "skip" for the binary anchor decisions; "input" for a node's input

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(str(c) for c in self.choices)


@dataclass(frozen=True)
class Decision:
    """The decision asked at one position of an episode."""

    type_index: int
    layer: int  # layer the decision belongs to (0 for the depth token)
    source: int = -1  # for a skip decision: the earlier layer j asked about; -1 otherwise


@dataclass(frozen=True)
class Constraint:
    """Between ``low`` and ``high`` layers (inclusive) take one of the values ``among`` for decision ``decision``."""

    decision: str
    among: tuple[Any, ...]
    low: int
    high: int

    def to_dict(self) -> dict[str, Any]:
        return {"decision": self.decision, "among": list(self.among), "min": self.low, "max": self.high}


@dataclass
class Architecture:
    """A decoded token sequence: pure data, enough to rebuild the network anywhere."""

    space: str
    network: str
    tokens: tuple[int, ...]
    layers: list[dict[str, Any]]
    inputs: list[tuple[int, ...]]  # per layer: earlier layers feeding it; empty means the network input
    head_pool: int = 1

    @property
    def family(self) -> NetworkFamily:
        """The family that builds, describes and draws this architecture."""
        return family_of(self.network)

    def describe(self) -> str:
        """One readable line, e.g. ``0:[filters=32 activation=relu](in) 1:[filters=64 activation=relu](0)``:
        each layer with the layers it reads in parentheses (``in``: the network input), as its family says."""
        return self.family.describe(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "network": self.network,
            "tokens": list(self.tokens),
            "layers": self.layers,
            "inputs": [list(i) for i in self.inputs],
            "head_pool": self.head_pool,
            "readable": self.describe(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Architecture:
        return cls(
            space=data["space"],
            network=data["network"],
            tokens=tuple(int(t) for t in data["tokens"]),
            layers=[dict(layer) for layer in data["layers"]],
            inputs=[tuple(int(j) for j in i) for i in data["inputs"]],
            head_pool=int(data.get("head_pool", 1)),
        )


@dataclass
class SearchSpace:
    """A validated search space; build one with :func:`load_space`."""

    name: str
    network: str
    depths: tuple[int, ...]  # one entry: fixed depth
    layer_decisions: list[DecisionType]
    skip_connections: bool = False
    node_inputs: bool = False
    head_pool: int = 1
    source: str = "<dict>"
    constraints: tuple[Constraint, ...] = ()
    decision_types: list[DecisionType] = field(init=False)
    _layouts: dict[int, tuple[Decision, ...]] = field(init=False, repr=False, compare=False, default_factory=dict)
    # (decision, layers left, counts so far) -> how many completions meet that decision's constraints
    _completions: dict[tuple[str, int, tuple[int, ...]], int] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        types = []
        if self.variable_depth:
            types.append(DecisionType(DEPTH, self.depths))
        types.extend(self.layer_decisions)
        if self.skip_connections:
            types.append(DecisionType(SKIP, (0, 1), kind="skip"))
        if self.node_inputs:
            types.append(DecisionType(INPUT, tuple(range(max(1, self.max_depth - 1))), kind="input"))
        self.decision_types = types

    @property
    def family(self) -> NetworkFamily:
        """The family of the networks of this space (its ``network``)."""
        return family_of(self.network)

    @property
    def variable_depth(self) -> bool:
        return len(self.depths) > 1

    @property
    def max_depth(self) -> int:
        return max(self.depths)

    def num_choices(self, decision: Decision) -> int:
        """How many choices are valid at ``decision``: the first ones of its type's; an input decision of
        layer i offers the layers 0..i-1 (the action mask rules out the rest)."""
        dtype = self.decision_types[decision.type_index]
        return decision.layer if dtype.kind == "input" else len(dtype.choices)

    @property
    def num_actions(self) -> int:
        """K, the size of the action space: the largest number of choices of any decision."""
        return max(len(t.choices) for t in self.decision_types)

    def layout(self, depth: int) -> tuple[Decision, ...]:
        """The decisions of an episode whose network has ``depth`` layers, in emission order."""
        if depth not in self._layouts:  # asked at every step of every episode
            self._layouts[depth] = tuple(self._build_layout(depth))
        return self._layouts[depth]

    def _build_layout(self, depth: int) -> list[Decision]:
        type_of = {t.name: i for i, t in enumerate(self.decision_types)}
        steps = [Decision(type_of[DEPTH], 0)] if self.variable_depth else []
        for i in range(depth):
            if self.skip_connections:
                steps.extend(Decision(type_of[SKIP], i, j) for j in range(i))
            steps.extend(Decision(type_of[d.name], i) for d in self.layer_decisions)
            if self.node_inputs and i > 0:  # after the layer's own: the first two steps use every action
                steps.append(Decision(type_of[INPUT], i))
        return steps

    @property
    def max_length(self) -> int:
        return len(self.layout(self.max_depth))

    def next_decision(self, tokens: tuple[int, ...] | list[int]) -> Decision | None:
        """The decision asked after ``tokens`` were emitted, or None when the sequence is complete."""
        if self.variable_depth:
            if not tokens:
                return self.layout(self.depths[0])[0]
            depth = self.depths[tokens[0]]
        else:
            depth = self.depths[0]
        steps = self.layout(depth)
        return steps[len(tokens)] if len(tokens) < len(steps) else None

    def allowed(self, tokens: tuple[int, ...] | list[int]) -> tuple[int, ...]:
        """The tokens valid after ``tokens`` (the action mask): ``0 .. num_choices - 1`` of the next decision,
        less those after which the space's constraints can no longer be met. Empty once the sequence is complete."""
        decision = self.next_decision(tokens)
        if decision is None:
            return ()
        choices = tuple(range(self.num_choices(decision)))
        if not self.constraints:
            return choices
        dtype = self.decision_types[decision.type_index]
        if dtype.name == DEPTH and self.variable_depth and not tokens:
            return tuple(c for c in choices if self._count_valid(self.depths[c], {}) > 0)
        if dtype.kind != "categorical" or not any(c.decision == dtype.name for c in self.constraints):
            return choices
        depth = self.depths[tokens[0]] if self.variable_depth else self.depths[0]
        taken = self._taken(tuple(tokens), dtype.name)
        return tuple(c for c in choices if self._count_valid(depth, {dtype.name: [*taken, dtype.choices[c]]}) > 0)

    def _taken(self, tokens: tuple[int, ...], name: str) -> list[Any]:
        """The values decision ``name`` took in ``tokens``, layer by layer."""
        depth = self.depths[tokens[0]] if self.variable_depth else self.depths[0]
        steps = self.layout(depth)
        return [
            self.decision_types[steps[p].type_index].choices[t]
            for p, t in enumerate(tokens)
            if self.decision_types[steps[p].type_index].name == name
        ]

    def _count_valid(self, depth: int, taken: dict[str, list[Any]]) -> int:
        """How many ways the constrained decisions of a ``depth``-layer network can be completed, given the values
        ``taken`` so far (decision -> values of the first layers), meeting every constraint."""
        total = 1
        for name in dict.fromkeys(c.decision for c in self.constraints):
            values = taken.get(name, [])
            rules = [c for c in self.constraints if c.decision == name]
            counts = tuple(sum(v in c.among for v in values) for c in rules)
            total *= self._completions_of(name, depth - len(values), counts)
        return total

    def _completions_of(self, name: str, left: int, counts: tuple[int, ...]) -> int:
        key = (name, left, counts)
        if key not in self._completions:
            rules = [c for c in self.constraints if c.decision == name]
            if left == 0:
                found = int(all(c.low <= n <= c.high for c, n in zip(rules, counts)))
            elif any(n > c.high for c, n in zip(rules, counts)):
                found = 0  # counts only grow
            else:
                choices = next(d.choices for d in self.layer_decisions if d.name == name)
                found = sum(
                    self._completions_of(name, left - 1, tuple(n + (v in c.among) for c, n in zip(rules, counts)))
                    for v in choices
                )
            self._completions[key] = found
        return self._completions[key]

    def decode(self, tokens: tuple[int, ...] | list[int]) -> Architecture:
        """Turn a complete token sequence into an :class:`Architecture`; refuse anything else."""
        tokens = tuple(int(t) for t in tokens)
        for pos, token in enumerate(tokens):
            decision = self.next_decision(tokens[:pos])
            if decision is None:
                raise ValueError(
                    f"space '{self.name}': token sequence {list(tokens)} is too long; it is complete after {pos} tokens"
                )
            n = self.num_choices(decision)
            if not 0 <= token < n:
                raise ValueError(
                    f"space '{self.name}': token {token} at position {pos} is out of range for decision "
                    f"'{self.decision_types[decision.type_index].name}' (valid: 0..{n - 1})"
                )
            if self.constraints and token not in self.allowed(tokens[:pos]):
                raise ValueError(
                    f"space '{self.name}': token {token} at position {pos} breaks the space's constraints "
                    f"{[c.to_dict() for c in self.constraints]} (valid there: {list(self.allowed(tokens[:pos]))})"
                )
        if self.next_decision(tokens) is not None:
            raise ValueError(f"space '{self.name}': token sequence {list(tokens)} is incomplete")
        depth = self.depths[tokens[0]] if self.variable_depth else self.depths[0]
        layers: list[dict[str, Any]] = [{} for _ in range(depth)]
        feeds: list[list[int]] = [[] for _ in range(depth)]
        for pos, decision in enumerate(self.layout(depth)):
            dtype = self.decision_types[decision.type_index]
            if dtype.name == DEPTH:
                continue
            if dtype.kind == "skip":
                if tokens[pos] == 1:
                    feeds[decision.layer].append(decision.source)
            elif dtype.kind == "input":
                feeds[decision.layer].append(tokens[pos])
            else:
                layers[decision.layer][dtype.name] = dtype.choices[tokens[pos]]
        return Architecture(
            space=self.name,
            network=self.network,
            tokens=tokens,
            layers=layers,
            inputs=[tuple(f) for f in feeds],
            head_pool=self.head_pool,
        )

    def sequences(self) -> Iterator[tuple[int, ...]]:
        """Every token sequence of the space (:meth:`size` of them), depth first in token order."""
        stack: list[tuple[int, ...]] = [()]
        while stack:
            tokens = stack.pop()
            if self.next_decision(tokens) is None:
                yield tokens
            else:
                stack.extend(tokens + (t,) for t in reversed(self.allowed(tokens)))

    def size(self) -> int:
        """The number of distinct token sequences in the space."""
        total = 0
        constrained = {c.decision for c in self.constraints}
        for depth in self.depths:
            per_layer = 1
            for d in self.layer_decisions:
                per_layer *= 1 if d.name in constrained else len(d.choices)
            skips = depth * (depth - 1) // 2 if self.skip_connections else 0
            inputs = math.factorial(depth - 1) if self.node_inputs else 1
            total += per_layer**depth * 2**skips * inputs * self._count_valid(depth, {})
        return total

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "network": self.network,
            "depth": list(self.depths) if self.variable_depth else self.depths[0],
            "skip_connections": self.skip_connections,
            **({"node_inputs": True} if self.node_inputs else {}),  # absent otherwise: cache keys stay as they were
            "head_pool": self.head_pool,
            "layer": [{"name": d.name, "choices": list(d.choices)} for d in self.layer_decisions],
            # absent without constraints: cache keys stay as they were
            **({"constraints": [c.to_dict() for c in self.constraints]} if self.constraints else {}),
        }


def load_space(space: str | Path | dict[str, Any] | SearchSpace) -> SearchSpace:
    """Load a space by name (one of :func:`shipped_spaces`, ``env/spaces/NAME.yaml``), from a YAML path, or
    from a dict; validate it."""
    if isinstance(space, SearchSpace):
        return space
    if isinstance(space, dict):
        return _parse(dict(space), "<dict>")
    text = str(space)
    path: Any = Path(text)
    # a file, not any path: a run folder named like a space (hydra.run.dir=cnn1d) must not hide the space
    if not (text.endswith((".yaml", ".yml")) or path.is_file()):
        path = SHIPPED_SPACES / f"{text}.yaml"
        if not path.is_file():
            raise SpaceError(f"unknown search space '{text}': accepted are {shipped_spaces()} or a path to a YAML file")
    if not path.is_file():
        raise SpaceError(f"search space file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpaceError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise SpaceError(f"{path}: expected a mapping with keys {list(TOP_LEVEL_KEYS)}, got {type(data).__name__}")
    return _parse(data, str(path))


def shipped_spaces() -> list[str]:
    """Names of the spaces that ship with nasrl."""
    return sorted(p.name.removesuffix(".yaml") for p in SHIPPED_SPACES.iterdir() if p.name.endswith(".yaml"))


def _parse(data: dict[str, Any], source: str) -> SearchSpace:
    def fail(key: str, problem: str) -> SpaceError:
        return SpaceError(f"{source}: key '{key}': {problem}")

    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise fail(key, f"unknown key; accepted keys are {list(TOP_LEVEL_KEYS)}")
    network = data.get("network")
    family = _family(network, fail)
    name = str(data.get("name", Path(source).stem))

    depth = data.get("depth")
    depths = depth if isinstance(depth, list) else [depth]
    if not depths or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in depths):
        raise fail(
            "depth",
            f"got {depth!r}; accepted is a positive integer or a non-empty list of them (zero layers is no network)",
        )
    if len(set(depths)) != len(depths):
        raise fail("depth", f"got {depth!r}; the depths must be distinct")

    layer = data.get("layer")
    if not isinstance(layer, list) or not layer:
        raise fail("layer", f"got {layer!r}; accepted is a non-empty list of {{name, choices}} entries")
    accepted = family.decisions
    decisions: list[DecisionType] = []
    seen: set[str] = set()
    for i, entry in enumerate(layer):
        where = f"layer[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"name", "choices"}:
            raise fail(where, f"got {entry!r}; accepted is a mapping with exactly the keys 'name' and 'choices'")
        dname, choices = entry["name"], entry["choices"]
        rule = family.decision_rule(dname)
        if rule is None:
            raise fail(f"{where}.name", f"got {dname!r}; network '{network}' accepts {sorted(accepted)}")
        if dname in seen:
            raise fail(f"{where}.name", f"duplicate decision name {dname!r}; each decision appears once")
        seen.add(dname)
        if not isinstance(choices, list) or not choices:
            raise fail(f"{where}.choices", f"got {choices!r} for '{dname}'; accepted is a non-empty list")
        for c in choices:
            if not rule.valid(c):
                raise fail(f"{where}.choices", f"bad value {c!r} for '{dname}'; accepted is {rule.accepted}")
        if len(set(map(str, choices))) != len(choices):
            raise fail(f"{where}.choices", f"duplicate choices in {choices!r} for '{dname}'")
        decisions.append(DecisionType(dname, tuple(choices)))
    missing = family.required - seen
    if missing:
        raise fail("layer", f"network '{network}' needs the decisions {sorted(missing)}")

    skip = data.get("skip_connections", False)
    if not isinstance(skip, bool):
        raise fail("skip_connections", f"got {skip!r}; accepted is true or false")
    if skip and not family.skip_connections:
        supported = " and ".join(n for n in searchable_families() if family_of(n).skip_connections)
        raise fail("skip_connections", f"skip connections are supported by the {supported} networks only")
    node_inputs = data.get("node_inputs", False)
    if not isinstance(node_inputs, bool):
        raise fail("node_inputs", f"got {node_inputs!r}; accepted is true or false")
    if node_inputs != family.node_inputs:
        needing = [network] if family.node_inputs else [n for n in searchable_families() if family_of(n).node_inputs]
        names = " and ".join(f"'{n}'" for n in needing)
        raise fail("node_inputs", f"network {names} needs node_inputs: true, and only it accepts it")
    head_pool = data.get("head_pool", 1)
    if not isinstance(head_pool, int) or isinstance(head_pool, bool) or head_pool < 1:
        raise fail("head_pool", f"got {head_pool!r}; accepted is a positive integer")
    space = SearchSpace(
        name=name,
        network=str(network),  # checked by _family: a string
        depths=tuple(depths),  # type: ignore[arg-type]  # checked above: positive integers
        layer_decisions=decisions,
        skip_connections=skip,
        node_inputs=node_inputs,
        head_pool=head_pool,
        source=source,
        constraints=_constraints(data.get("constraints", []), decisions, fail),
    )
    if space.constraints and space.size() == 0:
        raise fail("constraints", f"no architecture of depth {depth!r} meets them all")
    return space


def _constraints(
    data: Any, decisions: list[DecisionType], fail: Callable[[str, str], SpaceError]
) -> tuple[Constraint, ...]:
    """The ``constraints:`` list, checked: each names a decision of the layer and some of its choices."""
    if not isinstance(data, list):
        raise fail("constraints", f"got {data!r}; accepted is a list of {{{', '.join(CONSTRAINT_KEYS)}}} entries")
    known = {d.name: d for d in decisions}
    out = []
    for i, entry in enumerate(data):
        where = f"constraints[{i}]"
        if not isinstance(entry, dict) or set(entry) != set(CONSTRAINT_KEYS):
            raise fail(where, f"got {entry!r}; accepted is a mapping with exactly the keys {list(CONSTRAINT_KEYS)}")
        if entry["decision"] not in known:
            raise fail(f"{where}.decision", f"got {entry['decision']!r}; accepted are the layer's {sorted(known)}")
        dtype = known[entry["decision"]]
        among = entry["among"]
        if not isinstance(among, list) or not among or any(v not in dtype.choices for v in among):
            raise fail(f"{where}.among", f"got {among!r}; accepted is a non-empty list of {list(dtype.choices)}")
        low, high = entry["min"], entry["max"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)) or not 0 <= low <= high:
            raise fail(where, f"min {low!r} and max {high!r}: accepted are integers with 0 <= min <= max")
        out.append(Constraint(dtype.name, tuple(among), low, high))
    return tuple(out)


def _family(network: Any, fail: Callable[[str, str], SpaceError]) -> NetworkFamily:
    """The family ``network:`` names; refused unless it has decisions to search (a standard cell has none)."""
    accepted = f"accepted are {searchable_families()} or the dotted path of a NetworkFamily subclass"
    if not isinstance(network, str) or ("." not in network and network not in searchable_families()):
        raise fail("network", f"got {network!r}; {accepted}")
    try:
        family = family_of(network)
    except FamilyError as exc:
        raise fail("network", f"{exc.reason}; {accepted}") from None
    if not family.searchable:
        raise fail("network", f"got {network!r}, a family without decisions to search; {accepted}")
    return family
