"""Network families: a user's family plugs in by a space file alone; the registry refuses what it cannot find."""

from __future__ import annotations

import csv
import json
import re
import textwrap

import pytest
import torch
import yaml

from conftest import run_script
from nasrl.controller.monitor import architecture_figure
from nasrl.env.spaces.family import SHIPPED_FAMILIES, FamilyError, NetworkFamily, family_of, searchable_families
from nasrl.env.spaces.nb201_cell import SPACE as NB201_SPACE
from nasrl.env.spaces.networks import build_network
from nasrl.env.spaces.rnn import build_language_model
from nasrl.env.spaces.space import SpaceError, load_space, shipped_spaces
from nasrl.env.spaces.supernet import build_supernet

# A family of the user's own: gated linear layers, stacked, each with a width and a gate. Named in the space
# file by its dotted path; the module lives outside nasrl (written into tmp_path, importable via PYTHONPATH).
TOY_FAMILY = '''
import torch
from torch import nn

from nasrl.env.spaces.family import NetworkFamily, one_of, positive_int


class GatedLinear(nn.Module):
    def __init__(self, width_in, width, gate):
        super().__init__()
        self.linear = nn.Linear(width_in, width)
        self.gate = nn.Linear(width_in, width) if gate == "on" else None

    def forward(self, x):
        h = self.linear(x)
        return h * torch.sigmoid(self.gate(x)) if self.gate is not None else torch.relu(h)


class Toy(NetworkFamily):
    """Stacked gated linear layers on the flattened input."""

    decisions = {"width": positive_int(), "gate": one_of(["on", "off"])}
    required = frozenset({"width"})
    ends = ("pixels", "logits")

    def reads(self, arch, layer):
        return [layer - 1]

    def build(self, arch, input_shape, num_classes):
        width = 1
        for s in input_shape:
            width *= s
        blocks = [nn.Flatten()]
        for spec in arch.layers:
            blocks.append(GatedLinear(width, spec["width"], spec.get("gate", "off")))
            width = spec["width"]
        return nn.Sequential(*blocks, nn.Linear(width, num_classes))
'''

TOY_SPACE = {
    "name": "toy",
    "network": "toy_family_pkg.family.Toy",
    "depth": [1, 2],
    "layer": [{"name": "width", "choices": [8, 16]}, {"name": "gate", "choices": ["on", "off"]}],
}


@pytest.fixture
def toy_package(tmp_path, monkeypatch):
    """The package ``toy_family_pkg`` (outside nasrl) in ``tmp_path``, importable here; returns tmp_path."""
    pkg = tmp_path / "toy_family_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "family.py").write_text(textwrap.dedent(TOY_FAMILY))
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(TOY_SPACE, sort_keys=False))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    family_of.cache_clear()  # the next test's tmp_path holds another copy of the module
    import sys

    for name in [m for m in sys.modules if m.startswith("toy_family_pkg")]:
        del sys.modules[name]


