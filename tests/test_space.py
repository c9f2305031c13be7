"""Search spaces: shipped spaces decode every sequence into a network that runs; bad spaces are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from nasrl.controller.policy import TokenSpec
from nasrl.controller.random_search import RandomPolicy
from nasrl.controller.weight_sharing import sample_architecture
from nasrl.env.childnet import ChildNetEnv
from nasrl.env.evaluators.synthetic import TokenMatchEvaluator
from nasrl.env.spaces.networks import build_network
from nasrl.env.spaces.sampling import random_tokens, sample_distinct
from nasrl.env.spaces.space import SHIPPED_SPACES, SpaceError, load_space, shipped_spaces

INPUTS = {"cnn1d": [(1, 40), (1, 8, 8)], "cnn2d": [(3, 16, 16), (1, 8, 8)], "mlp": [(1, 40), (3, 8, 8)]}


@pytest.mark.parametrize("name", ["cnn1d", "cnn2d", "mlp"])
def test_random_sequences_build_networks_that_run_forward_and_backward(name: str) -> None:
    space = load_space(name)
    rng = np.random.default_rng(0)
    for shape in INPUTS[space.network]:
        for _ in range(15):
            arch = space.decode(random_tokens(space, rng))
            net = build_network(arch, shape, num_classes=10)
            out = net(torch.randn(4, *shape))
            assert out.shape == (4, 10)
            out.sum().backward()
            assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_every_shipped_space_file_loads_and_is_large() -> None:
    names = shipped_spaces()
    assert {"cnn1d", "cnn2d", "mlp"} <= set(names)
    for name in names:
        space = load_space(name)
        assert space.size() > 1000
        # check_env samples actions without a mask: the first decision must accept all K actions, except where
        # the contract is checked otherwise: TransNAS-Bench-101's macro space (depths 4 to 6, module codes 1 to
        # 4; tests/test_table.py seeds its check) and ENAS's 12-node cell (4 activations, K = 11; tests/test_lm.py
        # steps Gymnasium's checks with masked actions)
        if name in ("transnas101_macro", "rnn_cell"):
            continue
        first = space.decision_types[space.next_decision([]).type_index]
        assert len(first.choices) == space.num_actions


def test_zoph_le_skip_connections_decode_into_inputs() -> None:
    space = load_space("cnn1d")
    assert space.variable_depth and space.skip_connections
    # depth 3: layer 1 asks about layer 0; layer 2 about 0 and 1
    layout = space.layout(3)
    skips = [(d.layer, d.source) for d in layout if space.decision_types[d.type_index].kind == "skip"]
    assert skips == [(1, 0), (2, 0), (2, 1)]
    tokens = []
    for d in layout:
        kind = space.decision_types[d.type_index]
        tokens.append(2 if kind.name == "depth" else (1 if (d.layer, d.source) == (2, 0) else 0))
    arch = space.decode(tokens)
    assert arch.inputs == [(), (), (0,)]  # a layer fed by nothing reads the network input
    net = build_network(arch, (1, 40), 10)
    assert net.leaves == [1, 2]  # outputs that feed nothing go to the classifier


def test_cnn2d_is_the_zoph_le_space() -> None:
    space = load_space("cnn2d")
    choices = {d.name: list(d.choices) for d in space.layer_decisions}
    assert choices["filter_height"] == choices["filter_width"] == [1, 3, 5, 7]
    assert choices["filters"] == [24, 36, 48, 64]


def test_mlp_depth_is_searched_with_units() -> None:
    space = load_space("mlp")
    assert space.depths == (1, 2, 3, 4, 5)
    assert len(space.decode([0, 2, 1]).layers) == 1
    assert len(space.decode([4] + [0, 0] * 5).layers) == 5


@pytest.mark.parametrize(
    ("change", "key", "accepted"),
    [
        (lambda s: s["layer"][0].update(choices=[]), "layer[0].choices", "non-empty list"),
        (lambda s: s["layer"][3].update(choices=["relu", "swishy"]), "layer[3].choices", "relu"),
        (lambda s: s["layer"].append({"name": "filters", "choices": [8]}), "layer[4].name", "duplicate"),
        (lambda s: s.update(depth=0), "depth", "positive integer"),
        (lambda s: s.update(depth=[]), "depth", "non-empty list"),
        (lambda s: s.update(layer=[]), "layer", "non-empty list"),
        (lambda s: s.update(network="transformer"), "network", "cnn1d"),
        (lambda s: s["layer"][0].update(name="neurons"), "layer[0].name", "filters"),
        (lambda s: s.update(colour="red"), "colour", "accepted keys"),
    ],
)
def test_malformed_space_is_refused_naming_file_key_and_accepted(tmp_path, change, key, accepted) -> None:
    data = yaml.safe_load((SHIPPED_SPACES / "cnn1d.yaml").read_text())
    change(data)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpaceError) as err:
        load_space(path)
    message = str(err.value)
    assert str(path) in message and f"'{key}'" in message and accepted in message


def test_unknown_space_name_lists_the_known_ones() -> None:
    with pytest.raises(SpaceError, match=r"unknown search space 'cnn3d'.*cnn1d"):
        load_space("cnn3d")


def test_a_folder_named_like_a_space_does_not_hide_the_space(tmp_path, monkeypatch) -> None:
    (tmp_path / "cnn1d").mkdir()  # e.g. a run folder: hydra.run.dir=cnn1d
    monkeypatch.chdir(tmp_path)
    assert load_space("cnn1d") == load_space(SHIPPED_SPACES / "cnn1d.yaml")


def test_decode_refuses_incomplete_too_long_and_out_of_range_sequences() -> None:
    space = load_space("mlp")
    with pytest.raises(ValueError, match="incomplete"):
        space.decode([1, 0, 0])
    with pytest.raises(ValueError, match="too long"):
        space.decode([0, 0, 0, 1])
    with pytest.raises(ValueError, match=r"decision 'units' \(valid: 0..4\)"):
        space.decode([0, 7, 0])


@pytest.mark.parametrize("name", ["cnn1d", "rnn_cell"])
def test_sample_distinct_draws_what_random_search_proposes_first(name: str) -> None:
    """``sample_distinct`` with a seed gives the distinct architectures that ``controller=random`` with that seed
    samples through the environment's action masks, in that order (the experiments' architecture sets)."""
    space = load_space(name)
    env = ChildNetEnv(space=name, evaluator=TokenMatchEvaluator(()))  # only the token protocol is used
    policy = RandomPolicy(TokenSpec.from_env(env), seed=7)
    env.reset(seed=7)
    through_env: dict[tuple[int, ...], None] = {}
    while len(through_env) < 30:
        through_env.setdefault(sample_architecture(env, policy).tokens, None)
    archs = sample_distinct(space, 30, 7)
    assert [a.tokens for a in archs] == list(through_env)
    assert archs == sample_distinct(space, 30, np.random.default_rng(7))
    with pytest.raises(ValueError, match=r"count must be an integer from 0 to the space's 32 architectures, got 33"):
        sample_distinct(load_space({"name": "tiny", "network": "mlp", "depth": 5, "layer": [
            {"name": "units", "choices": [8, 16]}]}), 33, 0)  # fmt: skip
