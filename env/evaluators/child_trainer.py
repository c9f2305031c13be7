"""Real child training: :class:`ChildTrainer` trains a child network on a data set's training split and scores it
on the validation split; :func:`train_model` is the one training loop (search children and retraining).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from nasrl.env.evaluators.base import EvalResult, ThreadedEvaluator, require_positive
from nasrl.env.evaluators.data import Dataset, load_dataset
from nasrl.env.evaluators.device import amp_dtype, autocast, resolve_device
from nasrl.env.evaluators.stopping import MedianStoppingRule, Thresholds, make_stopping
from nasrl.env.spaces.networks import build_network, count_parameters
from nasrl.env.spaces.space import Architecture


class ChildTrainer(ThreadedEvaluator):
    """Trains the child network on the train split and scores it on the validation split.

    The budget is ``epochs`` passes over the training data, or ``max_steps`` optimizer steps if set.
    ``seed`` fixes the weight initialisation and the data order, so one seed gives one result on CPU
    for a given number of torch threads, which changes the order of floating-point sums: the result
    records it (``metrics["torch_threads"]``) and the cache key includes ``num_threads``.

    ``num_threads`` (default 1): torch threads per child. One thread, because a child with more threads
    than the cores it can have to itself slows down 1.5 to 13 times (two children side by side, measured
    by ``experiments/bench_threads.py``; more on a loaded machine); ``search.workers`` uses the cores instead
    (docs/guides/parallel-async-ray.md, "Threads"). ``None``: the threads the runner gives each child (all cores with
    ``search.workers=1``, cores / workers in worker processes, Ray's ``cpus_per_child``): 1.1 to 1.8x
    faster for a child alone on an idle machine.

    ``device``: where children train (``auto``, ``cpu``, ``cuda``, ``cuda:N``; see ``env/evaluators/device.py``),
    resolved here, so CUDA asked for where there is none is refused before a search starts. The data are
    copied to the device once per process, on the first evaluation (worker processes receive the trainer
    pickled, without the copy). ``amp``: mixed precision (bfloat16 autocast, float16 with loss scaling on
    GPUs without bfloat16) on CUDA; ignored on the CPU. On CUDA one seed gives one result up to the
    nondeterminism of some GPU kernels; the cache key names the device (and amp) unless it is the CPU, so
    CPU runs keep their keys.

    A loss that turns NaN or infinite ends training with a failed result, never an exception.

    Cheaper children (docs/guides/cheaper-children.md): ``train_fraction`` (0 < f <= 1, default 1) trains every
    child on the same fixed, class-stratified fraction of the training split (drawn once from a fixed seed, not
    the child's; the validation split is untouched), so an epoch is that many fewer steps. ``stopping``: the
    early-stopping rule (:class:`nasrl.env.evaluators.stopping.MedianStoppingRule`; off unless ``enabled``); with it on,
    each child measures its validation accuracy after every epoch (``EvalResult.curve``) and a stopped child's
    result is marked (``metrics["stopped"] = 1``, ``metrics["stopped_epoch"]``). At their defaults neither
    changes the cache key, so caches written before they existed still hit.

    Args:
        dataset: the data set: a name (``mnist1d``), :func:`~nasrl.env.evaluators.data.load_dataset`'s keyword
            arguments (the ``dataset.*`` settings) or a loaded :class:`~nasrl.env.evaluators.data.Dataset`.
        batch_size: training examples per optimizer step (the last mini-batch of an epoch may be smaller).
        optimizer: ``adam``, ``adamw`` or ``sgd`` (SGD with Nesterov momentum 0.9).
        lr: the learning rate: where ``cosine`` starts, the peak of ``onecycle``, the value of ``constant``.
        weight_decay: the optimizer's weight decay (decoupled for ``adamw``; for ``adam`` and ``sgd`` an L2 term
            added to the gradient); 0: none.
        schedule: the learning rate over the budget's optimizer steps: ``cosine`` (from ``lr`` down to 0),
            ``onecycle`` (torch's ``OneCycleLR`` at its defaults: up from ``lr / 25`` to ``lr`` over the first 30%
            of the steps, then down to ``lr / 25 / 1e4``, cycling the momentum between 0.95 and 0.85) or
            ``constant``.
    """

    def __init__(
        self,
        dataset: Dataset | str | dict[str, Any] = "mnist1d",
        epochs: int = 10,
        max_steps: int | None = None,
        batch_size: int = 128,
        optimizer: str = "adam",
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        schedule: str = "cosine",
        num_threads: int | None = 1,
        device: str = "cpu",
        amp: bool = False,
        train_fraction: float = 1.0,
        stopping: MedianStoppingRule | dict[str, Any] | None = None,
    ) -> None:
        fraction_ok = isinstance(train_fraction, (int, float)) and not isinstance(train_fraction, bool)
        if not (fraction_ok and 0 < train_fraction <= 1):
            raise ValueError(f"train_fraction must be a number in (0, 1], got {train_fraction!r}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
        counts = {"epochs": epochs, "batch_size": batch_size, "max_steps": max_steps, "num_threads": num_threads}
        require_positive(counts, nullable=("max_steps", "num_threads"))
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr!r}")
        self.device = resolve_device(device)  # before loading data: a bad device is refused at once
        self.amp = bool(amp)
        if isinstance(dataset, str):
            dataset = load_dataset(dataset)
        elif isinstance(dataset, dict):
            dataset = load_dataset(**dataset)
        self.dataset = dataset
        self.epochs = epochs
        self.max_steps = max_steps
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.num_threads = num_threads
        self.train_fraction = float(train_fraction)
        self.stopping = make_stopping(stopping)
        self._train_idx = stratified_subset(dataset.y_train, self.train_fraction) if self.train_fraction < 1 else None

    def fingerprint(self) -> dict[str, Any]:
        d = self.dataset
        return {
            "evaluator": type(self).__name__,
            "dataset": d.name,
            "data_sizes": [len(d.y_train), len(d.y_val)],
            "epochs": self.epochs,
            "max_steps": self.max_steps,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "schedule": self.schedule,
            "num_threads": self.num_threads,
            **device_fingerprint(self.device, self.amp),
            # new knobs name themselves only when not at their defaults, so older cache keys stay valid
            **({"train_fraction": self.train_fraction} if self.train_fraction != 1.0 else {}),
            **({"stopping": self.stopping.fingerprint()} if self.stopping.enabled else {}),
        }

    def splits(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """x_train, y_train (the ``train_fraction`` subset), x_val and y_val on ``self.device`` (see
        :meth:`ThreadedEvaluator.on_device`)."""
        d, subset = self.dataset, self._train_idx

        def tensors() -> tuple[torch.Tensor, ...]:  # the subset is copied only when the cache is made
            if subset is None:
                return d.x_train, d.y_train, d.x_val, d.y_val
            return d.x_train[subset], d.y_train[subset], d.x_val, d.y_val

        return self.on_device(tensors)  # type: ignore[return-value]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The data set's: the children are built, so their costs can be counted."""
        return tuple(self.dataset.input_shape)

    def describe_data(self) -> str:
        return self.dataset.name

    def build(self, arch: Architecture) -> torch.nn.Module:
        return build_network(arch, self.dataset.input_shape, self.dataset.num_classes)

    def cost(self, arch: Architecture) -> float:
        """Floating-point operations of one forward pass on one example: proportional to the training
        time of ``arch``, so a round can start its slowest children first. Counted once per architecture, with
        the environment's costs (:meth:`counted_costs`)."""
        return float(self.counted_costs(arch)["flops"])

    def train_size(self) -> int:
        """Training examples a child trains on (the ``train_fraction`` subset)."""
        return len(self._train_idx) if self._train_idx is not None else len(self.dataset.y_train)

    def steps_per_epoch(self) -> int:
        return math.ceil(self.train_size() / self.batch_size)

    def total_steps(self) -> int:
        return self.max_steps if self.max_steps is not None else self.steps_per_epoch() * self.epochs

    def total_epochs(self) -> int:
        """Passes over the data a child's budget makes (the last one partial if ``max_steps`` says so)."""
        return math.ceil(self.total_steps() / self.steps_per_epoch())

    # --- early stopping: the rule's state lives in the search's process (see nasrl.env.evaluators.stopping) ----------

    @property
    def keeps_state(self) -> bool:
        """Whether a resumed search needs :meth:`state_dict` (the stopping rule's completed curves)."""
        return self.stopping.enabled

    def observe(self, key: str, result: EvalResult) -> None:
        """A result the environment read (``key``: its cache key): the stopping rule's input."""
        if self.stopping.enabled:
            self.stopping.observe(key, result.curve, complete=not (result.failed or result.stopped))

    def round_options(self) -> dict[str, Any]:
        """What every child of a round starting now is given (computed once, here): the stopping thresholds."""
        return {"stop_below": self.stopping.thresholds(self.total_epochs())} if self.stopping.enabled else {}

    def state_dict(self) -> dict[str, Any]:
        return {"stopping": self.stopping.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stopping.load_state_dict(state["stopping"])

    def _evaluate(self, arch: Architecture, seed: int, stop_below: Thresholds | None = None) -> EvalResult:
        """Train and score ``arch``. ``stop_below``: the round's stopping thresholds (None: computed here, from
        this process's rule; what a child trained in the search's own process outside a round gets)."""
        start = time.perf_counter()
        if self.stopping.enabled and stop_below is None:
            stop_below = self.stopping.thresholds(self.total_epochs())
        curve: list[float] = []
        # fork_rng: child training must not move the caller's torch random state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self.build(arch)  # built on the CPU, so one seed draws the same initial weights anywhere
            params = count_parameters(model)
            model.to(self.device)
            _, _, x_val, y_val = self.splits()
            on_epoch = None
            if self.stopping.enabled:
                assert stop_below is not None

                def on_epoch(epoch: int, loss: float) -> bool:
                    # evaluation mode draws no random numbers and moves no batch-norm statistics, so measuring
                    # leaves the training of a child that is not stopped exactly as it is without the rule
                    curve.append(accuracy_of(model, x_val, y_val))
                    return self.stopping.should_stop(epoch, curve, stop_below)

            failure = self._train(model, seed, on_epoch)
            if failure:
                return EvalResult(0.0, params, time.perf_counter() - start, failed=True, reason=failure, curve=curve)
            # the last measured epoch is the trained model: no second pass over the validation split
            accuracy = curve[-1] if curve else accuracy_of(model, x_val, y_val)
        result = EvalResult(accuracy, params, time.perf_counter() - start, curve=curve)
        if self.stopping.enabled and len(curve) < self.total_epochs():  # the rule ended training early
            result.metrics.update(stopped=1, stopped_epoch=len(curve))
        return result

    def _train(self, model: torch.nn.Module, seed: int, on_epoch: Callable[[int, float], bool] | None = None) -> str:
        """Train in place (on the model's device); return a failure reason, or '' on success (also when
        ``on_epoch`` ended training early by returning True)."""
        x_train, y_train, _, _ = self.splits()
        return train_model(
            model,
            x_train,
            y_train,
            steps=self.total_steps(),
            batch_size=self.batch_size,
            optimizer=self.optimizer,
            lr=self.lr,
            weight_decay=self.weight_decay,
            schedule=self.schedule,
            seed=seed,
            amp=self.amp,
            on_epoch=on_epoch,
        )


def stratified_subset(y: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """Sorted indices of ``round(fraction * len(y))`` of the examples labelled ``y`` (at least one of each class),
    each class keeping its share (largest remainders get the rounding), drawn from ``seed``: one fixed subset,
    whoever asks."""
    labels, sizes = torch.unique(y, return_counts=True)
    exact = [fraction * int(n) for n in sizes]
    counts = [max(1, math.floor(e)) for e in exact]
    by_remainder = sorted(range(len(exact)), key=lambda c: (-(exact[c] - math.floor(exact[c])), c))
    for c in by_remainder[: max(0, round(fraction * len(y)) - sum(counts))]:
        counts[c] += 1
    generator = torch.Generator().manual_seed(seed)
    keep = []
    for label, count in zip(labels, counts):
        members = torch.nonzero(y == label).flatten()
        keep.append(members[torch.randperm(len(members), generator=generator)[:count]])
    return torch.sort(torch.cat(keep)).values


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s parameters (the CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def device_fingerprint(device: torch.device, amp: bool) -> dict[str, Any]:
    """What a trainer's device adds to its fingerprint: nothing on the CPU (so the cache keys of CPU runs
    are those from before the setting existed, and amp, ignored there, changes nothing), else the device
    type, not its index (worker processes spread over a machine's GPUs, which are normally alike), and
    whether mixed precision is on."""
    if device.type == "cpu":
        return {}
    return {"device": device.type, **({"amp": True} if amp else {})}


OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "constant", "onecycle")


def train_model(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    optimizer: str = "adam",
    lr: float = 3e-3,
    weight_decay: float = 0.0,
    schedule: str = "cosine",
    seed: int = 0,
    label_smoothing: float = 0.0,
    on_epoch: Callable[[int, float], bool | None] | None = None,
    amp: bool = False,
) -> str:
    """The one training loop (search children and retraining): ``steps`` optimizer steps over shuffled
    mini-batches. Calls ``on_epoch(epoch, mean_loss)`` after each pass over the data; a True answer ends
    training there (early stopping). Returns a failure reason (loss or weights not finite), or '' on success;
    never raises for a diverging model.

    Trains on the model's device; ``x`` and ``y`` are copied there if they are elsewhere (pass them there
    already to copy once). The data order is drawn on the CPU from ``seed``, so it is the same on every
    device. ``amp``: mixed precision on CUDA (see :func:`nasrl.env.evaluators.device.amp_dtype`), ignored on the CPU."""
    device = model_device(model)
    x, y = x.to(device), y.to(device)
    dtype = amp_dtype(device, amp)
    # float16 needs its gradients scaled (they underflow otherwise); bfloat16 has float32's range
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[optimizer]
    kwargs: dict[str, Any] = {"lr": lr, "weight_decay": weight_decay}
    if optimizer == "sgd":
        kwargs.update(momentum=0.9, nesterov=True)
    opt = opt_cls(model.parameters(), **kwargs)
    scheduler: Any = None
    if schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    elif schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    step = epoch = 0
    while step < steps:
        order = torch.randperm(len(y), generator=generator).to(device)  # one copy per epoch, not per batch
        losses: list[float] = []
        for i in range(0, len(y), batch_size):
            idx = order[i : i + batch_size]
            with autocast(device, dtype):
                loss = F.cross_entropy(model(x[idx]), y[idx], label_smoothing=label_smoothing)
            if not torch.isfinite(loss):
                return f"loss became {loss.item()} at step {step}"
            opt.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                opt.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            if scheduler is not None:
                scheduler.step()
            losses.append(float(loss.detach()))
            step += 1
            if step >= steps:
                break
        epoch += 1
        if on_epoch is not None:
            stop = on_epoch(epoch, sum(losses) / len(losses))
            model.train()  # the callback may have evaluated the model
            if stop:
                break
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        return f"weights became non-finite after {step} steps (e.g. {bad[0]})"
    return ""


@torch.no_grad()
def accuracy_of(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Fraction of ``x`` that ``model`` classifies as ``y``, in eval mode and full precision, on the model's
    device (``x`` and ``y`` are copied there if they are elsewhere)."""
    model.eval()
    device = model_device(model)
    x, y = x.to(device), y.to(device)
    correct = 0
    for i in range(0, len(y), batch_size):
        correct += int((model(x[i : i + batch_size]).argmax(dim=1) == y[i : i + batch_size]).sum())
    return correct / max(1, len(y))