@pytest.mark.slow  # spawns two worker processes
def test_a_users_family_is_searched_and_trained_from_the_command_line(toy_package) -> None:
    run = toy_package / "run"
    result = run_script(
        "train.py",
        "env=digits",
        f"env.space={toy_package / 'toy.yaml'}",
        "env.evaluator.epochs=1",
        "controller=random",
        "search.budget=2",
        "search.workers=2",  # children trained in spawned worker processes, which rebuild the family by its path
        "search.progress=false",
        f"hydra.run.dir={run}",
        cwd=toy_package,
        env={"PYTHONPATH": str(toy_package)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader(open(run / "history.csv")))
    trained = [r for r in rows if r["reused"] == "0"]
    assert len(trained) == 2 and all(r["failed"] == "0" for r in trained)
    assert all(0.0 < float(r["val_accuracy"]) <= 1.0 and int(r["params"]) > 0 for r in trained)
    assert all(r["architecture"].startswith("0:[width=") for r in trained)
    best = json.loads((run / "best.json").read_text())
    assert best["arch"]["network"] == "toy_family_pkg.family.Toy"


def test_a_users_family_describes_builds_and_draws_itself(toy_package) -> None:
    space = load_space(toy_package / "toy.yaml")
    arch = space.decode([1, 1, 0, 0, 1])  # two layers: width 16 gated, then width 8 plain
    assert arch.describe() == "0:[width=16 gate=on](in) 1:[width=8 gate=off](0)"
    net = build_network(arch, (1, 8, 8), 10)
    assert net(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    figure = architecture_figure(arch.to_dict(), "toy")
    texts = {t.get_text() for t in figure.axes[0].texts}
    assert {"pixels", "logits", "0: width=16 gate=on", "1: width=8 gate=off"} <= texts
    with pytest.raises(FamilyError, match=r"weight sharing supports the spaces of networks \['cnn1d', 'cnn2d', 'mlp'"):
        build_supernet(space, (1, 8, 8), 10)


def test_a_bad_value_of_a_users_decision_is_refused_in_one_line(toy_package) -> None:
    bad = {**TOY_SPACE, "layer": [{"name": "width", "choices": [8, 0]}]}
    with pytest.raises(SpaceError) as err:
        load_space(bad)
    assert str(err.value) == "<dict>: key 'layer[0].choices': bad value 0 for 'width'; accepted is a positive integer"
    with pytest.raises(SpaceError, match=r"network 'toy_family_pkg.family.Toy' accepts \['gate', 'width'\]"):
        load_space({**TOY_SPACE, "layer": [{"name": "units", "choices": [8]}]})
    with pytest.raises(SpaceError, match=r"needs the decisions \['width'\]"):
        load_space({**TOY_SPACE, "layer": [{"name": "gate", "choices": ["on"]}]})


def test_the_registry_refuses_an_unknown_family_in_one_line_naming_the_accepted_ones() -> None:
    with pytest.raises(FamilyError) as err:
        family_of("transformer")
    message = str(err.value)
    assert "\n" not in message and message.startswith("unknown network 'transformer'; accepted are ['cnn1d', ")
    assert all(name in message for name in SHIPPED_FAMILIES) and "dotted path of a NetworkFamily subclass" in message
    with pytest.raises(FamilyError, match=r"network 'no_such_pkg.Fam' cannot be imported \(No module named"):
        family_of("no_such_pkg.Fam")
    with pytest.raises(FamilyError, match=r"network 'collections.OrderedDict' is not a subclass of NetworkFamily"):
        family_of("collections.OrderedDict")


def test_a_space_names_a_family_it_can_search() -> None:
    base = {"name": "s", "depth": 2, "layer": [{"name": "units", "choices": [4]}]}
    accepted = "accepted are ['cnn1d', 'cnn2d', 'mlp', 'nb201_cell', 'rnn_cell', 'table'] or the dotted path"
    with pytest.raises(SpaceError, match=rf"key 'network': got 'transformer'; {re.escape(accepted)}"):
        load_space({**base, "network": "transformer"})
    with pytest.raises(SpaceError, match=rf"key 'network': got 'lstm'; {re.escape(accepted)}"):
        load_space({**base, "network": "lstm"})  # a standard cell: a language model to compare against, no space
    lstm = "nasrl.env.spaces.families.rnn_cell.LSTM"
    with pytest.raises(SpaceError, match=rf"key 'network': got '{lstm}', a family without decisions to search"):
        load_space({**base, "network": lstm})
    with pytest.raises(
        SpaceError, match=rf"key 'network': network 'my.Fam' cannot be imported .*; {re.escape(accepted)}"
    ):
        load_space({**base, "network": "my.Fam"})
    assert searchable_families() == ["cnn1d", "cnn2d", "mlp", "nb201_cell", "rnn_cell", "table"]


@pytest.mark.parametrize(
    ("space", "problem"),
    [
        ({"network": "cnn1d", "layer": [{"name": "filters", "choices": [8]}, {"name": "pool", "choices": ["min"]}]},
         "key 'layer[1].choices': bad value 'min' for 'pool'; accepted is one of ['none', 'max', 'avg']"),
        ({"network": "mlp", "layer": [{"name": "units", "choices": [8]}, {"name": "activation", "choices": ["cos"]}]},
         "key 'layer[1].choices': bad value 'cos' for 'activation'; accepted is one of ['relu', 'tanh', 'elu', "
         "'gelu', 'sigmoid', 'leaky_relu', 'silu', 'identity']"),
        ({"network": "rnn_cell", "node_inputs": True, "layer": [{"name": "activation", "choices": ["elu"]}]},
         "key 'layer[0].choices': bad value 'elu' for 'activation'; accepted is one of ['tanh', 'relu', 'identity', "
         "'sigmoid']"),
        ({"network": "nb201_cell", "layer": [{"name": "op", "choices": ["conv_5x5"]}]},
         "key 'layer[0].choices': bad value 'conv_5x5' for 'op'; accepted is one of ['none', 'skip_connect', "
         "'nor_conv_1x1', 'nor_conv_3x3', 'avg_pool_3x3']"),
        ({"network": "mlp", "skip_connections": True, "layer": [{"name": "units", "choices": [8]}]},
         "key 'skip_connections': skip connections are supported by the cnn1d and cnn2d networks only"),
        ({"network": "mlp", "node_inputs": True, "layer": [{"name": "units", "choices": [8]}]},
         "key 'node_inputs': network 'rnn_cell' needs node_inputs: true, and only it accepts it"),
        ({"network": "rnn_cell", "layer": [{"name": "activation", "choices": ["tanh"]}]},
         "key 'node_inputs': network 'rnn_cell' needs node_inputs: true, and only it accepts it"),
    ],
)  # fmt: skip
def test_a_shipped_familys_bad_space_is_refused_as_before(space: dict, problem: str) -> None:
    with pytest.raises(SpaceError) as err:
        load_space({"name": "s", "depth": 2, **space})
    assert str(err.value) == f"<dict>: {problem}"


SHAPES = {"cnn1d": (1, 40), "cnn2d": (1, 8, 8), "mlp": (1, 40), "nb201_cell": (3, 32, 32)}


@pytest.mark.parametrize("name", [*shipped_spaces(), "nb201"])
def test_every_shipped_space_builds_its_networks_and_supernet(name: str) -> None:
    space = load_space(NB201_SPACE if name == "nb201" else name)
    tokens: list[int] = []
    while allowed := space.allowed(tokens):
        tokens.append(allowed[-1])  # the last choice everywhere (that the constraints allow): the deepest, widest
    arch = space.decode(tokens)
    if space.network == "table":  # a row of a lookup table (env=table): no network, no supernet
        with pytest.raises(FamilyError, match="network 'table' does not build networks"):
            build_network(arch, (1, 40), 10)
        with pytest.raises(FamilyError, match="weight sharing supports the spaces of networks"):
            build_supernet(space, (1, 40), 10)
        return
    if space.family.language_model:
        model = build_language_model(arch, vocab_size=11, hidden_size=8)
        logits, _ = model(torch.zeros(4, 2, dtype=torch.long), model.initial_state(2))
        assert logits.shape == (4, 2, 11)
        supernet = build_supernet(space, (), 11, hidden_size=8)
        assert supernet(torch.zeros(4, 2, dtype=torch.long), [torch.zeros(2, 8)], arch)[0].shape == (4, 2, 11)
        return
    shape = SHAPES[space.network]
    net = build_network(arch, shape, 10).eval()
    assert net(torch.zeros(2, *shape)).shape == (2, 10)
    if space.network == "nb201_cell":  # looked up in a table: its benchmark network builds, no supernet
        with pytest.raises(FamilyError, match="weight sharing supports the spaces of networks"):
            build_supernet(space, shape, 10)
    else:
        assert build_supernet(space, shape, 10)(torch.zeros(2, *shape), arch).shape == (2, 10)


def test_every_shipped_family_is_a_network_family() -> None:
    for name in SHIPPED_FAMILIES:
        assert isinstance(family_of(name), NetworkFamily), name
    assert [n for n in SHIPPED_FAMILIES if family_of(n).language_model] == ["rnn_cell", "lstm", "gru", "rnn_tanh"]
