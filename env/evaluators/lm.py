"""Language-model children: train a recurrent cell on a text corpus, score it by validation perplexity.

:class:`LanguageModelTrainer` is the evaluator of ``env=lm`` (``conf/env/lm.yaml``): it builds the
language model of an ``rnn_cell`` architecture (``env/spaces/rnn.py``), trains it with truncated
backpropagation through time (:func:`train_language_model`, the one loop for search children, standard
cells and retraining), and returns the validation perplexity.

The reward is Zoph & Le's (2017) ``c / perplexity**2`` (``score="inverse_square"``), or ENAS's
``c / perplexity`` (``score="inverse"``); the score goes to ``EvalResult.score``, which the environment
turns into the reward. ``val_accuracy`` holds the next-token accuracy, and ``metrics`` the perplexity
(``val_perplexity``) and, at character level, bits per character (``val_bpc``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from nasrl.env.evaluators.base import EvalResult, ThreadedEvaluator, require_positive
from nasrl.env.evaluators.child_trainer import device_fingerprint, model_device
from nasrl.env.evaluators.device import resolve_device
from nasrl.env.evaluators.text import Corpus, batchify, load_corpus
from nasrl.env.spaces.networks import count_parameters
from nasrl.env.spaces.rnn import LanguageModel, build_language_model, detach_state
from nasrl.env.spaces.space import Architecture

SCORES: dict[str, Callable[[float, float], float]] = {
    "inverse_square": lambda ppl, c: c / ppl**2,  # Zoph & Le (2017)
    "inverse": lambda ppl, c: c / ppl,  # ENAS (the PyTorch port's 80 / perplexity)
}
LM_OPTIMIZERS = ("adam", "sgd")


def as_corpus(dataset: Corpus | str | Path | dict[str, Any] | None) -> Corpus:
    """A corpus from ``load_corpus`` keyword arguments (a path alone is the ``path``; null: ``load_corpus``'s
    default, the data root's tiny-shakespeare)."""
    if isinstance(dataset, Corpus):
        return dataset
    if dataset is None:
        return load_corpus()
    if isinstance(dataset, (str, Path)):
        return load_corpus(path=str(dataset))
    return load_corpus(**dataset)


def state_on(state: Any, device: torch.device) -> Any:
    """A recurrent state (tensors, tuples and lists of them) on ``device``: ``initial_state`` makes it on
    the CPU."""
    if isinstance(state, torch.Tensor):
        return state.to(device)
    return type(state)(state_on(s, device) for s in state)


def train_language_model(
    model: LanguageModel,
    tokens: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    bptt: int,
    optimizer: str = "adam",
    lr: float = 2e-3,
    weight_decay: float = 0.0,
    grad_clip: float = 0.25,
    seed: int = 0,
    on_epoch: Callable[[int, float], None] | None = None,
) -> str:
    """Train ``model`` in place for ``steps`` windows of ``bptt`` tokens over ``batch_size`` parallel streams
    (the state carries over between windows, its gradient does not). Each pass over the data starts at a
    random offset drawn from ``seed``. Returns a failure reason (non-finite loss or weights) or ''.

    Trains on the model's device (``tokens`` are copied there if they are elsewhere); the offsets are drawn
    on the CPU, so they are the same on every device."""
    if optimizer not in LM_OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(LM_OPTIMIZERS)}, got {optimizer!r}")
    device = model_device(model)
    data = batchify(tokens.to(device), batch_size)
    opt: torch.optim.Optimizer = (
        torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        if optimizer == "adam"
        else torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    step = epoch = 0
    while step < steps:
        state = state_on(model.initial_state(batch_size), device)
        start = int(torch.randint(bptt, (1,), generator=generator))
        losses: list[float] = []
        for i in range(start, len(data) - 1, bptt):
            window = data[i : i + bptt + 1]
            if len(window) < 2:
                break
            state = detach_state(state)
            logits, state = model(window[:-1], state)
            loss = F.cross_entropy(logits.flatten(0, 1), window[1:].flatten())
            if not torch.isfinite(loss):
                return f"loss became {loss.item()} at step {step}"
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            step += 1
            if step >= steps:
                break
        epoch += 1
        if on_epoch is not None:
            on_epoch(epoch, sum(losses) / max(1, len(losses)))
            model.train()
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    return f"weights became non-finite after {step} steps (e.g. {bad[0]})" if bad else ""


@torch.no_grad()
def evaluate_language_model(
    model: LanguageModel, tokens: torch.Tensor, batch_size: int = 10, bptt: int = 35
) -> tuple[float, float]:
    """(mean cross-entropy in nats per token, next-token accuracy) of ``model`` on ``tokens``, in eval mode, on
    the model's device (``tokens`` are copied there if they are elsewhere)."""
    model.eval()
    device = model_device(model)
    data = batchify(tokens.to(device), batch_size)
    state = state_on(model.initial_state(batch_size), device)
    total = correct = count = 0.0
    for i in range(0, len(data) - 1, bptt):
        window = data[i : i + bptt + 1]
        logits, state = model(window[:-1], state)
        targets = window[1:].flatten()
        flat = logits.flatten(0, 1)
        total += float(F.cross_entropy(flat, targets, reduction="sum"))
        correct += float((flat.argmax(1) == targets).sum())
        count += len(targets)
    return total / count, correct / count


def perplexity_metrics(loss: float, level: str, prefix: str) -> dict[str, float]:
    """Perplexity, and bits per character at character level, of a mean loss in nats per token."""
    metrics = {f"{prefix}_perplexity": math.exp(min(loss, 50.0))}
    if level == "char":
        metrics[f"{prefix}_bpc"] = loss / math.log(2)
    return metrics


class LanguageModelTrainer(ThreadedEvaluator):
    """Trains the language model of a recurrent-cell architecture and scores it on the validation split.

    The budget is ``max_steps`` windows of ``bptt`` tokens over ``batch_size`` streams; ``val_tokens``
    scores on the start of the validation split only (null: all of it). ``num_threads`` and ``device`` as in
    :class:`~nasrl.env.evaluators.child_trainer.ChildTrainer` (the corpus is copied to the device once per process). No
    mixed precision: the searched cell (``env/spaces/rnn.py``) mixes a float32 state with the half-precision
    outputs of autocast in ``torch.lerp``, which refuses them. A loss that turns non-finite is a failed result.

    Args:
        dataset: the corpus: :func:`~nasrl.env.evaluators.text.load_corpus`'s keyword arguments (the ``dataset.*``
            settings), a path (the corpus's ``path``), a loaded :class:`~nasrl.env.evaluators.text.Corpus`, or
            null: ``load_corpus``'s defaults (the data root's tiny-shakespeare, at word level).
        hidden_size: units of each recurrent cell, and the size of the token embedding (tied to the softmax).
        num_layers: recurrent cells stacked, each the searched cell.
        dropout: dropout on the embedding and on the last cell's outputs, in [0, 1).
        optimizer: ``adam`` or ``sgd`` (plain SGD, without momentum).
        lr: the initial learning rate, annealed to 0 by a cosine over the ``max_steps`` steps.
        grad_clip: the gradient norm is clipped to this at every step (positive).
        score: what the reward is made from: ``inverse_square`` (``score_constant / perplexity**2``, Zoph & Le) or
            ``inverse`` (``score_constant / perplexity``, ENAS).
        score_constant: the constant c of the score (positive).
    """

    reward_is_accuracy = False  # the reward is made from the perplexity (EvalResult.score)

    def __init__(
        self,
        dataset: Corpus | str | Path | dict[str, Any] | None = None,
        hidden_size: int = 64,
        num_layers: int = 1,
        dropout: float = 0.0,
        max_steps: int = 200,
        batch_size: int = 32,
        bptt: int = 20,
        optimizer: str = "adam",
        lr: float = 2e-3,
        grad_clip: float = 0.25,
        val_tokens: int | None = 10000,
        score: str = "inverse_square",
        score_constant: float = 1e4,
        num_threads: int | None = 1,
        device: str = "cpu",
    ) -> None:
        checks = {"hidden_size": hidden_size, "num_layers": num_layers, "max_steps": max_steps}
        require_positive(checks | {"batch_size": batch_size, "bptt": bptt})
        if optimizer not in LM_OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(LM_OPTIMIZERS)}, got {optimizer!r}")
        if score not in SCORES:
            raise ValueError(f"score must be one of {list(SCORES)}, got {score!r}")
        if not (lr > 0 and grad_clip > 0 and score_constant > 0):
            raise ValueError(
                f"lr, grad_clip and score_constant must be positive, got {lr}, {grad_clip} and {score_constant}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        require_positive({"num_threads": num_threads}, nullable=("num_threads",))
        self.device = resolve_device(device)  # before reading the corpus: a bad device is refused at once
        self.corpus = as_corpus(dataset)
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        self.max_steps = max_steps
        self.batch_size = batch_size
        self.bptt = bptt
        self.optimizer = optimizer
        self.lr = lr
        self.grad_clip = grad_clip
        self.val_tokens = val_tokens
        self.score = score
        self.score_constant = score_constant
        self.num_threads = num_threads

    def fingerprint(self) -> dict[str, Any]:
        c = self.corpus
        settings = {k: v for k, v in vars(self).items() if k not in ("corpus", "device") and not k.startswith("_")}
        return {"evaluator": type(self).__name__, "corpus": c.name, "vocab": c.vocab_size,
                "data_sizes": [len(c.train), len(c.val)], **settings,
                **device_fingerprint(self.device, amp=False)}  # fmt: skip

    def splits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The train tokens and the scored validation tokens on ``self.device`` (see
        :meth:`~nasrl.env.evaluators.base.ThreadedEvaluator.on_device`)."""
        c, n = self.corpus, self.val_tokens
        train, val = self.on_device(lambda: (c.train, c.val if n is None else c.val[:n]))
        return train, val

    def describe_data(self) -> str:
        return self.corpus.name

    def build(self, arch: Architecture) -> LanguageModel:
        """The language model of ``arch`` (for training: it has no ``input_shape``, so no costs are counted)."""
        return build_language_model(arch, self.corpus.vocab_size, self.hidden_size, self.num_layers, self.dropout)

    def cost(self, arch: Architecture) -> float:
        """Relative training time: the number of nodes each step runs (the matrices are all the same size)."""
        return float(max(1, len(arch.layers)))

    def _evaluate(self, arch: Architecture, seed: int) -> EvalResult:
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self.build(arch)  # on the CPU: one seed, the same initial weights on every device
            params = count_parameters(model)
            model.to(self.device)
            train, val = self.splits()
            failure = train_language_model(
                model,
                train,
                steps=self.max_steps,
                batch_size=self.batch_size,
                bptt=self.bptt,
                optimizer=self.optimizer,
                lr=self.lr,
                grad_clip=self.grad_clip,
                seed=seed,
            )
            if failure:
                return EvalResult(0.0, params, time.perf_counter() - start, failed=True, reason=failure)
            loss, accuracy = evaluate_language_model(model, val, bptt=self.bptt)
        metrics = perplexity_metrics(loss, self.corpus.level, "val")
        seconds = time.perf_counter() - start
        if not math.isfinite(loss):
            return EvalResult(0.0, params, seconds, failed=True, reason="validation loss is not finite")
        score = SCORES[self.score](metrics["val_perplexity"], self.score_constant)
        return EvalResult(accuracy, params, seconds, score=score, metrics=metrics)
