"""The weight-sharing evaluator (ENAS, Pham et al. 2018): children scored with one set of shared weights.

:class:`SharedWeightsTrainer` is an evaluator like :class:`~nasrl.env.evaluators.child_trainer.ChildTrainer` (a Hydra
``_target_`` under ``env.evaluator``), but its score of a child is the accuracy of the supernet path
``arch`` (``env/spaces/supernet.py``) on the next validation mini-batch, and that score changes as the shared
weights train: the environment does not cache it (``cacheable = False``), and it is never a result. The
search that trains the shared weights, ENAS's alternation of a shared-weights phase and a controller phase
followed by a derivation, is ``controller/weight_sharing.py``; its schedule is set here, with the weights
it schedules, so that ``env=mnist1d_ws env.evaluator.epochs=...`` is the one place to change it.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F

from nasrl.env.evaluators.base import EvalResult, Evaluator, require_positive
from nasrl.env.evaluators.data import Dataset, load_dataset
from nasrl.env.evaluators.device import resolve_device
from nasrl.env.evaluators.lm import SCORES, as_corpus, evaluate_language_model, perplexity_metrics, state_on
from nasrl.env.evaluators.text import Corpus, batchify
from nasrl.env.spaces.networks import build_network, count_parameters
from nasrl.env.spaces.rnn import build_language_model
from nasrl.env.spaces.space import Architecture, SearchSpace
from nasrl.env.spaces.supernet import build_supernet
from nasrl.env.threads import available_cores, torch_threads

OPTIMIZERS = ("sgd", "adam")


class SharedWeights(Evaluator):
    """What the weight-sharing evaluators have in common: the schedule, the shared weights' optimizer, one
    training step through a path, and the state a resumed search continues from. A subclass builds the
    supernet (``_build``), computes a mini-batch loss (``_loss``), scores children (``evaluate``, ``score``)
    and keeps its data order (``_start_data``, ``_data_state``, ``_load_data_state``)."""

    cacheable = False  # a score depends on when it was taken: the environment must not cache it
    score_label = "score"  # what score() measures, for the printout
    shares_weights = True  # nasrl-train runs controller/weight_sharing.py's schedule for this evaluator
    keeps_state = True  # a resumed search continues from the shared weights (state_dict)
    device: torch.device  # resolved from the setting in __init__

    def __init__(
        self,
        *,
        epochs: int,
        shared_steps: int | None,
        controller_steps: int,
        derive_samples: int,
        optimizer: str,
        lr: float,
        momentum: float,
        weight_decay: float,
        grad_clip: float,
        device: str,
        num_threads: int | None,
    ) -> None:
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"env.evaluator.optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
        counts: dict[str, int | None] = {"epochs": epochs, "controller_steps": controller_steps}
        counts |= {"derive_samples": derive_samples, "shared_steps": shared_steps, "num_threads": num_threads}
        require_positive(counts, "env.evaluator.", nullable=("shared_steps", "num_threads"))
        if not lr > 0:
            raise ValueError(f"env.evaluator.lr must be positive, got {lr!r}")
        self.device = resolve_device(device)
        self.epochs = epochs
        self.shared_steps = shared_steps or 1  # a subclass sets its default (one pass over its training data)
        self.controller_steps = controller_steps
        self.derive_samples = derive_samples
        self.optimizer_name = optimizer
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.grad_clip = grad_clip
        self.num_threads = num_threads
        self.space: SearchSpace | None = None
        self.supernet: torch.nn.Module | None = None
        self.step = 0
        self._params: dict[tuple[int, ...], int] = {}

    # --- to be provided by a subclass ------------------------------------------------------------------------

    def _build(self, space: SearchSpace) -> torch.nn.Module:
        raise NotImplementedError

    def _standalone(self, arch: Architecture) -> torch.nn.Module:
        """The stand-alone child of ``arch`` (what retraining trains), to count its parameters."""
        raise NotImplementedError

    def _loss(self, net: torch.nn.Module, arch: Architecture) -> tuple[torch.Tensor, float]:
        """The loss of ``arch`` on the next training mini-batch, and its accuracy there."""
        raise NotImplementedError

    def _start_data(self, seed: int) -> None:
        raise NotImplementedError

    def _data_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _load_data_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def evaluate(self, arch: Architecture, seed: int, **round_options: Any) -> EvalResult:
        raise NotImplementedError

    def score(self, arch: Architecture) -> float:
        """The derivation's score of ``arch`` on the validation split (higher is better)."""
        raise NotImplementedError

    # --- set-up ----------------------------------------------------------------------------------------------

    def use_space(self, space: SearchSpace) -> None:
        """Called by the environment with its space; refuses a space without shared weights at once."""
        with torch.device("meta"):  # the check, without allocating weights: they come in start
            self._build(space)
        self.space = space

    def start(self, seed: int) -> None:
        """Fresh shared weights, optimizer and data order, all from ``seed`` (a resumed search then loads its
        checkpoint over them with :meth:`load_state_dict`)."""
        if self.space is None:
            raise RuntimeError(f"{type(self).__name__}.start before use_space: build it through ChildNetEnv")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.supernet = self._build(self.space).to(self.device)
        params = list(self.supernet.parameters())
        if self.optimizer_name == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=self.lr, momentum=self.momentum, nesterov=self.momentum > 0, weight_decay=self.weight_decay
            )
        else:
            self.optimizer = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, self.epochs * self.shared_steps)
        self._start_data(seed)
        self.step = 0

    def threads(self) -> int:
        return self.num_threads or available_cores()

    # --- the shared-weights phase ----------------------------------------------------------------------------

    def train_step(self, arch: Architecture) -> dict[str, float]:
        """One step of the shared weights through the path ``arch`` on the next training mini-batch. Returns the
        loss, the mini-batch accuracy and the learning rate; a non-finite loss leaves the weights untouched."""
        net = self._net()
        lr = float(self.schedule.get_last_lr()[0])
        with torch_threads(self.threads()):
            net.train()
            loss, accuracy = self._loss(net, arch)
            if not torch.isfinite(loss):
                return {"loss": float(loss), "accuracy": 0.0, "lr": lr}
            self.optimizer.zero_grad(set_to_none=True)  # unused tensors keep grad None: the optimizer skips them
            loss.backward()
            if self.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(net.parameters(), self.grad_clip)
            self.optimizer.step()
            self.schedule.step()
        self.step += 1
        return {"loss": float(loss.detach()), "accuracy": accuracy, "lr": lr}

    def standalone_params(self, arch: Architecture) -> int:
        """Parameters of the stand-alone child (what retraining trains), counted once per architecture."""
        if arch.tokens not in self._params:
            with torch.random.fork_rng(devices=[]):
                self._params[arch.tokens] = count_parameters(self._standalone(arch))
        return self._params[arch.tokens]

    def _net(self) -> torch.nn.Module:
        if self.supernet is None:
            raise RuntimeError("the shared weights are not started: call start(seed) first")
        return self.supernet

    # --- protocol --------------------------------------------------------------------------------------------

    def fingerprint(self) -> dict[str, Any]:
        keys = ["epochs", "shared_steps", "controller_steps", "derive_samples"]
        keys += ["optimizer_name", "lr", "momentum", "weight_decay", "grad_clip"]
        return {"evaluator": type(self).__name__, **{k: getattr(self, k) for k in keys}}

    def state_dict(self) -> dict[str, Any]:
        """Shared weights, optimizer, schedule and data order: what a resumed search continues from."""
        return {
            "supernet": {k: v.cpu() for k, v in self._net().state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "data": self._data_state(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._net().load_state_dict(state["supernet"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self._load_data_state(state["data"])
        self.step = state["step"]


class SharedWeightsTrainer(SharedWeights):
    """Shared weights for every child of a ``cnn1d``, ``cnn2d`` or ``mlp`` space, trained one sampled path per
    mini-batch; a child's score is its accuracy with them on the next validation mini-batch.

    Args:
        dataset: data set name or ``load_dataset`` keyword arguments (as for ``ChildTrainer``).
        epochs: alternations of the two phases (ENAS: 150 on CIFAR-10; 60 here keeps a search of MNIST-1D
            within 3 minutes on 2 cores, docs/results/weight-sharing.md).
        shared_steps: mini-batches of the shared-weights phase per epoch, one sampled child each
            (null: one pass over the training split).
        controller_steps: children scored (and learnt from) per controller phase, each on one
            validation mini-batch (ENAS: 50 updates x 20 children).
        derive_samples: children sampled from the final policy and scored on the whole validation split;
            the best is the search's result, to be retrained from scratch.
        batch_size: training mini-batch.
        val_batch_size: the controller phase's validation mini-batch: the examples each child is scored on.
        optimizer, lr, momentum, weight_decay, grad_clip: the shared weights' optimizer (ENAS: SGD with
            Nesterov momentum, lr 0.05 annealed by a cosine over the whole search, weight decay 1e-4,
            gradient norm clipped); the cosine runs over ``epochs * shared_steps`` steps. ``optimizer``: ``sgd``
            (Nesterov momentum when ``momentum`` > 0) or ``adam`` (``momentum`` unused); ``grad_clip`` 0: no
            clipping.
        share_kernels: a convolution's kernel sizes share the largest one's tensor (``env/spaces/supernet.py``): on
            by default, because it lifts the rank correlation with stand-alone training from about 0 to about
            0.4 on MNIST-1D (docs/results/weight-sharing.md).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (``env/evaluators/device.py``).
        num_threads: torch threads for the shared weights (null: all this process may use). One by default:
            a step on two threads is 10% faster on an idle 2-core machine and many times slower on a busy one
            (the same trade-off as ``ChildTrainer.num_threads``).
    """

    score_label = "validation accuracy"

    def __init__(
        self,
        dataset: Dataset | str | dict[str, Any] = "mnist1d",
        epochs: int = 60,
        shared_steps: int | None = None,
        controller_steps: int = 20,
        derive_samples: int = 100,
        batch_size: int = 128,
        val_batch_size: int = 128,
        optimizer: str = "sgd",
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        grad_clip: float = 5.0,
        share_kernels: bool = True,
        device: str = "cpu",
        num_threads: int | None = 1,
    ) -> None:
        super().__init__(
            epochs=epochs, shared_steps=shared_steps, controller_steps=controller_steps,
            derive_samples=derive_samples, optimizer=optimizer, lr=lr, momentum=momentum,
            weight_decay=weight_decay, grad_clip=grad_clip, device=device, num_threads=num_threads,
        )  # fmt: skip
        self.share_kernels = share_kernels
        require_positive({"batch_size": batch_size, "val_batch_size": val_batch_size}, "env.evaluator.")
        if isinstance(dataset, str):
            dataset = load_dataset(dataset)
        elif isinstance(dataset, dict):
            dataset = load_dataset(**dataset)
        self.dataset = dataset
        self.shared_steps = shared_steps or math.ceil(len(dataset.y_train) / batch_size)
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size

    def describe_data(self) -> str:
        return self.dataset.name

    def _build(self, space: SearchSpace) -> torch.nn.Module:
        if space.family.language_model:
            raise ValueError(
                f"space '{space.name}' holds recurrent cells, whose shared weights are a language model's: use "
                "SharedLanguageModelTrainer (env=lm_ws); SharedWeightsTrainer shares cnn1d, cnn2d and mlp spaces"
            )
        return build_supernet(
            space, self.dataset.input_shape, self.dataset.num_classes, share_kernels=self.share_kernels
        )

    def _standalone(self, arch: Architecture) -> torch.nn.Module:
        return build_network(arch, self.dataset.input_shape, self.dataset.num_classes)

    def _start_data(self, seed: int) -> None:
        d = self.dataset
        self._x_train, self._y_train = d.x_train.to(self.device), d.y_train.to(self.device)  # moved once
        self._x_val, self._y_val = d.x_val.to(self.device), d.y_val.to(self.device)
        self._train_order = _Batches(len(d.y_train), self.batch_size, seed + 1)
        self._val_order = _Batches(len(d.y_val), self.val_batch_size, seed + 2)

    def _data_state(self) -> dict[str, Any]:
        return {"train_order": self._train_order.state_dict(), "val_order": self._val_order.state_dict()}

    def _load_data_state(self, state: dict[str, Any]) -> None:
        self._train_order.load_state_dict(state["train_order"])
        self._val_order.load_state_dict(state["val_order"])

    def _loss(self, net: torch.nn.Module, arch: Architecture) -> tuple[torch.Tensor, float]:
        idx = self._train_order.next().to(self.device)
        logits = net(self._x_train[idx], arch)
        accuracy = float((logits.argmax(1) == self._y_train[idx]).float().mean())
        return F.cross_entropy(logits, self._y_train[idx]), accuracy

    def evaluate(self, arch: Architecture, seed: int, **round_options: Any) -> EvalResult:
        """The controller phase's reward: accuracy of ``arch`` with the shared weights on the next validation
        mini-batch (``seed`` is not used: the mini-batch order is the search's)."""
        start = time.perf_counter()
        idx = self._val_order.next().to(self.device)
        accuracy = self._correct(arch, self._x_val[idx], self._y_val[idx]) / len(idx)
        return EvalResult(accuracy, self.standalone_params(arch), time.perf_counter() - start)

    def score(self, arch: Architecture) -> float:
        """Accuracy of ``arch`` with the shared weights on the whole validation split (the derivation's score)."""
        x, y = self._x_val, self._y_val
        correct = sum(self._correct(arch, x[i : i + 1024], y[i : i + 1024]) for i in range(0, len(y), 1024))
        return correct / len(y)

    @torch.no_grad()
    def _correct(self, arch: Architecture, x: torch.Tensor, y: torch.Tensor) -> int:
        with torch_threads(self.threads()):
            logits = self._net()(x, arch)  # batch statistics: the child's own (see env/spaces/supernet.py)
        return int((logits.argmax(1) == y).sum())

    def fingerprint(self) -> dict[str, Any]:
        d = self.dataset
        return {
            **super().fingerprint(),
            "dataset": d.name,
            "data_sizes": [len(d.y_train), len(d.y_val)],
            "batch_size": self.batch_size,
            "val_batch_size": self.val_batch_size,
            "share_kernels": self.share_kernels,
        }


class SharedLanguageModelTrainer(SharedWeights):
    """ENAS's shared recurrent cell: one language model holds every cell of an ``rnn_cell`` space
    (:class:`~nasrl.env.spaces.supernet.RecurrentSupernet`), trained with truncated backpropagation through time, one
    sampled cell per window of ``bptt`` tokens (the state carries over between windows, as in ENAS). A cell's
    reward is ``score_constant / perplexity**2`` (``score``: ``inverse_square``, Zoph & Le; ``inverse``: ENAS)
    on the next validation window of ``val_batch_size`` streams, started from a zero state so that no cell reads
    another's state; the derivation scores cells on the first ``val_tokens`` validation tokens.

    The settings of the schedule and the optimizer are those of :class:`SharedWeightsTrainer`; the model's are
    those of :class:`~nasrl.env.evaluators.lm.LanguageModelTrainer` (its defaults: Adam 2e-3, gradient norm 0.25).

    Args:
        dataset: the corpus, as for ``LanguageModelTrainer``: ``load_corpus``'s keyword arguments (the
            ``dataset.*`` settings), a path, a loaded ``Corpus``, or null (the data root's tiny-shakespeare, at
            word level).
        epochs: alternations of the shared-weights phase and the controller phase.
        shared_steps: windows of ``bptt`` tokens per shared-weights phase, one sampled cell each (null: about
            one pass over the training split, its tokens / (``batch_size`` * ``bptt``)).
        controller_steps: cells scored (and learnt from) per controller phase, each on the next validation window.
        derive_samples: cells sampled from the final policy and scored on the first ``val_tokens`` validation
            tokens; the best is the search's result, to be retrained from scratch.
        hidden_size: units of the shared cell and size of the token embedding (tied to the softmax); the
            stand-alone child whose parameters are reported has the same.
        dropout: dropout on the embedding and on the cell's outputs while the shared weights train (not when
            cells are scored).
        batch_size: parallel token streams of the shared-weights phase.
        score_constant: the constant c of the reward (``c / perplexity**2``, or ``c / perplexity``).
        optimizer: the shared weights' optimizer: ``adam`` or ``sgd`` (Nesterov momentum when ``momentum`` > 0).
        lr: the initial learning rate, annealed to 0 by a cosine over ``epochs * shared_steps`` steps.
        momentum: SGD's momentum (``optimizer=sgd`` only; 0: plain SGD).
        weight_decay: the optimizer's weight decay (an L2 term added to the gradient); 0: none.
        grad_clip: the gradient norm is clipped to this at every step; 0: no clipping.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (``env/evaluators/device.py``): where the shared weights
            and the corpus are.
        num_threads: torch threads for the shared weights (null: all this process may use); one by default, as
            for ``SharedWeightsTrainer``.
    """

    score_label = "validation score (score_constant / perplexity**2, or / perplexity)"
    reward_is_accuracy = False  # the reward is made from the perplexity (EvalResult.score)

    def __init__(
        self,
        dataset: Corpus | str | Path | dict[str, Any] | None = None,
        epochs: int = 50,
        shared_steps: int | None = 50,
        controller_steps: int = 20,
        derive_samples: int = 100,
        hidden_size: int = 64,
        dropout: float = 0.0,
        batch_size: int = 32,
        bptt: int = 20,
        val_batch_size: int = 64,
        val_tokens: int = 10000,
        score: str = "inverse_square",
        score_constant: float = 1e4,
        optimizer: str = "adam",
        lr: float = 2e-3,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        grad_clip: float = 0.25,
        device: str = "cpu",
        num_threads: int | None = 1,
    ) -> None:
        super().__init__(
            epochs=epochs, shared_steps=shared_steps, controller_steps=controller_steps,
            derive_samples=derive_samples, optimizer=optimizer, lr=lr, momentum=momentum,
            weight_decay=weight_decay, grad_clip=grad_clip, device=device, num_threads=num_threads,
        )  # fmt: skip
        if score not in SCORES:
            raise ValueError(f"env.evaluator.score must be one of {list(SCORES)}, got {score!r}")
        counts = {"hidden_size": hidden_size, "batch_size": batch_size, "bptt": bptt}
        require_positive(counts | {"val_batch_size": val_batch_size, "val_tokens": val_tokens}, "env.evaluator.")
        self.corpus = as_corpus(dataset)
        self.shared_steps = shared_steps or max(1, len(self.corpus.train) // (batch_size * bptt))
        self.hidden_size = hidden_size
        self.dropout = dropout
        self.batch_size = batch_size
        self.bptt = bptt
        self.val_batch_size = val_batch_size
        self.val_tokens = val_tokens
        self.score_name = score
        self.score_constant = score_constant

    def describe_data(self) -> str:
        return self.corpus.name

    def _build(self, space: SearchSpace) -> torch.nn.Module:
        if not space.family.language_model:
            raise ValueError(
                f"SharedLanguageModelTrainer shares the weights of recurrent cells (space network 'rnn_cell'); "
                f"space '{space.name}' builds '{space.network}' networks: use SharedWeightsTrainer for those"
            )
        return build_supernet(space, (), len(self.corpus.vocab), self.hidden_size, self.dropout)

    def _standalone(self, arch: Architecture) -> torch.nn.Module:
        return build_language_model(arch, len(self.corpus.vocab), self.hidden_size)

    def _start_data(self, seed: int) -> None:
        self._train = batchify(self.corpus.train.to(self.device), self.batch_size)  # moved once
        self._val = batchify(self.corpus.val.to(self.device), self.val_batch_size)
        self._val_head = self.corpus.val[: self.val_tokens].to(self.device)
        self._generator = torch.Generator().manual_seed(seed + 1)
        self._position = len(self._train)  # the first step starts a pass
        self._val_position = 0
        self._state: list[torch.Tensor] = []

    def _data_state(self) -> dict[str, Any]:
        return {
            "generator": self._generator.get_state(),
            "position": self._position,
            "val_position": self._val_position,
            "state": [h.cpu() for h in self._state],
        }

    def _load_data_state(self, state: dict[str, Any]) -> None:
        self._generator.set_state(state["generator"])
        self._position, self._val_position = state["position"], state["val_position"]
        self._state = [h.to(self.device) for h in state["state"]]

    def _loss(self, net: torch.nn.Module, arch: Architecture) -> tuple[torch.Tensor, float]:
        if self._position + 1 >= len(self._train):  # a new pass: a random offset, a zero state
            self._position = int(torch.randint(self.bptt, (1,), generator=self._generator))
            self._state = state_on(cast(Any, net).initial_state(self.batch_size), self.device)
        window = self._train[self._position : self._position + self.bptt + 1]
        self._position += self.bptt
        logits, state = net(window[:-1], [h.detach() for h in self._state], arch)
        self._state = [h.detach() for h in state]
        accuracy = float((logits.argmax(-1) == window[1:]).float().mean())
        return F.cross_entropy(logits.flatten(0, 1), window[1:].flatten()), accuracy

    def evaluate(self, arch: Architecture, seed: int, **round_options: Any) -> EvalResult:
        """The controller phase's reward from the perplexity of ``arch`` on the next validation window."""
        start = time.perf_counter()
        if self._val_position + 1 >= len(self._val):
            self._val_position = 0
        window = self._val[self._val_position : self._val_position + self.bptt + 1]
        self._val_position += self.bptt
        loss, accuracy = self._nll(arch, window, self.val_batch_size)
        perplexity = math.exp(min(loss, 50.0))
        return EvalResult(
            accuracy,
            self.standalone_params(arch),
            time.perf_counter() - start,
            metrics=perplexity_metrics(loss, self.corpus.level, "val"),
            score=SCORES[self.score_name](perplexity, self.score_constant),
        )

    def score(self, arch: Architecture) -> float:
        """The reward's quantity (``score_constant / perplexity**2`` by default) on the first ``val_tokens``
        validation tokens, 10 streams, windows of 35 (as ``LanguageModelTrainer`` scores a child)."""
        with torch_threads(self.threads()):
            loss, _ = evaluate_language_model(cast(Any, _Path(self._net(), arch)), self._val_head, batch_size=10)
        return SCORES[self.score_name](math.exp(min(loss, 50.0)), self.score_constant)

    @torch.no_grad()
    def _nll(self, arch: Architecture, window: torch.Tensor, streams: int) -> tuple[float, float]:
        net = cast(Any, self._net())
        with torch_threads(self.threads()):
            net.eval()
            state = state_on(net.initial_state(streams), self.device)
            logits, _ = net(window[:-1], state, arch)
            loss = float(F.cross_entropy(logits.flatten(0, 1), window[1:].flatten()))
        return loss, float((logits.argmax(-1) == window[1:]).float().mean())

    def fingerprint(self) -> dict[str, Any]:
        c = self.corpus
        keys = ["hidden_size", "dropout", "batch_size", "bptt", "val_batch_size", "val_tokens"]
        keys += ["score_name", "score_constant"]
        return {
            **super().fingerprint(),
            "corpus": c.name,
            "level": c.level,
            "vocab_size": len(c.vocab),
            **{k: getattr(self, k) for k in keys},
        }


class _Path(torch.nn.Module):
    """One cell's path through a recurrent supernet, shaped as a language model (``forward(tokens, state)``,
    ``initial_state``), so that ``evaluate_language_model`` scores it as it scores a stand-alone child."""

    def __init__(self, supernet: torch.nn.Module, arch: Architecture) -> None:
        super().__init__()
        self.supernet, self.arch = supernet, arch

    def initial_state(self, batch_size: int) -> list[torch.Tensor]:
        return cast(Any, self.supernet).initial_state(batch_size)

    def forward(self, tokens: torch.Tensor, state: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.supernet(tokens, state, self.arch)


class _Batches:
    """Mini-batch indices over ``n`` examples: shuffled passes, drawn from a seeded generator, resumable."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(n, generator=self.generator)
        self.position = 0

    def next(self) -> torch.Tensor:
        if self.position >= self.n:
            self.order, self.position = torch.randperm(self.n, generator=self.generator), 0
        batch = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "order": self.order, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.position = state["order"], state["position"]
