"""The evaluator contract (``env/evaluators/base.py``) and what the search loop needs of an environment
(``TokenEnv`` in ``env/childnet.py``): declared once, asked directly, never probed."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from conftest import play
from nasrl.controller.build import build_env
from nasrl.controller.monitor import env_hparams
from nasrl.controller.policy import TokenSpec
from nasrl.controller.random_search import RandomPolicy
from nasrl.controller.runfolder import evaluator_to_keep
from nasrl.controller.search import run_search
from nasrl.env.childnet import TOKEN_ENV_MEMBERS, ChildNetEnv, TokenEnv
from nasrl.env.evaluators.base import EvalResult, Evaluator
from nasrl.env.evaluators.synthetic import TokenMatchEvaluator
from nasrl.env.runners.durations import SimulatedDurations
from nasrl.env.runners.local import InProcessRunner, longest_first
from nasrl.env.spaces.space import Architecture, SearchSpace

ROOT = Path(__file__).resolve().parent.parent

# Where the search loop and the environment meet evaluators and environments: no probing there.
CHECKED = ["controller/*.py", "scripts/train.py", "scripts/benchmark.py", "env/childnet.py", "env/runners/*.py",
           "env/evaluators/cost.py"]  # fmt: skip
# The uses that remain, each on something that is neither an environment nor an evaluator (or the one checked
# conversion of an environment), as (file, text of the call).
ALLOWED = {
    ("controller/search.py", 'getattr(policy, "batch_size", 1)'),  # a policy's
    ("controller/episodes.py", 'getattr(self.policy, "updates", None)'),  # a policy's
    ("controller/runfolder.py", "getattr(self, f.name)"),  # a dataclass's own fields
    ("env/evaluators/cost.py", "getattr(self, key)"),  # LatencySettings' own fields
    ("env/runners/local.py", 'getattr(pool, "_broken", False)'),  # a process pool's
    ("env/runners/local.py", 'getattr(self._pool, "_processes", {})'),  # a process pool's
    ("env/childnet.py", "hasattr(base, name)"),  # token_env's message: what an environment lacks
}


def probes() -> set[tuple[str, str]]:
    found = set()
    for pattern in CHECKED:
        for path in sorted(ROOT.glob(pattern)):
            for match in re.finditer(r"\b(?:get|has)attr\([^()]*(?:\([^()]*\))?[^()]*\)", path.read_text()):
                found.add((str(path.relative_to(ROOT)), match.group()))
    return found


def test_the_search_loop_never_probes_environments_or_evaluators() -> None:
    found = probes()
    assert found, "the pattern finds nothing: the test would pass whatever the code"
    assert found - ALLOWED == set(), "ask the declared interface (Evaluator, TokenEnv) instead"


class Plain:
    """What used to pass for an evaluator: an object with evaluate and fingerprint, of no class of nasrl's."""

    def evaluate(self, arch: Architecture, seed: int) -> EvalResult:
        return EvalResult(0.5)

    def fingerprint(self) -> dict:
        return {"evaluator": "Plain"}


def test_an_evaluator_of_another_class_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError) as error:
        ChildNetEnv(space="mlp", evaluator=Plain())  # type: ignore[arg-type]
    message = str(error.value)
    assert message.startswith("env.evaluator: Plain must subclass nasrl.env.evaluators.base.Evaluator")
    assert "\n" not in message
    config = {
        "_target_": "nasrl.env.childnet.ChildNetEnv",
        "space": "mlp",
        "evaluator": {"_target_": f"{__name__}.Plain"},
    }
    with pytest.raises(ValueError, match="^env.evaluator: Plain must subclass"):  # from a config: the same line
        build_env(OmegaConf.create(config))


def test_an_environment_without_the_token_env_members_is_refused_naming_them() -> None:
    class Bare(gym.Env):
        evaluator = Plain()

    with pytest.raises(TypeError, match=r"Bare cannot be searched: it lacks \['space', 'decision_types', "):
        TokenSpec.from_env(Bare())


def test_the_members_named_in_refusals_are_the_whole_token_env() -> None:
    assert isinstance(SimpleNamespace(**dict.fromkeys(TOKEN_ENV_MEMBERS, 0)), TokenEnv)
    assert isinstance(ChildNetEnv(space="mlp", evaluator=TokenMatchEvaluator([0])), TokenEnv)


