"""nasrl/ChildNet-v0: the Gymnasium contract, the token protocol, rewards, seeding, refusals."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import nasrl.env as nasrl_env
from conftest import chain_cnn1d_tokens
from nasrl.env import ChildNetEnv, ChildTrainer, Evaluator, TokenMatchEvaluator, load_space

FAST = {"dataset": "mnist1d", "training": {"max_steps": 30, "batch_size": 64}}


def play(e: gym.Env, tokens: list[int], seed: int | None = 0):
    obs, _ = e.reset(seed=seed)
    rewards = []
    for t in tokens:
        assert obs["action_mask"][t] == 1
        obs, r, term, trunc, info = e.step(t)
        rewards.append(r)
    assert term and not trunc
    return rewards, info


def test_import_registers_the_env_and_make_builds_it() -> None:
    assert "nasrl/ChildNet-v0" in gym.registry
    e = gym.make("nasrl/ChildNet-v0", evaluator=TokenMatchEvaluator([0]))
    assert isinstance(e.unwrapped, ChildNetEnv)
    assert e.unwrapped.space.name == "cnn1d"


def test_check_env_passes_with_a_fake_evaluator() -> None:
    check_env(gym.make("nasrl/ChildNet-v0", evaluator=TokenMatchEvaluator([1, 2, 3])).unwrapped)


def test_check_env_passes_with_the_real_evaluator() -> None:
    e = gym.make("nasrl/ChildNet-v0", **FAST)
    assert isinstance(e.unwrapped.evaluator, ChildTrainer)
    check_env(e.unwrapped)


@pytest.mark.parametrize("space", ["cnn2d", "mlp"])
def test_check_env_passes_for_the_other_spaces(space: str) -> None:
    check_env(ChildNetEnv(space=space, evaluator=TokenMatchEvaluator([0])))


def test_observation_holds_position_previous_token_and_mask() -> None:
    e = ChildNetEnv(space="mlp", evaluator=TokenMatchEvaluator([0]))
    obs, _ = e.reset(seed=0)
    assert obs["position"] == 0 and obs["prev_token"] == e.action_space.n
    assert obs["action_mask"].tolist() == [1, 1, 1, 1, 1]
    obs, *_ = e.step(1)  # depth 2
    assert obs["position"] == 1 and obs["prev_token"] == 1
    assert e.decision_types[obs["decision"]].name == "units"
    np.testing.assert_array_equal(e.action_masks(), obs["action_mask"].astype(bool))


def test_invalid_or_masked_action_is_refused_with_decision_and_range() -> None:
    e = ChildNetEnv(space="cnn1d", evaluator=TokenMatchEvaluator([0]))
    e.reset(seed=0)
    with pytest.raises(ValueError, match=r"decision 'depth'.*valid actions are 0..5"):
        e.step(6)
    for t in [0, 0, 0]:  # depth 1, filters, kernel_size
        e.step(t)
    with pytest.raises(ValueError, match=r"decision 'stride'.*valid actions are 0..1"):
        e.step(3)  # inside Discrete(6) but masked out
    with pytest.raises(ValueError, match="not an integer"):
        e.step("two")
    with pytest.raises(ValueError, match="invalid action 0.5"):
        e.step(0.5)


def test_reward_is_zero_until_the_last_step_and_info_describes_the_child() -> None:
    e = ChildNetEnv(space="mlp", evaluator=TokenMatchEvaluator([1, 2, 3]))
    rewards, info = play(e, [1, 2, 3, 0, 0])
    assert rewards[:-1] == [0.0] * 4
    assert rewards[-1] == pytest.approx(3 / 5)  # 3 of 5 positions match the target
    assert info["tokens"] == [1, 2, 3, 0, 0]
    assert info["architecture"] == "0:[units=128 activation=gelu](in) 1:[units=32 activation=relu](0)"  # stacked
    assert {"val_accuracy", "params", "train_seconds", "failed", "cached"} <= set(info)


def test_cube_reward_transform() -> None:
    e = ChildNetEnv(space="mlp", evaluator=TokenMatchEvaluator([1, 2, 3]), reward_transform="cube")
    rewards, info = play(e, [1, 2, 3, 0, 0])
    assert rewards[-1] == pytest.approx(info["val_accuracy"] ** 3)
    with pytest.raises(ValueError, match=r"unknown reward transform 'square'.*cube"):
        ChildNetEnv(space="mlp", evaluator=TokenMatchEvaluator([1]), reward_transform="square")


def test_step_after_the_end_asks_for_reset() -> None:
    e = ChildNetEnv(space="mlp", evaluator=TokenMatchEvaluator([0]))
    play(e, [0, 0, 0])
    with pytest.raises(RuntimeError, match="reset"):
        e.step(0)


def test_same_seed_gives_the_same_reward_with_real_training() -> None:
    tokens = [1, 1, 0, 2, 0]  # mlp: depth 2
    results = []
    for _ in range(2):
        e = ChildNetEnv(space="mlp", **FAST)
        results.append(play(e, tokens, seed=7)[1])
    assert results[0]["val_accuracy"] == results[1]["val_accuracy"]
    assert results[0]["child_seed"] == results[1]["child_seed"]
    assert not results[1]["cached"]  # two separate environments, two real trainings
    other = play(ChildNetEnv(space="mlp", **FAST), tokens, seed=8)[1]
    assert other["child_seed"] != results[0]["child_seed"]


def test_an_architecture_played_twice_is_not_trained_twice() -> None:
    e = ChildNetEnv(space="mlp", **FAST)
    first = play(e, [0, 1, 0], seed=3)[1]
    again = play(e, [0, 1, 0], seed=None)[1]
    assert not first["cached"] and again["cached"]
    assert again["val_accuracy"] == first["val_accuracy"]


def test_loss_that_turns_nan_is_a_recorded_failure_with_the_failure_reward() -> None:
    e = ChildNetEnv(
        space="mlp",
        dataset="digits",
        training={"optimizer": "sgd", "lr": 1e12, "max_steps": 20, "schedule": "constant"},
        failure_reward=-1.0,
    )
    rewards, info = play(e, [2, 4, 0, 4, 0, 4, 0])
    assert info["failed"] and "loss became" in info["reason"]
    assert rewards[-1] == -1.0


def test_an_evaluator_that_raises_is_a_recorded_failure() -> None:
    class Broken(Evaluator):
        def fingerprint(self) -> dict:
            return {"evaluator": "Broken"}

        def evaluate(self, arch, seed):
            raise RuntimeError("out of memory, say")

    rewards, info = play(ChildNetEnv(space="mlp", evaluator=Broken()), [0, 0, 0])
    assert info["failed"] and "out of memory" in info["reason"] and rewards[-1] == 0.0


@pytest.mark.slow
def test_default_episode_scores_well_above_chance() -> None:
    e = gym.make("nasrl/ChildNet-v0")  # defaults: cnn1d space, MNIST-1D, the default training budget
    # seed 24 draws a depth-3 network with a two-input skip (0.91 here), trained in a third of the time of
    # seed 0's six layers: the defaults are what this test checks, not how big the drawn network is
    obs, _ = e.reset(seed=24)
    rng = np.random.default_rng(24)
    done = False
    while not done:
        obs, reward, done, _, info = e.step(int(rng.choice(np.flatnonzero(obs["action_mask"]))))
    assert not info["failed"]
    assert info["val_accuracy"] > 0.3  # chance is 0.1
    assert max(len(i) for i in e.unwrapped.space.decode(info["tokens"]).inputs) == 2  # the skip is there


@pytest.mark.slow
def test_hand_picked_cnn_reaches_085_on_mnist1d_with_the_default_budget() -> None:
    space = load_space("cnn1d")
    # 0.97 here; with 64 filters 0.975 in three times the time
    layer = {"filters": 32, "kernel_size": 5, "activation": "relu"}
    tokens = chain_cnn1d_tokens(space, [{**layer, "stride": s} for s in (1, 2, 1, 2)])
    _, info = play(gym.make("nasrl/ChildNet-v0"), tokens, seed=0)
    assert info["val_accuracy"] >= 0.85, info


def test_cost_estimate_grows_with_the_network_and_draws_no_random_numbers() -> None:
    trainer = ChildTrainer(dataset="mnist1d")
    space = load_space("cnn1d")

    def chain(filters: int, depth: int):
        layer = {"filters": filters, "kernel_size": 5, "activation": "relu", "stride": 1}
        return space.decode(chain_cnn1d_tokens(space, [layer] * depth))

    torch.manual_seed(0)
    before = torch.get_rng_state()
    costs = [trainer.cost(chain(f, d)) for f, d in ((16, 1), (16, 2), (64, 2), (64, 4))]
    assert costs == sorted(costs) and costs[0] > 0 and costs[-1] > 20 * costs[0]
    assert torch.equal(torch.get_rng_state(), before)  # estimating must not shift the children's seeds


def test_env_module_exports() -> None:
    assert nasrl_env.load_space("mlp").name == "mlp"
