"""nasrl environments: ``import nasrl.env`` registers them with Gymnasium.

- ``nasrl/ChildNet-v0``: each step emits one layer hyperparameter; the last step trains the child
  network and rewards its validation accuracy (:class:`nasrl.env.childnet.ChildNetEnv`). With the
  ``rnn_cell`` space and :class:`nasrl.env.evaluators.lm.LanguageModelTrainer` it searches recurrent cells for
  language modelling, rewarded from the validation perplexity (``env=lm``).
- ``nasrl/NASBench201-v0``: the NAS-Bench-201 cell, rewarded from a lookup table
  (:class:`nasrl.env.nb201.NASBench201Env`; pass ``table=PATH``).
- ``nasrl/Table-v0``: any tabular benchmark, a space of the ``table`` family and a CSV keyed by each
  architecture's choices (:class:`nasrl.env.table.TableEnv`; TransNAS-Bench-101's two spaces ship).
"""

from gymnasium.envs.registration import register, registry

from nasrl.env.childnet import ChildNetEnv, TokenEnv
from nasrl.env.evaluators.base import EvalResult, Evaluator
from nasrl.env.evaluators.child_trainer import ChildTrainer
from nasrl.env.evaluators.lm import LanguageModelTrainer
from nasrl.env.evaluators.synthetic import TokenMatchEvaluator
from nasrl.env.spaces.space import Architecture, SearchSpace, SpaceError, load_space

if "nasrl/ChildNet-v0" not in registry:
    register(id="nasrl/ChildNet-v0", entry_point="nasrl.env.childnet:ChildNetEnv")
if "nasrl/NASBench201-v0" not in registry:
    register(id="nasrl/NASBench201-v0", entry_point="nasrl.env.nb201:NASBench201Env")
if "nasrl/Table-v0" not in registry:
    register(id="nasrl/Table-v0", entry_point="nasrl.env.table:TableEnv")

__all__ = [
    "Architecture",
    "ChildNetEnv",
    "ChildTrainer",
    "EvalResult",
    "Evaluator",
    "LanguageModelTrainer",
    "SearchSpace",
    "SpaceError",
    "TokenEnv",
    "TokenMatchEvaluator",
    "load_space",
]