def test_the_defaults_are_an_evaluator_without_capabilities() -> None:
    class Minimal(Evaluator):
        def evaluate(self, arch: Architecture, seed: int, **round_options: Any) -> EvalResult:
            return EvalResult(0.5)

        def fingerprint(self) -> dict:
            return {"evaluator": "Minimal"}

    env = ChildNetEnv(space="mlp", evaluator=Minimal())
    assert env.cacheable and env.reward_is_accuracy and env.costs is None
    assert env_hparams(env) == {"env": "ChildNetEnv: mlp", "env.space": "mlp"}
    assert evaluator_to_keep(env.evaluator) is None and env.evaluator.round_options() == {}
    with pytest.raises(TypeError, match="Can't instantiate abstract class"):
        type("NoFingerprint", (Evaluator,), {"evaluate": Minimal.evaluate})()


class Capable(Evaluator):
    """Overrides every capability it can, so that each shows where the search uses it."""

    reward_is_accuracy = False
    input_shape = (8,)
    keeps_state = True

    def __init__(self, cacheable: bool = True) -> None:
        self._cacheable = cacheable
        self.space: SearchSpace | None = None
        self.calls: list[dict[str, Any]] = []
        self.observed: list[str] = []
        self.rounds = 0

    def fingerprint(self) -> dict:
        return {"evaluator": "Capable"}

    def evaluate(self, arch: Architecture, seed: int, **round_options: Any) -> EvalResult:
        self.calls.append(round_options)
        return EvalResult(0.5, score=float(arch.tokens[1]))

    @property
    def cacheable(self) -> bool:
        return self._cacheable

    def describe_data(self) -> str:
        return "my-data"

    def use_space(self, space: SearchSpace) -> None:
        self.space = space

    def round_options(self) -> dict[str, Any]:
        self.rounds += 1
        return {"round": self.rounds}

    def observe(self, key: str, result: EvalResult) -> None:
        self.observed.append(key)

    def state_dict(self) -> dict[str, Any]:
        return {"rounds": self.rounds}

    def build(self, arch: Architecture) -> nn.Module:
        return nn.Linear(8, 2 + arch.tokens[1])

    def cost(self, arch: Architecture) -> float:
        return float(arch.tokens[1])


@pytest.mark.parametrize("wrapped", [False, True], ids=["itself", "through SimulatedDurations"])
def test_a_users_evaluator_is_asked_for_each_capability(wrapped: bool, tmp_path: Path) -> None:
    def make(inner: Capable) -> Evaluator:
        return SimulatedDurations(inner, time_scale=0) if wrapped else inner

    inner = Capable(cacheable=False)
    env = ChildNetEnv(space="mlp", evaluator=make(inner))
    assert inner.space is env.space  # use_space
    assert not env.cacheable and not env.reward_is_accuracy  # cacheable, reward_is_accuracy
    assert env_hparams(env)["env.dataset"] == "my-data"  # describe_data
    assert evaluator_to_keep(env.evaluator) is env.evaluator  # keeps_state
    archs = [env.space.decode((0, units, 0)) for units in (1, 4, 2)]
    assert longest_first(env.evaluator, [(a, 0) for a in archs]) == [1, 2, 0]  # cost
    assert env.costs is None  # not cacheable: no result of its own to weigh against a cost
    for _ in range(2):
        reward, info = play(env, [0, 4, 0])
        assert reward == 4.0 and not info["cached"]  # EvalResult.score; not cacheable: evaluated again
    assert len(inner.calls) == 2 and len(inner.observed) == 2  # observe: every result read

    inner = Capable()
    env = ChildNetEnv(space="mlp", evaluator=make(inner))
    _, info = play(env, [0, 4, 0])
    assert info["params"] == 8 * 6 + 6 and info["flops"] == 2 * 8 * 6  # input_shape and build: costs counted
    state = run_search(env, RandomPolicy(TokenSpec.from_env(env), seed=0), budget=3, max_episodes=6,
                       runner=InProcessRunner(env.evaluator), run_dir=tmp_path)  # fmt: skip
    assert state.distinct == 3 and inner.calls[1] == {"round": 1}  # round_options, sent with a round's children
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["evaluator"] == {"rounds": inner.rounds}


def test_simulated_durations_forwards_every_capability_of_the_contract() -> None:
    """A capability added to Evaluator and forgotten in the wrapper would silently take the base's default."""
    own = {"wait"}  # the wrapper's own setting (whether its evaluate sleeps), set per instance
    capabilities = {name for name in dir(Evaluator) if not name.startswith("_")} - own
    assert capabilities <= set(vars(SimulatedDurations)), sorted(capabilities - set(vars(SimulatedDurations)))
