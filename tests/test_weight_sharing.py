"""Weight sharing (ENAS): the supernet, its evaluator, the two-phase search, derivation, resume, the command."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_lm import write_text_file

from conftest import run_experiment, run_script
from nasrl.controller.evolution import EvolutionPolicy
from nasrl.controller.lstm import LSTMPolicy
from nasrl.controller.policy import TokenSpec
from nasrl.controller.random_search import RandomPolicy
from nasrl.controller.runfolder import SearchState, read_history
from nasrl.controller.search import run_search
from nasrl.controller.weight_sharing import Derived, sample_architecture
from nasrl.env.childnet import ChildNetEnv
from nasrl.env.evaluators.base import EvalResult
from nasrl.env.evaluators.cache import EvaluationCache
from nasrl.env.evaluators.synthetic import TokenMatchEvaluator
from nasrl.env.evaluators.weight_sharing import SharedLanguageModelTrainer, SharedWeightsTrainer
from nasrl.env.spaces.networks import build_network
from nasrl.env.spaces.rnn import build_language_model
from nasrl.env.spaces.sampling import random_tokens
from nasrl.env.spaces.space import Architecture, load_space
from nasrl.env.spaces.supernet import build_supernet

TINY_MLP = {
    "name": "tiny_mlp",
    "network": "mlp",
    "depth": [1, 2],
    "layer": [{"name": "units", "choices": [8, 16]}, {"name": "activation", "choices": ["relu", "tanh"]}],
}
DIGITS = {"name": "digits", "train_limit": 256}
FAST = {"dataset": DIGITS, "epochs": 3, "shared_steps": 4, "controller_steps": 4, "derive_samples": 6}


def archs_of(space_name: str, count: int, seed: int = 0) -> list[Architecture]:
    space = load_space(space_name)
    rng = np.random.default_rng(seed)
    return [space.decode(random_tokens(space, rng)) for _ in range(count)]


def copy_into(net: torch.nn.Module, supernet: torch.nn.Module, arch: Architecture) -> None:
    """Load a stand-alone ConvChildNet with the supernet's slices for ``arch``."""
    with torch.no_grad():
        for i, (layer, inputs) in enumerate(zip(net.layers, net.inputs)):
            spec = arch.layers[i]
            kernel, own, filters = supernet._kernel(spec), supernet._own_kernel(spec), spec["filters"]
            channels = [arch.layers[j]["filters"] for j in inputs] if inputs else [net.layers[0][0].in_channels]
            parts = [
                supernet._weight(supernet.conv[supernet._conv_key(i, kernel, s)], own, filters, c)
                for s, c in zip(supernet._sources(tuple(inputs)), channels)
            ]
            layer[0].weight.copy_(torch.cat(parts, 1))
            key = supernet._bn_key(i, kernel)
            layer[1].weight.copy_(supernet.bn_weight[key][:filters])
            layer[1].bias.copy_(supernet.bn_bias[key][:filters])
        heads = [supernet.head[f"s{j}"][:, : arch.layers[j]["filters"]] for j in net.leaves]
        net.classifier.weight.copy_(torch.cat(heads, 1))
        net.classifier.bias.copy_(supernet.head_bias)


@pytest.mark.parametrize("share_kernels", [False, True])
def test_a_child_of_the_supernet_computes_its_standalone_network(share_kernels: bool) -> None:
    space = load_space("cnn1d")
    supernet = build_supernet(space, (1, 40), 10, share_kernels=share_kernels)
    x = torch.randn(8, 1, 40)
    for arch in archs_of("cnn1d", 10):
        net = build_network(arch, (1, 40), 10).train()  # batch statistics, as the supernet normalises
        copy_into(net, supernet, arch)
        assert torch.allclose(net(x), supernet(x, arch), atol=1e-5), arch.describe()
    if share_kernels:  # one tensor per (layer, source): the largest kernel's
        assert {tuple(p.shape[2:]) for p in supernet.conv.values()} == {(9,)}


def test_two_children_share_the_very_same_parameter_objects() -> None:
    supernet = build_supernet(load_space("cnn1d"), (1, 40), 10)
    candidates = [arch for arch in archs_of("cnn1d", 50) if arch.layers[0]["kernel_size"] == 3]
    a, b = candidates[0], candidates[1]
    assert a.tokens != b.tokens
    shared = [p for p in supernet.child_parameters(a) if any(p is q for q in supernet.child_parameters(b))]
    first_conv = supernet.conv[supernet._conv_key(0, (3,), 0)]
    assert any(p is first_conv for p in shared) and any(p is supernet.head_bias for p in shared)
    # and training one child moves what the other reads
    before = first_conv.detach().clone()
    supernet(torch.randn(4, 1, 40), a).sum().backward()
    torch.optim.SGD(supernet.parameters(), lr=0.1).step()
    assert not torch.equal(before, first_conv.detach())


