"""Typed configs: the schema that every YAML file in ``conf/`` is merged onto.

Hydra structured configs (dataclasses in Hydra's ConfigStore), so a wrong type or an unknown key stops a
command while its config is composed, before anything runs. Each YAML file starts from one of the
``base_*`` schemas below (its ``defaults`` list) and keeps only its comments and what differs.

The schema of a class that Hydra builds (a ``_target_``: policies, environments, evaluators) is read off
its constructor by :func:`schema_of`: names, types and defaults live once, in the signature, so the
Python API and the command line cannot disagree. The same goes for a class of the user's: when the command
line sets ``PATH._target_=CLASS``, :func:`store_target` makes CLASS's constructor the schema of the node at PATH
(``scripts/app.py`` ``retarget`` rewrites the command line to compose it). The sections of the entry points
themselves (``search``, ``benchmark``, ``retrain``) are plain dataclasses here.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Union

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from nasrl.env.evaluators.base import require_positive
from nasrl.env.evaluators.child_trainer import OPTIMIZERS, SCHEDULES
from nasrl.env.evaluators.device import resolve_device
from nasrl.env.evaluators.lm import LM_OPTIMIZERS

PRIMITIVES = (int, float, bool, str)


def _config_type(hint: Any) -> Any:
    """The OmegaConf field type for a signature's type hint: primitives, Optional and lists of them are
    checked; anything else (paths, objects, unions of several kinds) is Any, left to the constructor."""
    if hint in PRIMITIVES:
        return hint
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            inner = _config_type(rest[0])
            return Any if inner is Any else inner | None
        return Any
    if origin in (list, tuple, collections.abc.Sequence):
        item = args[0] if args else Any
        return list[item] if item in PRIMITIVES else Any  # type: ignore[valid-type]
    return Any


def schema_of(
    target: Any,
    *,
    exclude: tuple[str, ...] = (),
    types_: dict[str, Any] | None = None,
    with_target: bool = True,
) -> type:
    """A dataclass whose fields are the keyword parameters of ``target`` (a class or function), with their
    defaults, and ``_target_`` naming it. ``types_`` replaces the type (and default) of some fields:
    ``{"dataset": DatasetConfig}``, ``{"table": (str, MISSING)}``, or ``{"evaluator": (Any, TrainerConfig)}``
    (a field of type Any whose default is a node of that schema)."""
    function = target.__init__ if inspect.isclass(target) else target
    hints = typing.get_type_hints(function)
    fields: list[tuple[str, Any, Any]] = []
    if with_target:
        fields.append(("_target_", str, field(default=f"{target.__module__}.{target.__qualname__}")))
    parameters = dict(inspect.signature(function).parameters)
    passes_on = any(p.kind == p.VAR_KEYWORD for p in parameters.values())
    for base in target.__mro__[1:] if inspect.isclass(target) else ():
        if not passes_on or base is object:
            break
        # a subclass passing **kwargs on to its base: the base's keywords are settings too
        base_parameters = inspect.signature(base.__init__).parameters  # type: ignore[misc]
        for name, parameter in base_parameters.items():
            parameters.setdefault(name, parameter)
        hints = typing.get_type_hints(base.__init__) | hints  # type: ignore[misc]
        passes_on = any(p.kind == p.VAR_KEYWORD for p in base_parameters.values())
    for name, parameter in parameters.items():
        if name in ("self", *exclude) or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        default = MISSING if parameter.default is inspect.Parameter.empty else parameter.default
        kind = _config_type(hints.get(name, Any))
        override = (types_ or {}).get(name)
        if isinstance(override, tuple):
            kind, default = override
            if dataclasses.is_dataclass(default):  # a typed node under a field of another type (Any)
                fields.append((name, kind, field(default_factory=default)))  # type: ignore[arg-type]
                continue
        elif dataclasses.is_dataclass(override):
            kind, default = override, None
        elif override is not None:
            kind = override
        if dataclasses.is_dataclass(kind) and default is None:
            fields.append((name, kind, field(default_factory=kind)))  # type: ignore[arg-type]
        elif isinstance(default, (list, tuple, dict)):
            value: Any = list(default) if isinstance(default, tuple) else default
            fields.append((name, kind, field(default_factory=_constant(value))))
        else:
            fields.append((name, kind, field(default=default)))
    return dataclasses.make_dataclass(f"{target.__name__}Config", fields)


def _constant(value: Any) -> Any:
    """A default factory for a mutable default (a dataclass field cannot hold a list itself)."""
    return lambda: value


# --- the sections of the entry points ---------------------------------------------------------------------


@dataclass
class RayConfig:
    address: str | None = None  # null: start a local Ray; auto: join this node's cluster; ray://HOST:10001
    num_cpus: int | None = None  # CPUs of a local Ray (null: all of this machine)
    cpus_per_child: int = 1  # CPUs (and torch threads) each child asks for
    gpus_per_child: float = 0  # GPUs each child asks for (0.25: four share one); > 0 with env.evaluator.device=cuda


@dataclass
class SearchConfig:
    budget: int = 80  # distinct architectures to evaluate (a re-sampled one reuses its result, does not count)
    max_episodes: int = 800  # cap on episodes, reused ones included, so a converged policy cannot loop forever
    max_consecutive_failures: int = 20  # stop when this many children in a row fail (NaN loss, exceptions)
    max_minutes: float | None = 12.0  # wall-clock cap over all sessions of the run, checked between rounds
    progress: bool = True  # progress bar on stderr
    workers: int = 1  # children trained at once (the controller proposes a round of them)
    backend: str = "local"  # local: worker processes on this machine; ray: Ray tasks
    max_retries: int = 2  # a child whose worker process dies is retried this often, then recorded as failed
    ray: RayConfig = field(default_factory=RayConfig)  # the Ray cluster and each child's share of it (backend=ray)
    mode: str = "rounds"  # rounds: feedback per round of proposals; async: a new child whenever a worker is free
    completion_order: str | None = None  # async: replay a run's completions.txt (a run folder or the file)


@dataclass
class TrainConfig:
    """``conf/config.yaml``: ``nasrl-train`` / ``scripts/train.py``."""

    controller: Any = MISSING
    env: Any = MISSING
    seed: int = 0  # seeds the controller, the environment's child seeds and every RNG
    resume: str | None = None  # a run folder to continue in place
    search: SearchConfig = field(default_factory=SearchConfig)  # the search loop: budget, caps, workers, mode


@dataclass
class BenchmarkSettings:
    # the strategies searched and compared, names under the top-level strategies (conf/benchmark.yaml also has
    # lstm_plain, the LSTM without self-imitation, which this list leaves out)
    strategies: list[str] = field(default_factory=lambda: ["lstm_gp", "lstm", "random", "evolution"])
    seeds: int = 100  # independent searches per strategy (first_seed .. first_seed + seeds - 1)
    first_seed: int = 0  # tune on other seeds (e.g. 1000) than the ones you report
    budget: int = 200  # distinct evaluations per search
    # numbers of distinct evaluations at which the summary reports the best-reward architecture so far and the
    # hypervolume (those above budget are dropped; none left: budget alone)
    report_at: list[int] = field(default_factory=lambda: [25, 50, 100, 200])
    max_episodes_factor: int = 20  # a search stops after max_episodes_factor * budget episodes
    workers: int = 2  # processes
    baseline: str = "random"  # the strategy every other one is tested against (Welch's t-test)
    published: dict[str, Any] = field(default_factory=dict)  # published numbers shown beside ours
    # reference point of the hypervolume of each search's (first reported column, params) front: an accuracy in
    # the column's unit (percent) and a parameter count; default: 0 % and the largest NAS-Bench-201 cell's network
    # (all nor_conv_3x3, 1,531,546 parameters). Reported divided by the box from it to (100 %, 0 parameters)
    hv_reference: list[float] = field(default_factory=lambda: [0.0, 1531546.0])
    # each search trains this many children at once on a virtual clock (VirtualClockRunner), their durations
    # simulated (SimulatedDurations: flops or mnist1d); 1 with mode=rounds: one after another, no clock
    simulated_workers: int = 1
    mode: str = "rounds"  # search.mode of each search: rounds or async
    # the children's simulated training times, with simulated_workers > 1 or mode=async: flops (a cost model of
    # the cell's FLOPs) or mnist1d (child training times measured on MNIST-1D, drawn); see SimulatedDurations
    durations: str = "flops"


@dataclass
class BenchmarkConfig:
    """``conf/benchmark.yaml``: ``nasrl-benchmark`` / ``scripts/benchmark.py``."""

    env: Any = MISSING
    # NAME: a controller config per strategy (conf/benchmark.yaml: lstm, lstm_gp, random, evolution, lstm_plain);
    # set their knobs there (strategies.lstm.lr=0.01) or add one (+strategies.mine._target_=my_pkg.MyPolicy)
    strategies: dict[str, Any] = field(default_factory=dict)
    # the comparison: which strategies, how many seeds, the budget, what is reported (BenchmarkSettings)
    benchmark: BenchmarkSettings = field(default_factory=BenchmarkSettings)


# --- nasrl-retrain's recipes (conf/retrain.yaml) -----------------------------------------------------------


@dataclass
class Recipe:
    """How the final model is trained (``conf/retrain.yaml``, group ``retrain``)."""

    epochs: int = 100  # passes over the training and validation splits together; tested after each
    batch_size: int = 128  # examples per optimizer step
    optimizer: str = "adamw"  # adam, adamw or sgd (Nesterov momentum 0.9)
    lr: float = 0.01  # the learning rate: the peak of the one-cycle schedule (cosine: its start; constant: its value)
    weight_decay: float = 0.05  # the optimizer's (decoupled for adamw; an L2 term in the gradient for adam, sgd)
    # the learning rate over all epochs' steps: onecycle (torch's OneCycleLR: up from lr / 25 over the first 30%,
    # then down to lr / 25 / 1e4), cosine (from lr down to 0) or constant, as env.evaluator.schedule
    schedule: str = "onecycle"
    label_smoothing: float = 0.0  # of the cross-entropy's targets, in [0, 1); 0: none
    num_threads: int | None = None  # torch threads; null: torch's default
    device: str = "auto"  # auto: the first GPU if torch sees one, else the CPU; cpu, cuda, cuda:N
    # mixed precision on CUDA: bfloat16 autocast, or float16 with loss scaling on GPUs without bfloat16; ignored
    # on the CPU
    amp: bool = False

    def __post_init__(self) -> None:
        require_positive({"epochs": self.epochs, "batch_size": self.batch_size}, "retrain.")
        _check_device(self, "retrain")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"retrain.optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"retrain.schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if not self.lr > 0:
            raise ValueError(f"retrain.lr must be positive, got {self.lr!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"retrain.label_smoothing must be in [0, 1), got {self.label_smoothing!r}")


def _check_device(recipe: Any, section: str) -> None:
    """``device`` must name a device this machine has (a one-line error naming the key, value and choices)."""
    try:
        resolve_device(recipe.device)
    except ValueError as exc:
        raise ValueError(f"{section}.{exc}") from None


@dataclass
class LMRecipe:
    """How a recurrent cell is retrained as a language model (``conf/retrain.yaml``, group ``lm``).

    ``params``: the parameter count every cell is sized to (the hidden size is searched for it), so
    cells compare at equal parameters; null uses ``hidden_size`` as it is."""

    epochs: int = 4  # passes over the training and validation tokens together; tested after each
    # the parameter count every cell is sized to (its hidden size is searched for it), so cells compare at equal
    # parameters; at least 1000; null: hidden_size as it is
    params: int | None = 500000
    hidden_size: int = 128  # units of each cell and size of the token embedding; used only with params=null
    num_layers: int = 1  # recurrent cells stacked, each the found cell
    batch_size: int = 32  # parallel token streams
    bptt: int = 35  # tokens per window of truncated backpropagation through time (and per test window)
    optimizer: str = "adam"  # adam or sgd (plain SGD, without momentum)
    lr: float = 2e-3  # the initial learning rate, annealed to 0 by a cosine over all epochs' steps
    dropout: float = 0.2  # on the embedding and on the last cell's outputs, in [0, 1)
    grad_clip: float = 0.25  # the gradient norm is clipped to this at every step (positive)
    num_threads: int | None = None  # torch threads; null: torch's default
    device: str = "auto"  # as Recipe.device; no amp for language models (see LanguageModelTrainer)

    def __post_init__(self) -> None:
        keys = ("epochs", "hidden_size", "num_layers", "batch_size", "bptt")
        require_positive({key: getattr(self, key) for key in keys}, "lm.")
        _check_device(self, "lm")
        if self.params is not None and self.params < 1000:
            raise ValueError(f"lm.params must be at least 1000 or null, got {self.params!r}")
        if self.optimizer not in LM_OPTIMIZERS:
            raise ValueError(f"lm.optimizer must be one of {list(LM_OPTIMIZERS)}, got {self.optimizer!r}")
        if not (self.lr > 0 and self.grad_clip > 0):
            raise ValueError(f"lm.lr and lm.grad_clip must be positive, got {self.lr!r} and {self.grad_clip!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lm.dropout must be in [0, 1), got {self.dropout!r}")


@dataclass
class _Slot:
    """The node of a class of the user's (``env=custom``'s evaluator): only its ``_target_``, which must be set."""

    _target_: str = MISSING


# --- a _target_ of the user's, from the command line ----------------------------------------------------------

TARGET_GROUP = "target"  # option P.T: the schema of class T for the node at P (package P)
UNSET_GROUP = "target_unset"  # option K: the node K set to null, so that the next merge replaces it
GIVEN_BY_THE_SEARCH = {"controller": ("spec", "seed")}  # arguments a node's class gets from code, never a config


def store_target(path: str, target: str) -> type:
    """Make the signature of ``target`` (a dotted name of a class or function) the schema of the config node
    at ``path`` (``env.evaluator``, ``controller``), as the ``base_*`` schemas are for ours. Composing
    ``+target_unset@PARENT=KEY +target@PATH=TARGET`` then replaces the node: what was there (the old
    class's settings, its defaults and its YAML's values alike) is gone, and every later override of
    ``PATH.*`` is checked against the new class's own keywords and types. ``ValueError`` (one line) when
    ``target`` does not import or its signature cannot be read."""
    from hydra._internal.utils import _locate  # what instantiate uses; hydra.utils.get_object also logs

    try:
        obj = _locate(target)
        schema = schema_of(obj, exclude=GIVEN_BY_THE_SEARCH.get(path, ()))
    except Exception as exc:  # ImportError, AttributeError, an unreadable signature: all one message
        lines = [line for line in str(exc).splitlines() if line.strip() and not line.startswith("Error loading")]
        reason = " ".join(lines)
        raise ValueError(f"{path}._target_={target} does not import: {reason}") from None
    key = path.rpartition(".")[2]
    store = ConfigStore.instance()
    store.store(group=UNSET_GROUP, name=key, node={key: None})
    node = OmegaConf.structured(schema)
    node._target_ = target  # as the user spelled it (a re-export such as nasrl.env.ChildTrainer stays so)
    store.store(group=TARGET_GROUP, name=target, node=node)
    return schema


def register_configs() -> None:
    """Put the schemas into Hydra's ConfigStore (the entry points and tests call this before composing)."""
    from nasrl.controller.evolution import EvolutionPolicy
    from nasrl.controller.gp_filter import FilteredLSTMPolicy
    from nasrl.controller.lstm import LSTMPolicy
    from nasrl.controller.random_search import RandomPolicy
    from nasrl.env.childnet import ChildNetEnv
    from nasrl.env.evaluators.child_trainer import ChildTrainer
    from nasrl.env.evaluators.lm import LanguageModelTrainer
    from nasrl.env.evaluators.stopping import MedianStoppingRule
    from nasrl.env.evaluators.synthetic import TokenMatchEvaluator
    from nasrl.env.evaluators.weight_sharing import SharedLanguageModelTrainer, SharedWeightsTrainer
    from nasrl.env.nb201 import NASBench201Env
    from nasrl.env.rewards import CostObjective
    from nasrl.env.table import TableEnv

    # stopping: a node that exists (enabled: false), so that env.evaluator.stopping.enabled=true is one override
    stopping = schema_of(MedianStoppingRule)
    trainer = schema_of(ChildTrainer, types_={"dataset": dataset_schema(), "stopping": stopping})
    # objective: a node that exists (metric: null, accuracy alone), so env.objective.metric=params is one override
    env_common = {"space": Any, "reward_transform": str, "cache": str | None, "objective": schema_of(CostObjective)}
    policy = GIVEN_BY_THE_SEARCH["controller"]
    store = ConfigStore.instance()
    store.store(group="controller", name="base_lstm", node=schema_of(LSTMPolicy, exclude=policy))
    store.store(group="controller", name="base_lstm_gp", node=schema_of(FilteredLSTMPolicy, exclude=policy))
    store.store(group="controller", name="base_random", node=schema_of(RandomPolicy, exclude=policy))
    store.store(group="controller", name="base_evolution", node=schema_of(EvolutionPolicy, exclude=policy))

    def childnet(evaluator: type) -> type:
        """ChildNetEnv's schema with ``evaluator`` typed Any, holding the default target's typed node: its settings
        are checked against that class until a new ``_target_`` replaces the node (see ``store_target``)."""
        types_ = {**env_common, "evaluator": (Any, evaluator)}
        return schema_of(ChildNetEnv, exclude=("dataset", "training", "cost_table"), types_=types_)

    store.store(group="env", name="base_childnet", node=childnet(trainer))
    store.store(group="env", name="base_synthetic", node=childnet(schema_of(TokenMatchEvaluator)))
    store.store(group="env", name="base_custom", node=childnet(_Slot))
    nb201 = schema_of(NASBench201Env, types_={**env_common, "table": str | None, "costs": str | None})
    store.store(group="env", name="base_nb201", node=nb201)
    # reward: a column, or a list of them (a multi-task reward)
    table_types = {**env_common, "space": str | None, "table": str | None, "reward": Any, "reported": list[str] | None}
    store.store(group="env", name="base_table", node=schema_of(TableEnv, types_=table_types))
    lm_trainer = schema_of(LanguageModelTrainer, types_={"dataset": corpus_schema()})
    store.store(group="env", name="base_lm", node=childnet(lm_trainer))
    shared = schema_of(SharedWeightsTrainer, types_={"dataset": dataset_schema()})
    store.store(group="env", name="base_weight_sharing", node=childnet(shared))
    shared_lm = schema_of(SharedLanguageModelTrainer, types_={"dataset": corpus_schema()})
    store.store(group="env", name="base_lm_weight_sharing", node=childnet(shared_lm))
    store.store(name="base_train", node=TrainConfig)
    store.store(name="base_benchmark", node=BenchmarkConfig)
    store.store(name="base_retrain", node=_retrain_config(Recipe, LMRecipe))


