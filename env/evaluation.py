"""Evaluators: what turns a finished architecture into a score.

The environment is handed an evaluator object (a Hydra ``_target_``), so real child training, a lookup
table or a fast synthetic score are interchangeable. An evaluator has one method,
``evaluate(arch, seed) -> EvalResult``, and a ``fingerprint()`` naming everything that determines its
results (used to key the evaluation cache). It may also have ``cost(arch) -> float``, a relative estimate
of how long ``arch`` takes to evaluate: parallel runners start a round's most expensive children first.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from nasrl.env.data import Dataset, load_dataset
from nasrl.env.device import amp_dtype, autocast, resolve_device
from nasrl.env.networks import build_network, count_parameters
from nasrl.env.space import Architecture


@dataclass
class EvalResult:
    """The outcome of evaluating one architecture."""

    val_accuracy: float
    params: int = 0
    seconds: float = 0.0
    failed: bool = False
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)  # extra reported numbers (never the reward)
    score: float | None = None  # what the reward is made from when it is not val_accuracy (language models)

    @property
    def reward_input(self) -> float:
        """The number the environment's reward transform is applied to."""
        return self.val_accuracy if self.score is None else self.score

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Evaluator(Protocol):
    def evaluate(self, arch: Architecture, seed: int) -> EvalResult: ...

    def fingerprint(self) -> dict[str, Any]: ...


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset restrict)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads, then restore the previous number."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def require_positive(values: dict[str, Any], prefix: str = "", nullable: tuple[str, ...] = ()) -> None:
    """Refuse a count below 1 in one line naming the setting (``prefix`` + key); ``nullable`` keys may be None."""
    for key, value in values.items():
        if key in nullable and value is None:
            continue
        if value < 1:
            accepted = "a positive integer or null" if key in nullable else "a positive integer"
            raise ValueError(f"{prefix}{key} must be {accepted}, got {value!r}")


