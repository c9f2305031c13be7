"""The fast recurrent cell (env/spaces/fast_cell.py) against the reference loop it replaces: outputs and gradients."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import run_experiment
from nasrl.env.spaces import fast_cell, rnn
from nasrl.env.spaces.rnn import MAX_STATE_NORM, build_language_model, unroll_cell, unroll_cell_reference
from nasrl.env.spaces.sampling import random_tokens
from nasrl.env.spaces.space import Architecture, load_space
from nasrl.env.spaces.supernet import RecurrentSupernet

# float32 sums in another order: outputs agree to rounding, gradients (sums over steps and nodes, with
# cancellations) to 1e-4 of each tensor's largest entry


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    atol = 1e-4 * max(1.0, float(expected.abs().max()))
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=atol, msg=lambda m: f"{what}: {m}")


def random_cells(space: str, count: int, seed: int) -> list[Architecture]:
    rng = np.random.default_rng(seed)
    s = load_space(space)
    return [s.decode(random_tokens(s, rng)) for _ in range(count)]


def cell_inputs(arch: Architecture, hidden: int, steps: int = 6, batch: int = 3, scale: float = 1.0):
    """Leaf tensors for ``unroll_cell``: projected input, h0 and one weight per node, all requiring gradients."""
    generator = torch.Generator().manual_seed(0)
    projected = torch.randn(steps, batch, 2 * hidden, generator=generator).requires_grad_()
    h0 = torch.randn(batch, hidden, generator=generator).requires_grad_()
    weights = [
        (torch.randn(hidden, 2 * hidden, generator=generator) * scale / hidden**0.5).requires_grad_()
        for _ in arch.layers
    ]
    sources = [inputs[0] if inputs else -1 for inputs in arch.inputs]
    loose_ends = [i for i in range(len(sources)) if i not in set(sources)]
    activations = [str(layer["activation"]) for layer in arch.layers]
    return projected, h0, weights, sources, activations, loose_ends


def outputs_and_gradients(unroll, projected, h0, weights, sources, activations, loose_ends):
    for t in (projected, h0, *weights):
        t.grad = None
    outputs, h = unroll(projected, h0, weights, sources, activations, loose_ends)
    # a loss that weighs every step and the last state differently, so no gradient is trivially shared
    ramp = torch.linspace(0.5, 1.5, outputs.numel()).view_as(outputs)
    loss = (outputs * ramp).square().sum() + (h * h.detach().flip(-1)).sum()
    loss.backward()
    return outputs.detach(), h.detach(), [t.grad.clone() for t in (projected, h0, *weights)]


def assert_matches_reference(args) -> None:
    fast = outputs_and_gradients(unroll_cell, *args)
    reference = outputs_and_gradients(unroll_cell_reference, *args)
    assert_close(fast[0], reference[0], "outputs")
    assert_close(fast[1], reference[1], "last state")
    names = ["projected", "h0", *(f"weight {i}" for i in range(len(fast[2]) - 2))]
    for name, a, b in zip(names, fast[2], reference[2]):
        assert_close(a, b, f"gradient of {name}")


def test_the_fast_cell_knows_every_activation_of_the_space_files() -> None:
    assert list(fast_cell.ACTIVATION_CODES) == list(rnn.CELL_ACTIVATIONS)


@pytest.mark.parametrize("space, seed", [("rnn_cell_small", 0), ("rnn_cell_small", 1), ("rnn_cell", 2)])
def test_outputs_and_gradients_equal_the_reference_on_random_cells(space: str, seed: int) -> None:
    for arch in random_cells(space, 4, seed):
        assert_matches_reference(cell_inputs(arch, hidden=8))


def test_a_twelve_node_cell_with_one_and_with_many_loose_ends_equals_the_reference() -> None:
    space = load_space("rnn_cell")
    chain = space.decode([0] + [1, 0, 2, 1, 3, 2, 0, 3, 1, 4, 2, 5, 3, 6, 0, 7, 1, 8, 2, 9, 3, 10])  # a chain: 1 end
    star = space.decode([0] + [a for node in range(1, 12) for a in (node % 4, 0)])  # all read node 0: 11 ends
    assert chain.inputs[1:] == [(i,) for i in range(11)] and star.inputs[1:] == [(0,)] * 11
    for arch in (chain, star):
        assert_matches_reference(cell_inputs(arch, hidden=6, steps=5))


def test_outputs_and_gradients_equal_the_reference_while_the_state_clip_is_active() -> None:
    arch = load_space("rnn_cell_small").decode([2, 2, 0, 1, 0, 2, 1, 1, 3])  # identity and relu: unbounded
    args = cell_inputs(arch, hidden=8, steps=8, scale=3.0)  # 20 of 24 states clipped
    outputs, _ = unroll_cell_reference(*args)
    norms = outputs.detach().norm(dim=-1)
    clipped = torch.isclose(norms, torch.tensor(MAX_STATE_NORM))
    assert clipped.any() and not clipped.all(), "the case must clip some states and not others"
    assert_matches_reference(args)


def language_model_step(model: torch.nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One loss and every parameter's gradient (the last state in the loss too, as the next window reads it)."""
    model.zero_grad()
    logits, state = model(tokens, model.initial_state(tokens.shape[1]))
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten()) + state[-1].sum()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("layers", [1, 2])
def test_a_language_model_trains_the_same_with_the_reference_cell(layers: int, monkeypatch) -> None:
    for arch in random_cells("rnn_cell", 2, seed=layers):
        torch.manual_seed(0)
        model = build_language_model(arch, vocab_size=13, hidden_size=8, num_layers=layers)
        tokens = torch.randint(13, (7, 4))
        fast = language_model_step(model, tokens)
        monkeypatch.setattr(rnn, "unroll_cell", unroll_cell_reference)
        reference = language_model_step(model, tokens)
        monkeypatch.undo()
        assert_close(fast[0], reference[0], "loss")
        for (name, _), a, b in zip(model.named_parameters(), fast[1], reference[1]):
            assert_close(a, b, f"gradient of {name}")