@pytest.mark.parametrize("space_name,shape", [("cnn1d", (1, 40)), ("cnn2d", (3, 8, 8)), ("mlp", (1, 40))])
def test_only_the_chosen_parts_of_a_child_receive_gradients(space_name: str, shape: tuple) -> None:
    supernet = build_supernet(load_space(space_name), shape, 10)
    arch = archs_of(space_name, 1, seed=3)[0]
    supernet(torch.randn(4, *shape), arch).sum().backward()
    chosen = {id(p) for p in supernet.child_parameters(arch)}
    for name, p in supernet.named_parameters():
        if id(p) not in chosen:
            assert p.grad is None, f"{name} is not on the path of {arch.describe()} but got a gradient"
    width = arch.layers[0].get("filters", arch.layers[0].get("units"))
    first = supernet.child_parameters(arch)[0]  # layer 0's weight: only its first `width` rows are read
    assert first.grad is not None and first.grad[:width].abs().sum() > 0
    assert first.grad[width:].abs().sum() == 0


def test_a_space_without_shared_weights_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match="use SharedLanguageModelTrainer"):
        ChildNetEnv(space="rnn_cell", evaluator=SharedWeightsTrainer(dataset=DIGITS))
    nb201 = {"name": "cell", "network": "nb201_cell", "depth": 6, "layer": [{"name": "op", "choices": ["none"]}]}
    with pytest.raises(ValueError, match="weight sharing supports .*'nb201_cell'"):
        build_supernet(load_space(nb201), (1, 40), 10)
    with pytest.raises(ValueError, match="env.evaluator.epochs must be a positive integer, got 0"):
        SharedWeightsTrainer(dataset=DIGITS, epochs=0)


def test_shared_scores_are_never_cached_and_the_per_child_loop_refuses_them(tmp_path: Path) -> None:
    evaluator = SharedWeightsTrainer(**FAST)
    env = ChildNetEnv(space=TINY_MLP, evaluator=evaluator, cache=str(tmp_path / "cache.sqlite"))
    evaluator.start(0)
    tokens = [1, 1, 0, 0, 1]
    scores = []
    for _ in range(2):  # the same child twice: scored twice (on two validation mini-batches), never stored
        env.reset(seed=0)
        for t in tokens:
            _, reward, done, _, info = env.step(t)
        assert done and not info["cached"]
        scores.append(reward)
    assert len(env.cache) == 0
    policy = LSTMPolicy(TokenSpec.from_env(env), seed=0)
    # the driver runs ENAS's schedule for it; the asynchronous mode trains children apart from the policy, which
    # one set of weights trained in this process cannot do: refused in one line
    with pytest.raises(ValueError, match="weight sharing trains one set of weights in this process"):
        run_search(env, policy, budget=2, max_episodes=2, mode="async")


def shared_search(env: ChildNetEnv, policy: LSTMPolicy, **settings: Any) -> tuple[SearchState, Derived]:
    """``run_search`` on an environment whose evaluator shares weights (ENAS's schedule): the state and the
    derivation."""
    state = run_search(env, policy, **settings)
    return state, Derived(state.derived)


class FavouringTanh(SharedWeightsTrainer):
    """Shared weights as usual, but the controller phase rewards a first layer with tanh (a known optimum)."""

    def evaluate(self, arch: Architecture, seed: int) -> EvalResult:
        super().evaluate(arch, seed)
        return EvalResult(1.0 if arch.layers[0]["activation"] == "tanh" else 0.0)


def tanh_probability(policy: LSTMPolicy, env: ChildNetEnv) -> float:
    """The policy's probability of tanh at the first layer's activation decision, depth 1 chosen."""
    obs, _ = env.reset()
    state = policy.net.initial_state()
    for token in (0, 0):  # depth 1, units 8: then the activation decision
        step = (int(obs["decision"]), int(obs["layer"]), int(obs["source"]), int(obs["prev_token"]), (1, 1))
        policy.net.step(state, step)
        obs, *_ = env.step(token)
    step = (int(obs["decision"]), int(obs["layer"]), int(obs["source"]), int(obs["prev_token"]), (1, 1))
    logits = torch.from_numpy(policy.net.step(state, step))
    return float(policy._log_probs(logits, torch.tensor([False, False])).exp()[1])


