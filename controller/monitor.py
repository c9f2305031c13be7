"""What a person watches during a search: TensorBoard events under ``RUN/tb`` and a progress bar.

The TensorBoard tags are a documented interface (README, "Monitoring in TensorBoard"); this is the one
module that writes them. All scalars share one global step, the number of episodes played.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from nasrl.controller.policy import Policy
from nasrl.controller.runfolder import SearchState

_NOT_LOGGED = {"torch_threads"}  # a setting recorded with each result, not a measurement


class Monitor:
    """TensorBoard (with ``run_dir``), a tqdm bar (with ``progress``) and, at :meth:`close`, the hparams."""

    def __init__(
        self,
        run_dir: Path | None,
        state: SearchState,
        budget: int,
        max_minutes: float | None = None,
        progress: bool = False,
        hparams: dict[str, Any] | None = None,
    ) -> None:
        self.max_minutes = max_minutes
        self.hparams = hparams
        self.writer: Any = None
        self.bar: Any = None
        if run_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events logged after the checkpoint by an interrupted session
            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=state.episode or None)
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=budget, initial=state.distinct, desc="architectures", unit="arch",
                            dynamic_ncols=True, mininterval=1.0)  # fmt: skip

    def episode(
        self, state: SearchState, row: dict[str, Any], best: dict[str, Any], metrics: dict[str, float], policy: Policy
    ) -> None:
        """Log the episode that just ended (``row``; ``best`` is the best row so far) and the policy's update
        metrics, if it updated."""
        if self.bar is not None:
            self.bar.n = state.distinct
            postfix = {"best": f"{best['reward']:.4f}", "episodes": state.episode}
            if self.max_minutes is not None:  # the bar's own estimate knows nothing of the time cap
                postfix["time_cap_left"] = f"{max(0.0, self.max_minutes - state.elapsed / 60):.1f}min"
            self.bar.set_postfix(postfix)
        if self.writer is None:
            return
        step, add = state.episode, self.writer.add_scalar
        add("search/reward", row["reward"], step)
        add("search/best_reward", best["reward"], step)
        add("search/val_accuracy", row["val_accuracy"], step)
        add("search/distinct_architectures", state.distinct, step)
        add("search/archs_per_hour", state.distinct / max(state.elapsed, 1e-9) * 3600, step)
        add("child/params", row["params"], step)
        add("child/train_seconds", row["seconds"], step)
        add("child/stopped", row.get("stopped", 0), step)  # 1: early stopping ended it, its score is partial
        for name, value in json.loads(row["metrics"]).items():  # what the evaluator reports, e.g. val_perplexity
            if name not in _NOT_LOGGED:
                add(f"child/{name}", value, step)
        if best is row:
            text = f"{row['architecture']} (reward {row['reward']:.4f})"
            self.writer.add_text("search/best_architecture", text, step)
        for name, value in metrics.items():
            add(f"controller/{name}", value, step)
        if metrics:
            for decision, probs in policy.choice_probabilities().items():
                labels = policy.spec.choice_labels[policy.spec.decision_names.index(decision)]
                for label, p in zip(labels, probs):
                    add(f"policy/{decision}/{label}", p, step)

    def shared_step(self, step: int, metrics: dict[str, float]) -> None:
        """Weight sharing's shared-weights phase: the step's loss, the sampled child's mini-batch accuracy and
        the learning rate, against the number of shared-weights steps."""
        if self.writer is not None:
            for name in ("loss", "accuracy", "lr"):
                self.writer.add_scalar(f"shared/{name}", metrics[name], step)

    def derived(self, step: int, derived: Any) -> None:
        """Weight sharing's derivation: the best candidate's shared-weights validation accuracy, every candidate's
        as a histogram, and the best architecture."""
        if self.writer is None:
            return
        scores = [score for score, _ in derived.candidates]
        self.writer.add_scalar("derive/best_shared_accuracy", scores[0], step)
        self.writer.add_histogram("derive/shared_accuracy", np.asarray(scores), step)
        self.writer.add_text("derive/best_architecture", f"`{derived.best[1].describe()}`", step)

    def close(self, state: SearchState) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is None:
            return
        best = state.best
        if best is not None and self.hparams is not None:
            clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in self.hparams.items()}
            metrics = {"hparam/best_reward": best["reward"], "hparam/best_val_accuracy": best["val_accuracy"]}
            self.writer.add_hparams(clean, metrics, run_name=".", global_step=state.episode)
        self.writer.close()
