"""nasrl environments: ``import env`` registers them with Gymnasium.

- ``nasrl/ChildNet-v0``: each step emits one layer hyperparameter; the last step trains the child
  network and rewards its validation accuracy (:class:`env.childnet.ChildNetEnv`).
"""

from gymnasium.envs.registration import register, registry

from env.childnet import ChildNetEnv
from env.evaluation import ChildTrainer, EvalResult, TokenMatchEvaluator
from env.space import Architecture, SearchSpace, SpaceError, load_space

if "nasrl/ChildNet-v0" not in registry:
    register(id="nasrl/ChildNet-v0", entry_point="env.childnet:ChildNetEnv")

__all__ = [
    "Architecture",
    "ChildNetEnv",
    "ChildTrainer",
    "EvalResult",
    "SearchSpace",
    "SpaceError",
    "TokenMatchEvaluator",
    "load_space",
]