def test_alternating_phases_raise_the_probability_of_the_choice_the_rewards_favour() -> None:
    env = ChildNetEnv(space=TINY_MLP, evaluator=FavouringTanh(**{**FAST, "epochs": 6, "controller_steps": 10}))
    policy = LSTMPolicy(TokenSpec.from_env(env), seed=0, batch_size=5, replay_top_k=0)
    before = tanh_probability(policy, env)
    state, derived = shared_search(env, policy, seed=0)
    assert state.episode == 60  # 6 epochs x 10 controller steps
    assert env.evaluator.step == 24  # 6 epochs x 4 shared steps
    assert tanh_probability(policy, env) > before + 0.2
    assert derived.candidates and all(0 <= score <= 1 for score, _ in derived.candidates)


def interrupt(evaluator: SharedWeightsTrainer | SharedLanguageModelTrainer, at_step: int) -> None:
    """Make the shared-weights step number ``at_step`` raise KeyboardInterrupt, as Ctrl-C there would."""
    train_step = evaluator.train_step

    def interrupting(arch: Architecture) -> dict:
        if evaluator.step == at_step:
            raise KeyboardInterrupt
        return train_step(arch)

    evaluator.train_step = interrupting  # type: ignore[method-assign]


def ws_search(run_dir: Path, interrupt_at: int | None = None, resume: bool = False):
    evaluator = SharedWeightsTrainer(**FAST)
    env = ChildNetEnv(space=TINY_MLP, evaluator=evaluator)
    policy = LSTMPolicy(TokenSpec.from_env(env), seed=1, batch_size=2)
    if interrupt_at is not None:
        interrupt(evaluator, interrupt_at)
    return shared_search(env, policy, seed=1, run_dir=run_dir, resume=resume), evaluator


