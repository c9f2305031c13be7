"""Early stopping of children: the Median Stopping Rule (Golovin et al. 2017, Google Vizier).

A child is stopped after epoch s if the best validation accuracy it reached in epochs 1..s is strictly
below the median, over the children that completed their training, of their running averages up to s
(the mean of their validation accuracies in epochs 1..s). Its training ends there and its validation
accuracy is the partial score of that epoch (``EvalResult.stopped``; ``stopped: 1`` in ``history.csv``).

Where each part runs, so that a seed gives the same search whatever the number of workers, and a resumed
search the same as an uninterrupted one:

- the rule's state (the curves of the completed children) lives in the search's own process: the
  environment hands it every result it reads, once per cache key (:meth:`MedianStoppingRule.observe`), and
  the checkpoint keeps it (:meth:`state_dict`);
- when a round of children starts, the runner asks for the round's thresholds once
  (:meth:`MedianStoppingRule.thresholds`) and sends them with every child to wherever it trains;
- the child, after each epoch, compares its own curve with them (:meth:`MedianStoppingRule.should_stop`).

So the children of one round are judged against the children of the rounds before it, never against each
other. The class is the ``_target_`` of ``env.evaluator.stopping``; subclass it to change the rule (override
:meth:`thresholds` and/or :meth:`should_stop`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

Thresholds = Sequence[float | None]  # per epoch 1..E: stop a child whose best so far is below; None: never


class MedianStoppingRule:
    """The Median Stopping Rule, judged after every epoch of a child.

    Args:
        enabled: off by default (``env.evaluator.stopping.enabled=true`` turns it on); off, children train
            their whole budget and measure nothing extra.
        grace_epochs: a child is never stopped before it trained this many epochs.
        min_children: the rule acts only once this many children completed their training (their curves
            make the medians).
    """

    def __init__(self, enabled: bool = False, grace_epochs: int = 2, min_children: int = 5) -> None:
        for name, value in (("grace_epochs", grace_epochs), ("min_children", min_children)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"env.evaluator.stopping.{name} must be a positive integer, got {value!r}")
        self.enabled = bool(enabled)
        self.grace_epochs = grace_epochs
        self.min_children = min_children
        self._seen: set[str] = set()  # cache keys already observed (a reused or re-read result counts once)
        self._curves: list[list[float]] = []  # per-epoch validation accuracies of the completed children

    def fingerprint(self) -> dict[str, Any]:
        """What the rule adds to the evaluation cache key (only when it is enabled)."""
        return {"rule": type(self).__name__, "grace_epochs": self.grace_epochs, "min_children": self.min_children}

    @property
    def completed(self) -> int:
        """How many completed children the medians are made of."""
        return len(self._curves)

    def observe(self, key: str, curve: Sequence[float], complete: bool) -> None:
        """Take note of a result read by the environment: ``curve`` (per-epoch validation accuracies) of a child
        that trained its whole budget (``complete``) joins the medians; stopped and failed children do not
        (their curves end early). Each ``key`` counts once."""
        if key in self._seen:
            return
        self._seen.add(key)
        if complete and len(curve) > 0:
            self._curves.append([float(a) for a in curve])

    def thresholds(self, epochs: int) -> list[float | None]:
        """Per epoch 1..``epochs``: the median of the completed children's running averages up to that epoch,
        or None where no child may be stopped (before ``grace_epochs``, at the last epoch, where stopping saves
        nothing, and while fewer than ``min_children`` completed)."""
        out: list[float | None] = [None] * epochs
        for s in range(self.grace_epochs, epochs):  # epochs grace_epochs .. epochs - 1 (1-based)
            averages = [float(np.mean(c[:s])) for c in self._curves if len(c) >= s]
            if len(averages) >= self.min_children:
                out[s - 1] = float(np.median(averages))
        return out

    def should_stop(self, epoch: int, curve: Sequence[float], thresholds: Thresholds) -> bool:
        """Whether a child whose validation accuracies after epochs 1..``epoch`` are ``curve`` stops now: its best
        so far is strictly below the epoch's threshold."""
        threshold = thresholds[epoch - 1] if 0 < epoch <= len(thresholds) else None
        return threshold is not None and max(curve) < threshold

    def state_dict(self) -> dict[str, Any]:
        """What a resumed search needs: the observed keys and the completed curves, in the order observed."""
        return {"seen": sorted(self._seen), "curves": [list(c) for c in self._curves]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._seen = set(state["seen"])
        self._curves = [list(c) for c in state["curves"]]


def make_stopping(value: MedianStoppingRule | dict[str, Any] | None) -> MedianStoppingRule:
    """The rule from what ``ChildTrainer(stopping=...)`` accepts: a rule, its keyword arguments, or None (off)."""
    if value is None:
        return MedianStoppingRule()
    if isinstance(value, dict):
        if "_target_" in value:  # a config node given to the Python API as a plain mapping: maybe a subclass
            from hydra.utils import instantiate

            value = instantiate(value)
        else:
            return MedianStoppingRule(**value)
    if not isinstance(value, MedianStoppingRule):
        raise ValueError(
            f"stopping must be a MedianStoppingRule (or a subclass), its settings as a mapping, or null; "
            f"got {type(value).__name__}"
        )
    return value