def test_the_supernet_sums_the_gradients_of_cells_that_share_weights(monkeypatch) -> None:
    space = load_space("rnn_cell")
    torch.manual_seed(0)
    supernet = RecurrentSupernet(space, vocab_size=11, hidden_size=6)
    cells = random_cells("rnn_cell", 3, seed=5)
    tokens = torch.randint(11, (5, 2))

    def gradients() -> dict[str, torch.Tensor]:
        supernet.zero_grad()
        for arch in cells:  # several paths through the same tensors, as one weight-sharing step takes
            logits, _ = supernet(tokens, supernet.initial_state(2), arch)
            torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten()).backward()
        return {n: p.grad.clone() for n, p in supernet.named_parameters() if p.grad is not None}

    fast = gradients()
    monkeypatch.setattr("nasrl.env.spaces.supernet.unroll_cell", unroll_cell_reference)
    reference = gradients()
    assert fast.keys() == reference.keys() and len(fast) > 3 + len(cells[0].layers)
    for name in fast:
        assert_close(fast[name], reference[name], f"gradient of {name}")


def test_the_fast_cell_is_deterministic_and_the_python_loops_equal_the_scripted_ones() -> None:
    arch = random_cells("rnn_cell", 1, seed=9)[0]
    args = cell_inputs(arch, hidden=8)
    first, second = outputs_and_gradients(unroll_cell, *args), outputs_and_gradients(unroll_cell, *args)
    assert torch.equal(first[0], second[0]) and all(torch.equal(a, b) for a, b in zip(first[2], second[2]))
    scripted_forward = fast_cell._compiled(fast_cell.cell_forward)
    assert isinstance(scripted_forward, torch.jit.ScriptFunction)  # TorchScript works in the torch we pin
    projected, h0, weights, sources, activations, loose_ends = args
    codes = [fast_cell.ACTIVATION_CODES[a] for a in activations]
    inputs = (projected.detach().transpose(1, 2).contiguous(), h0.detach().t(), [w.detach().t() for w in weights])
    plain = fast_cell.cell_forward(*inputs, sources, codes, loose_ends, MAX_STATE_NORM)
    scripted = scripted_forward(*inputs, sources, codes, loose_ends, MAX_STATE_NORM)
    (states, acts, norms), (states_s, acts_s, norms_s) = plain, scripted
    # states[-1, 1:] (the nodes of a step after the last) are never written
    assert torch.equal(states[:-1], states_s[:-1]) and torch.equal(states[-1, 0], states_s[-1, 0])
    assert torch.equal(acts, acts_s) and torch.equal(norms, norms_s)


def test_an_unknown_activation_is_refused_naming_the_accepted_ones() -> None:
    arch = random_cells("rnn_cell_small", 1, seed=0)[0]
    projected, h0, weights, sources, activations, loose_ends = cell_inputs(arch, hidden=4)
    with pytest.raises(ValueError, match=r"unknown cell activation 'elu'; accepted are \['tanh', 'relu'"):
        unroll_cell(projected, h0, weights, sources, ["elu", *activations[1:]], loose_ends)


def test_without_gradients_the_fast_cell_only_runs_forward() -> None:
    arch = random_cells("rnn_cell", 1, seed=3)[0]
    projected, h0, weights, sources, activations, loose_ends = cell_inputs(arch, hidden=8)
    with torch.no_grad():
        outputs, h = unroll_cell(projected, h0, weights, sources, activations, loose_ends)
        reference, _ = unroll_cell_reference(projected, h0, weights, sources, activations, loose_ends)
    assert outputs.grad_fn is None and h.shape == h0.shape
    assert_close(outputs, reference, "outputs")


def test_bench_cells_prints_the_table_and_writes_the_ratios(tmp_path) -> None:
    args = ["--hidden", "8", "--threads", "1", "--cells", "2", "--steps", "3", "--batch", "2", "--repeats", "1"]
    result = run_experiment("bench_cells.py", *args, "--out", "b.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| 1 | 8 | " in result.stdout and "12-node reference" in result.stdout
    (run,) = json.loads((tmp_path / "b.json").read_text())["results"]
    assert run["threads"] == 1 and run["hidden"] == 8
    assert set(run["ms"]) == {"lstm", "gru", "5-node fast", "5-node reference", "12-node fast", "12-node reference"}
    assert len(run["case_ms"]) == 2 + 2 * 2 * 2 and all(ms > 0 for ms in run["case_ms"].values())
    refused = run_experiment("bench_cells.py", "--repeats", "0", cwd=tmp_path)
    assert refused.returncode == 2 and "must be a positive integer, got 0" in refused.stderr


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_the_gpu_the_fast_cell_equals_the_reference() -> None:
    for arch in random_cells("rnn_cell", 2, seed=7):
        args = cell_inputs(arch, hidden=16)
        projected, h0, weights, *rest = args
        on_gpu = [t.detach().cuda().requires_grad_() for t in (projected, h0, *weights)]
        assert_matches_reference((on_gpu[0], on_gpu[1], on_gpu[2:], *rest))
