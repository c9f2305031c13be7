"""The LSTM with a Gaussian-process filter (controller=lstm_gp): the predictor, the plan through the environment's
steps, exact resume, and that filtering finds good architectures in fewer evaluations."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import TOY_SPACE, TOY_TARGET
from nasrl.controller.gp_filter import LENGTHS, FilteredLSTMPolicy, TokenGP
from nasrl.controller.lstm import LSTMPolicy
from nasrl.controller.policy import TokenSpec
from nasrl.controller.search import play_episode, run_search
from nasrl.env import ChildNetEnv, TokenMatchEvaluator

SYNTHETIC_TARGET = [2, 3, 1, 0, 0, 1, 4, 1, 1, 0, 0, 1, 5, 2, 0, 3]  # conf/env/synthetic.yaml: cnn1d, depth first


def toy_env(space=TOY_SPACE, target=TOY_TARGET) -> ChildNetEnv:
    return ChildNetEnv(space=space, evaluator=TokenMatchEvaluator(target))


def test_the_gp_ranks_what_it_saw_and_is_unsure_far_from_it() -> None:
    gp = TokenGP(lengths=(1.0,), noises=(0.01,))
    seen = [(0, 0, 0, 0), (0, 0, 0, 1), (1, 1, 1, 1)]
    gp.fit(seen, [0.9, 0.5, 0.1])  # warped to normal scores of the ranks: +0.97, 0, -0.97
    mean = gp.upper_bound(seen, beta=0.0)
    assert mean[0] > mean[1] > mean[2] and mean[0] == pytest.approx(0.967, abs=0.05)
    near, far = (0, 0, 1, 0), (2, 2, 2, 2)  # one token from the best; four from everything seen
    assert gp.upper_bound([near], 0.0)[0] > gp.upper_bound([far], 0.0)[0] == pytest.approx(0.0, abs=0.05)
    spread = gp.upper_bound([near, far], 1.0) - gp.upper_bound([near, far], 0.0)  # one posterior std each
    assert 0.0 < spread[0] < spread[1] <= 1.0
    gp.fit([(0, 0), (1, 1, 1)], [0.2, 0.8])  # sequences of different lengths (depths) compare too
    assert gp.upper_bound([(1, 1, 1), (0, 0)], 0.0).argmax() == 0


def test_thompson_draws_follow_the_posterior_jointly_and_a_generator_repeats_them() -> None:
    gp = TokenGP(lengths=(1.0,), noises=(0.01,))
    gp.fit([(0, 0, 0, 0), (0, 0, 0, 1), (1, 1, 1, 1)], [0.9, 0.5, 0.1])
    candidates = [(0, 0, 1, 0), (0, 0, 1, 1), (2, 2, 2, 2)]  # the first two one token apart: correlated
    draws = np.stack([gp.sample(candidates, 1.0, torch.Generator().manual_seed(s)) for s in range(3000)])
    mean, std = gp.upper_bound(candidates, 0.0), gp.upper_bound(candidates, 1.0) - gp.upper_bound(candidates, 0.0)
    np.testing.assert_allclose(draws.mean(0), mean, atol=0.06)
    np.testing.assert_allclose(draws.std(0), std, rtol=0.06)
    assert np.corrcoef(draws[:, 0], draws[:, 1])[0, 1] > 0.2  # one joint draw, not independent ones
    assert abs(np.corrcoef(draws[:, 0], draws[:, 2])[0, 1]) < 0.1
    np.testing.assert_allclose(gp.sample(candidates, 0.5, torch.Generator().manual_seed(7)) - mean,
                               0.5 * (gp.sample(candidates, 1.0, torch.Generator().manual_seed(7)) - mean))  # fmt: skip
    np.testing.assert_array_equal(gp.sample(candidates, 0.0, torch.Generator()), mean)


def test_the_batched_step_is_the_acting_step_for_each_row() -> None:
    """Candidates are decoded with ``step_batch``; it must be the network that acts (skip attention, two
    layers, masks): each row of a batch follows its own episode exactly as ``step`` does."""
    env = ChildNetEnv(space="cnn1d", evaluator=TokenMatchEvaluator(SYNTHETIC_TARGET))
    policy = LSTMPolicy(TokenSpec.from_env(env), seed=0, num_layers=2)
    episodes = []
    for seed in range(3):  # three episodes of one depth, so that they share their steps
        while True:
            policy.start_episode()
            reward, info = play_episode_with(env, policy, seed)
            steps, actions = policy._proposed.pop()
            if not episodes or actions[0] == episodes[0][1][0]:
                episodes.append((steps, actions))
                break
            seed += 100
    single = []
    for steps, _ in episodes:
        state = policy.net.initial_state()
        single.append([policy.net.step(state, step) for step in steps])
    state = policy.net.initial_state()
    for t, step in enumerate(episodes[0][0]):
        prev = np.array([steps[t][3] for steps, _ in episodes])
        batch = policy.net.step_batch(state, step[:3], prev)
        for row in range(3):
            np.testing.assert_allclose(batch[row], single[row][t], rtol=1e-5, atol=1e-6)


def play_episode_with(env: ChildNetEnv, policy: LSTMPolicy, seed: int):
    obs, _ = env.reset(seed=seed)
    done = False
    while not done:
        obs, reward, done, _, info = env.step(policy.act(obs))
    return reward, info


def test_one_candidate_is_the_plain_lstm() -> None:
    plain = run_search(toy_env(), LSTMPolicy(TokenSpec.from_env(toy_env()), seed=3), budget=10_000, max_episodes=25)
    one = FilteredLSTMPolicy(TokenSpec.from_env(toy_env()), seed=3, candidates=1, warmup=0)
    filtered = run_search(toy_env(), one, budget=10_000, max_episodes=25)
    assert [r["tokens"] for r in plain.history] == [r["tokens"] for r in filtered.history]


def test_after_the_warmup_each_proposal_is_a_new_architecture_played_through_the_environments_steps(tmp_path) -> None:
    """cnn1d decides the depth first and each depth has its own steps and masks: candidates are drawn along the
    steps the LSTM saw for their depth, and the environment checks every token against its mask. TensorBoard
    gets the kernel length of each fit."""
    env = ChildNetEnv(space="cnn1d", evaluator=TokenMatchEvaluator(SYNTHETIC_TARGET))
    policy = FilteredLSTMPolicy(TokenSpec.from_env(env), seed=0, warmup=10, candidates=8)
    plans = []
    start_episode = policy.start_episode

    def counting() -> None:
        start_episode()
        plans.append(policy._plan is not None)

    policy.start_episode = counting  # type: ignore[method-assign]
    state = run_search(env, policy, budget=40, max_episodes=200, seed=0, run_dir=tmp_path)
    assert plans[:10] == [False] * 10 and sum(plans[10:]) >= 25  # a depth not yet played can leave one unplanned
    assert len(state.history) == 40  # after the warm-up, no episode is spent on an architecture already seen
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    lengths = [event.value for event in acc.Scalars("controller/filter_length")]
    assert len(lengths) == 30 and set(lengths) <= set(LENGTHS)


def test_where_the_steps_are_not_fixed_by_the_depth_the_lstm_samples_plainly() -> None:
    env = toy_env()
    policy = FilteredLSTMPolicy(TokenSpec.from_env(env), seed=0, warmup=2)
    run_search(env, policy, budget=10_000, max_episodes=4, seed=0)  # past the warm-up: plans from now on
    policy.start_episode()
    assert policy._plan is not None
    steps, actions = policy._plan
    policy._plan = (steps[:3] + [(*steps[3][:4], (1, 0, 0, 0, 0))] + steps[4:], actions)  # step 3 will not match
    obs, _ = env.reset()
    done, played = False, []
    while not done:
        played.append(policy.step_of(obs))
        obs, reward, done, _, info = env.step(policy.act(obs))
    assert info["tokens"][:3] == actions[:3] and policy._proposed[-1][0] == played  # left the plan at step 3
    policy.end_episode(reward, info)
    policy._layouts = None  # what the LSTM records once episodes of one depth took different steps
    state = run_search(env, policy, budget=10_000, max_episodes=4, seed=1)
    assert len(state.history) == 4 and policy._plan is None


def test_the_neighbours_of_the_best_are_one_choice_away_at_the_same_depth_and_valid() -> None:
    env = ChildNetEnv(space="cnn1d", evaluator=TokenMatchEvaluator(SYNTHETIC_TARGET))
    policy = FilteredLSTMPolicy(TokenSpec.from_env(env), seed=0, warmup=1000)  # the plain LSTM, to learn layouts
    state = run_search(env, policy, budget=30, max_episodes=100, seed=0)
    tokens = tuple(int(t) for t in state.best["tokens"].split())
    neighbours = policy._one_token_away(tokens)
    assert neighbours and len({tuple(a) for _, a in neighbours}) == len(neighbours)
    for steps, actions in neighbours:
        assert actions[0] == tokens[0] and sum(a != b for a, b in zip(actions, tokens)) == 1
        reward, info = play_episode(env, None, actions)  # every choice within the environment's masks
        assert info["tokens"] == actions and [s[3] for s in steps[1:]] == actions[:-1]


def best_after(policy_class: type, seed: int, evaluations: int, **kwargs) -> float:
    env = toy_env()
    state = run_search(env, policy_class(TokenSpec.from_env(env), seed=seed, **kwargs), evaluations, 20 * evaluations)
    return max(r["reward"] for r in state.history)


def test_the_filter_finds_better_architectures_in_fewer_evaluations_than_the_plain_lstm() -> None:
    """Toy reward over 5**10 architectures (the fraction of ten tokens equal to a target), best reward after 60
    distinct evaluations, seeds 0-1, both with their defaults. Plain LSTM: 0.7, 0.6; filtered: 1.0 (the optimum)
    on each (also with ``acquisition="ucb"``); without the neighbours of the best as candidates 0.8, 0.8 (with
    warmup 10)."""
    plain = [best_after(LSTMPolicy, seed, 60) for seed in range(2)]
    filtered = [best_after(FilteredLSTMPolicy, seed, 60) for seed in range(2)]
    assert all(f > p for f, p in zip(filtered, plain)) and np.mean(filtered) >= np.mean(plain) + 0.15, (plain, filtered)


def test_the_state_dict_resumes_the_filter_exactly() -> None:
    env = toy_env()
    a = FilteredLSTMPolicy(TokenSpec.from_env(env), seed=1, warmup=5, batch_size=3)
    run_search(env, a, budget=10_000, max_episodes=13, seed=1)  # past the warm-up, one episode pending
    b = FilteredLSTMPolicy(TokenSpec.from_env(env), seed=99, warmup=5, batch_size=3)
    buffer = io.BytesIO()  # through bytes, as the checkpoint does
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b.load_state_dict(torch.load(buffer, weights_only=True))  # plain data, as the checkpoint reads it
    sa = run_search(toy_env(), a, budget=10_000, max_episodes=25, seed=1)
    sb = run_search(toy_env(), b, budget=10_000, max_episodes=25, seed=1)
    assert [r["tokens"] for r in sa.history] == [r["tokens"] for r in sb.history]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"candidates": 0}, "controller.candidates must be an integer >= 1, got 0"),
        ({"warmup": -1}, "controller.warmup must be an integer >= 0, got -1"),
        ({"beta": -0.5}, "controller.beta must be a number >= 0, got -0.5"),
        ({"acquisition": "ei"}, "controller.acquisition must be one of \\['thompson', 'ucb'\\], got 'ei'"),
        ({"length": 0.0}, "controller.length must be a positive number or null \\(chosen by the fit\\), got 0.0"),
        ({"noise": -1.0}, "controller.noise must be a positive number or null \\(chosen by the fit\\), got -1.0"),
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),  # the LSTM's own checks still apply
    ],
)
def test_bad_settings_are_refused_by_name(setting: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FilteredLSTMPolicy(TokenSpec.from_env(toy_env()), **setting)