def dataset_schema() -> type:
    """The keys of ``env.evaluator.dataset`` and of ``nasrl-retrain dataset=...``: ``load_dataset``'s."""
    from nasrl.env.evaluators.data import load_dataset

    return schema_of(load_dataset, with_target=False)


def corpus_schema() -> type:
    """The keys of ``env.evaluator.dataset`` of ``env=lm``: ``load_corpus``'s."""
    from nasrl.env.evaluators.text import load_corpus

    return schema_of(load_corpus, with_target=False)


def _retrain_config(recipe: type, lm_recipe: type) -> type:
    """``conf/retrain.yaml``: ``nasrl-retrain`` / ``scripts/retrain.py``."""
    return dataclasses.make_dataclass(
        "RetrainAppConfig",
        [
            ("arch", Any, field(default=MISSING)),  # RUN_FOLDER, RUN/best.json, RUN/history.csv:N or tokens
            ("space", str | None, field(default=None)),  # null: the search run's space (cnn1d for tokens)
            # null: the search run's data set; a mapping changes it, key by key, and is checked against
            # dataset_schema() or corpus_schema() when it is used (OmegaConf cannot merge a command-line
            # mapping into an Optional typed field that is null)
            ("dataset", Any, field(default=None)),
            ("seed", int, field(default=0)),  # seeds the weights' initialisation, the data order and every RNG
            ("retrain", recipe, field(default_factory=recipe)),  # for classifiers (every network but a recurrent cell)
            ("lm", lm_recipe, field(default_factory=lm_recipe)),  # for recurrent cells (language models)
        ],
    )