class ThreadedEvaluator:
    """Base of the evaluators that train: :meth:`evaluate` runs ``_evaluate`` with ``num_threads`` torch
    threads (None: what the runner gives each child) and records them in ``metrics["torch_threads"]``.
    :meth:`on_device` keeps one copy of the data on ``self.device`` per process; it is not pickled, so worker
    processes make their own, on their own device (a process without that GPU could not load it)."""

    num_threads: int | None = 1
    device: torch.device = torch.device("cpu")
    _on_device: tuple[torch.device, tuple[torch.Tensor, ...]] | None = None

    def on_device(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``tensors`` (the same ones at every call) on ``self.device``, copied there once per process, and
        again only if the device changes, as when a worker process is given its own GPU. CPU: no copy."""
        if self._on_device is None or self._on_device[0] != self.device:
            self._on_device = (self.device, tuple(t.to(self.device) for t in tensors))
        return self._on_device[1]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_on_device": None}

    def evaluate(self, arch: Architecture, seed: int) -> EvalResult:
        threads = self.num_threads or torch.get_num_threads()
        with torch_threads(threads):
            result = self._evaluate(arch, seed)
        result.metrics["torch_threads"] = threads
        return result

    def _evaluate(self, arch: Architecture, seed: int) -> EvalResult:
        raise NotImplementedError


class ChildTrainer(ThreadedEvaluator):
    """Trains the child network on the train split and scores it on the validation split.

    The budget is ``epochs`` passes over the training data, or ``max_steps`` optimizer steps if set.
    ``seed`` fixes the weight initialisation and the data order, so one seed gives one result on CPU
    for a given number of torch threads, which changes the order of floating-point sums: the result
    records it (``metrics["torch_threads"]``) and the cache key includes ``num_threads``.

    ``num_threads`` (default 1): torch threads per child. One thread, because a child with more threads
    than the cores it can have to itself slows down 1.5 to 13 times (two children side by side, measured
    by ``scripts/bench_threads.py``; more on a loaded machine); ``search.workers`` uses the cores instead
    (README, "Threads"). ``None``: the threads the runner gives each child (all cores with
    ``search.workers=1``, cores / workers in worker processes, Ray's ``cpus_per_child``): 1.1 to 1.8x
    faster for a child alone on an idle machine.

    ``device``: where children train (``auto``, ``cpu``, ``cuda``, ``cuda:N``; see ``env/device.py``),
    resolved here, so CUDA asked for where there is none is refused before a search starts. The data are
    copied to the device once per process, on the first evaluation (worker processes receive the trainer
    pickled, without the copy). ``amp``: mixed precision (bfloat16 autocast, float16 with loss scaling on
    GPUs without bfloat16) on CUDA; ignored on the CPU. On CUDA one seed gives one result up to the
    nondeterminism of some GPU kernels; the cache key names the device (and amp) unless it is the CPU, so
    CPU runs keep their keys.

    A loss that turns NaN or infinite ends training with a failed result, never an exception.
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
    ) -> None:
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
        }

    def splits(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """x_train, y_train, x_val and y_val on ``self.device`` (see :meth:`ThreadedEvaluator.on_device`)."""
        d = self.dataset
        x_train, y_train, x_val, y_val = self.on_device(d.x_train, d.y_train, d.x_val, d.y_val)
        return x_train, y_train, x_val, y_val

    def build(self, arch: Architecture) -> torch.nn.Module:
        return build_network(arch, self.dataset.input_shape, self.dataset.num_classes)

    def cost(self, arch: Architecture) -> float:
        """Floating-point operations of one forward pass on one example: proportional to the training
        time of ``arch``, so a round can start its slowest children first. Takes a few milliseconds."""
        with torch.random.fork_rng(devices=[]), torch.no_grad():  # building draws initial weights
            model = self.build(arch).eval()
            with FlopCounterMode(display=False) as counter:
                model(self.dataset.x_train[:1])
        return float(counter.get_total_flops())

    def total_steps(self) -> int:
        per_epoch = math.ceil(len(self.dataset.y_train) / self.batch_size)
        return self.max_steps if self.max_steps is not None else per_epoch * self.epochs

    def _evaluate(self, arch: Architecture, seed: int) -> EvalResult:
        start = time.perf_counter()
        # fork_rng: child training must not move the caller's torch random state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self.build(arch)  # built on the CPU, so one seed draws the same initial weights anywhere
            params = count_parameters(model)
            model.to(self.device)
            failure = self._train(model, seed)
            if failure:
                return EvalResult(0.0, params, time.perf_counter() - start, failed=True, reason=failure)
            _, _, x_val, y_val = self.splits()
            accuracy = accuracy_of(model, x_val, y_val)
        return EvalResult(accuracy, params, time.perf_counter() - start)

    def _train(self, model: torch.nn.Module, seed: int) -> str:
        """Train in place (on the model's device); return a failure reason, or '' on success."""
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
        )


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
    on_epoch: Callable[[int, float], None] | None = None,
    amp: bool = False,
) -> str:
    """The one training loop (search children and retraining): ``steps`` optimizer steps over shuffled
    mini-batches. Calls ``on_epoch(epoch, mean_loss)`` after each pass over the data. Returns a failure reason
    (loss or weights not finite), or '' on success; never raises for a diverging model.

    Trains on the model's device; ``x`` and ``y`` are copied there if they are elsewhere (pass them there
    already to copy once). The data order is drawn on the CPU from ``seed``, so it is the same on every
    device. ``amp``: mixed precision on CUDA (see :func:`nasrl.env.device.amp_dtype`), ignored on the CPU."""
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
            on_epoch(epoch, sum(losses) / len(losses))
            model.train()  # the callback may have evaluated the model
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


class TokenMatchEvaluator:
    """A synthetic score with a known optimum, for tests and checks: the fraction of positions whose token
    equals ``target`` (sequences of another length lose the missing positions). No training."""

    def __init__(self, target: list[int] | tuple[int, ...]) -> None:
        self.target = tuple(int(t) for t in target)

    def fingerprint(self) -> dict[str, Any]:
        return {"evaluator": type(self).__name__, "target": list(self.target)}

    def evaluate(self, arch: Architecture, seed: int) -> EvalResult:
        hits = sum(a == b for a, b in zip(arch.tokens, self.target))
        return EvalResult(hits / max(len(self.target), len(arch.tokens)))