def timeless(rows: list[dict]) -> list[dict]:
    """History rows without the seconds they took (a wall-clock measurement)."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def test_a_seed_reproduces_a_weight_sharing_search_and_resume_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    (state, derived), evaluator = ws_search(tmp_path / "once")
    (again, derived_again), _ = ws_search(tmp_path / "again")
    assert timeless(again.history) == timeless(state.history) and derived_again.candidates == derived.candidates
    with pytest.raises(KeyboardInterrupt):
        ws_search(tmp_path / "resumed", interrupt_at=6)  # in the second epoch: the first one is checkpointed
    assert len(read_history(tmp_path / "resumed")) == 4  # the first epoch's controller phase
    (resumed, derived_resumed), resumed_evaluator = ws_search(tmp_path / "resumed", resume=True)
    assert [r["reward"] for r in resumed.history] == [r["reward"] for r in state.history]
    assert timeless(resumed.history) == timeless(state.history)
    assert [a.tokens for _, a in derived_resumed.candidates] == [a.tokens for _, a in derived.candidates]
    for name, value in evaluator.state_dict()["supernet"].items():
        assert torch.equal(value, resumed_evaluator.state_dict()["supernet"][name]), name
    assert timeless(read_history(tmp_path / "resumed")) == timeless(read_history(tmp_path / "once"))
    assert json.loads((tmp_path / "resumed" / "best.json").read_text())["tokens"] == list(derived.best[1].tokens)


@pytest.mark.slow
def test_the_command_searches_with_shared_weights_and_retrain_accepts_its_best_json(tmp_path: Path) -> None:
    run = tmp_path / "run"
    settings = [f"env.evaluator.{k}={v}" for k, v in FAST.items() if k != "dataset"]
    result = run_script(
        "train.py", "env=mnist1d_ws", "env.space=mlp", "env.evaluator.dataset.name=digits",
        "env.evaluator.dataset.train_limit=256", *settings, "search.progress=false", f"hydra.run.dir={run}",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "shared-weights validation accuracy" in result.stdout and "retrain it" in result.stdout
    best = json.loads((run / "best.json").read_text())
    derived = (run / "derived.csv").read_text().splitlines()
    assert derived[1].split(",")[1] == " ".join(map(str, best["tokens"]))
    assert len(read_history(run)) == 3 * 4
    assert len(EvaluationCache(run / "cache.sqlite")) == 0  # shared-weights scores are never stored
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"shared/loss", "shared/accuracy", "shared/lr", "derive/best_shared_accuracy"} <= scalars
    assert {"search/reward", "controller/baseline"} <= scalars
    assert len(events.Scalars("shared/loss")) == 3 * 4
    out = tmp_path / "retrained"
    retrained = run_script("retrain.py", f"arch={run}", "retrain.epochs=1", f"hydra.run.dir={out}", cwd=tmp_path)
    assert retrained.returncode == 0, retrained.stderr
    assert json.loads((out / "result.json").read_text())["tokens"] == best["tokens"]
    # experiments/ws_rederive.py: the checkpoint's derivation picks the search's pick again; a shortlist trains
    again = run_experiment("ws_rederive.py", str(run), "--standalone-top", "2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    tokens = ",".join(map(str, best["tokens"]))
    assert f"tokens [{tokens}] (the search's own pick)" in again.stdout
    assert again.stdout.count("    stand-alone ") == 2 and "by stand-alone accuracy among the top 2" in again.stdout
    # --score: the search's own pick, given as its run folder, scores what the derivation gave it and ranks first
    scored = run_experiment("ws_rederive.py", str(run), "--score", str(run), cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    pick_score = re.search(r"by shared-weights score: ([\d.]+)", scored.stdout).group(1)  # type: ignore[union-attr]
    assert f"--score {run}: {pick_score}, 0 of the " in scored.stdout
    bad = run_experiment("ws_rederive.py", str(run), "--score", "[99]", cwd=tmp_path)
    assert bad.returncode == 1 and "--score [99]: " in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    refused = run_experiment("ws_rederive.py", str(run), "--samples", "0", cwd=tmp_path)
    assert refused.returncode == 2 and "--samples must be a positive integer, got 0" in refused.stderr
    not_a_run = run_experiment("ws_rederive.py", str(out), cwd=tmp_path)
    assert not_a_run.returncode == 1 and "not a finished nasrl-train run folder" in not_a_run.stderr


# --- the recurrent cell (ENAS's shared RNN) -------------------------------------------------------------


def test_a_cell_of_the_recurrent_supernet_computes_its_standalone_language_model() -> None:
    space = load_space("rnn_cell")
    supernet = build_supernet(space, (), 30, hidden_size=8)
    tokens = torch.randint(30, (6, 3))
    for arch in archs_of("rnn_cell", 5):
        model = build_language_model(arch, 30, 8)
        with torch.no_grad():
            model.embedding.weight.copy_(supernet.embedding.weight)
            model.decoder.bias.copy_(supernet.decoder_bias)
            cell = model.cells[0]
            cell.w_x.weight.copy_(supernet.w_x)
            for node, j in enumerate(supernet._sources(arch)):
                cell.w_h[node].weight.copy_(supernet.w_h[f"n{node}_s{j}"])
        expected, _ = model(tokens, model.initial_state(3))
        got, _ = supernet(tokens, supernet.initial_state(3), arch)
        assert torch.allclose(expected, got, atol=1e-5), arch.describe()
    supernet.zero_grad()
    arch = archs_of("rnn_cell", 1, seed=4)[0]
    supernet(tokens, supernet.initial_state(3), arch)[0].sum().backward()
    chosen = {id(p) for p in supernet.child_parameters(arch)}
    assert all(p.grad is None for p in supernet.parameters() if id(p) not in chosen)
    assert all(p.grad is not None for p in supernet.child_parameters(arch))


def test_a_language_model_search_with_shared_weights_runs_resumes_and_derives(tmp_path: Path) -> None:
    corpus = write_text_file(tmp_path / "corpus.txt", lines=400)
    settings = {"dataset": {"path": str(corpus), "level": "word"}, "hidden_size": 8, "batch_size": 4, "bptt": 5}
    settings |= {"val_batch_size": 2, "val_tokens": 200, "epochs": 3, "shared_steps": 3, "controller_steps": 3}
    settings |= {"derive_samples": 4}

    def search(run: Path, resume: bool = False, interrupt_at: int | None = None):
        evaluator = SharedLanguageModelTrainer(**settings)
        env = ChildNetEnv(space="rnn_cell", evaluator=evaluator)
        if interrupt_at is not None:
            interrupt(evaluator, interrupt_at)
        policy = LSTMPolicy(TokenSpec.from_env(env), seed=0, batch_size=3)
        return shared_search(env, policy, seed=0, run_dir=run, resume=resume)

    state, derived = search(tmp_path / "once")
    assert state.episode == 9 and all(r["metrics"] != "{}" for r in state.history)  # val_perplexity per row
    assert all(0 < score for score, _ in derived.candidates)
    with pytest.raises(KeyboardInterrupt):
        search(tmp_path / "resumed", interrupt_at=4)
    resumed, derived_resumed = search(tmp_path / "resumed", resume=True)
    assert timeless(resumed.history) == timeless(state.history)
    assert derived_resumed.candidates[0][0] == derived.candidates[0][0]
    with pytest.raises(ValueError, match="use SharedWeightsTrainer"):
        ChildNetEnv(space="cnn1d", evaluator=SharedLanguageModelTrainer(**settings))


@pytest.mark.parametrize("policy_class", [RandomPolicy, EvolutionPolicy])
def test_random_search_and_evolution_run_on_the_same_shared_weights(policy_class: type) -> None:
    env = ChildNetEnv(space=TINY_MLP, evaluator=SharedWeightsTrainer(**FAST))
    policy = policy_class(TokenSpec.from_env(env), seed=0)
    state, derived = shared_search(env, policy, seed=0)
    assert state.episode == 12 and env.evaluator.step == 12
    assert 1 <= len(derived.candidates) <= 6 and derived.best[0] == max(score for score, _ in derived.candidates)


def test_depth_power_draws_deep_children_as_often_as_asked_and_zero_is_uniform() -> None:
    """Random search with weight sharing trains deep layers more often with depth_power (docs/results/weight-sharing.md,
    "How well shared weights rank architectures"): depth d is drawn with probability proportional to
    d ** depth_power, the other decisions stay uniform, and depth_power=0 draws exactly what uniform random search
    drew."""
    env = ChildNetEnv(space="cnn1d", evaluator=TokenMatchEvaluator(()))
    spec = TokenSpec.from_env(env)
    env.reset(seed=0)

    def tokens_of(policy: RandomPolicy, count: int) -> np.ndarray:
        return np.array([sample_architecture(env, policy).tokens[:2] for _ in range(count)])

    class Uniform(RandomPolicy):  # random search as it was before depth_power
        def act(self, obs: dict) -> int:
            return int(self.rng.choice(np.flatnonzero(obs["action_mask"])))

    policy, reference = RandomPolicy(spec, seed=5, depth_power=0), Uniform(spec, seed=5)
    assert [sample_architecture(env, policy).tokens for _ in range(30)] == [
        sample_architecture(env, reference).tokens for _ in range(30)
    ]

    drawn = tokens_of(RandomPolicy(spec, seed=0, depth_power=1.0), 4000)
    depths = np.array([int(spec.choice_labels[0][t]) for t in drawn[:, 0]])
    shares = np.bincount(depths, minlength=7)[1:] / len(depths)
    np.testing.assert_allclose(shares, np.arange(1, 7) / 21, atol=0.025)  # 1/21 .. 6/21
    filters = np.bincount(drawn[:, 1]) / len(drawn)
    np.testing.assert_allclose(filters[filters > 0], 1 / np.count_nonzero(filters), atol=0.03)


@pytest.mark.parametrize("bad", ["deep", float("nan"), float("inf"), True])
def test_a_bad_depth_power_is_refused_by_name(bad: object) -> None:
    env = ChildNetEnv(space="cnn1d", evaluator=TokenMatchEvaluator(()))
    with pytest.raises(ValueError, match=r"controller.depth_power must be a finite number .* got"):
        RandomPolicy(TokenSpec.from_env(env), depth_power=bad)  # type: ignore[arg-type]


def test_depth_power_on_a_space_without_a_depth_decision_is_refused() -> None:
    fixed_depth = {**TINY_MLP, "depth": 2}
    env = ChildNetEnv(space=fixed_depth, evaluator=TokenMatchEvaluator(()))
    spec = TokenSpec.from_env(env)
    with pytest.raises(ValueError, match=r"depth_power=2 weights a space's depth decision, and this space has none"):
        RandomPolicy(spec, depth_power=2)
    RandomPolicy(spec, depth_power=0)  # uniform: nothing to weight, nothing to refuse


def test_shared_weights_on_cuda_without_cuda_are_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="sees no CUDA GPU; accepted here are 'auto' and 'cpu'"):
        SharedWeightsTrainer(dataset=DIGITS, device="cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_weight_sharing_search_runs_on_the_gpu() -> None:
    env = ChildNetEnv(space=TINY_MLP, evaluator=SharedWeightsTrainer(**FAST, device="cuda"))
    state, derived = shared_search(env, LSTMPolicy(TokenSpec.from_env(env), seed=0), seed=0)
    assert next(env.evaluator.supernet.parameters()).is_cuda
    assert state.episode == 12 and 0 <= derived.best[0] <= 1
    saved = env.evaluator.state_dict()["supernet"]
    assert all(v.device.type == "cpu" for v in saved.values())  # a checkpoint loads on any machine
