"""Simulated training times, for scale experiments: a real search whose children only seem to train long.

:class:`SimulatedDurations` wraps another evaluator (the NAS-Bench-201 table, :class:`TokenMatchEvaluator`, or a
real :class:`ChildTrainer`): the accuracies, rewards and the controller are real; only how long each child
takes is simulated. Each child gets a duration, drawn deterministically from its tokens and child seed, so one
seed gives one search:

- ``durations="mnist1d"`` (default): one of the child training times really measured on MNIST-1D in this
  project (``env/runners/measured/mnist1d_child_seconds.csv``; its header says how, where and when), drawn uniformly.
  The draw does not depend on the architecture (the measured times do: ``flops`` models that).
- ``durations="flops"``: a cost model, ``min_seconds + flops / 1e9 * seconds_per_gflop``, with the FLOPs of
  one forward pass of one example (torch's convention, 2 per multiply-add) from the wrapped evaluator.

``evaluate`` then waits (``time.sleep``: wall time, no CPU), so many simulated children run side by side on a
few cores: the asynchronous search (``search.mode=async``) and ``experiments/bench_scale.py`` measure a search's
scheduling at scale this way. ``wait=False`` does not wait, for :class:`nasrl.env.runners.clock.VirtualClockRunner`,
which plays the durations on a simulated clock instead.

Regenerate the data file from MNIST-1D search run folders (only ChildTrainer runs at their defaults qualify)::

  python -m nasrl.env.runners.durations outputs/cost_result/search_*_0 > env/runners/measured/mnist1d_child_seconds.csv
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import inspect
import io
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch

from nasrl.env.evaluators.base import EvalResult, Evaluator, require_evaluator
from nasrl.env.spaces.space import Architecture, SearchSpace

DURATIONS = ("mnist1d", "flops")
MNIST1D_SECONDS = files("nasrl.env.runners") / "measured" / "mnist1d_child_seconds.csv"


class SimulatedDurations(Evaluator):
    """An evaluator that returns ``evaluator``'s results and takes a simulated time to do so.

    Args:
        evaluator: the evaluator whose results are returned (any :class:`Evaluator`; not one that
            shares weights, whose children do not train one by one).
        durations: ``mnist1d`` (measured child training times, drawn) or ``flops`` (the cost model above).
        time_scale: wall seconds waited per simulated second (0.01: a 13 s child waits 0.13 s; 0: no wait).
        seconds_per_gflop: ``flops`` only: seconds per GFLOP of one forward pass of one example. The default
            makes the median NAS-Bench-201 cell (94 MFLOPs) take 13.4 s, about the median measured MNIST-1D
            child (13.1 s), and the largest (440 MFLOPs, NAS-Bench-201's "220 M" multiply-adds) 48 s, 3.7x that.
        min_seconds: ``flops`` only: the time of a child without FLOPs. The default is the intercept of a
            straight-line fit of the measured MNIST-1D times to their children's FLOPs (4.2 s, rounded): the
            part of a child's time that does not grow with its size. (That fit's slope, 5760 s per
            GFLOP, models the ``cnn1d`` children themselves.)
        wait: whether :meth:`evaluate` waits the scaled duration (False: :class:`VirtualClockRunner`).

    The cache key is the wrapped evaluator's (:meth:`fingerprint`): the durations change no accuracy, so a
    simulated search reads and writes the same results as an unwrapped one (like a trainer's measured
    seconds, the simulated ones are not part of the key). ``cost`` is not the duration, which a real scheduler
    cannot know: with ``flops`` it is the FLOPs, else the wrapped evaluator's own ``cost``. Every other
    capability of :class:`~nasrl.env.evaluators.base.Evaluator` (``round_options``, ``observe``, ``keeps_state``,
    ``build``, ``count_costs``, ``input_shape``, ``device``, ...) is forwarded to the wrapped evaluator, each by
    name below; ``duration`` and ``wait`` are this wrapper's own.
    """

    def __init__(
        self,
        evaluator: Evaluator,
        durations: str = "mnist1d",
        time_scale: float = 1.0,
        seconds_per_gflop: float = 100.0,
        min_seconds: float = 4.0,
        wait: bool = True,
    ) -> None:
        require_evaluator(evaluator, "SimulatedDurations(evaluator=...)")
        if evaluator.shares_weights:
            raise ValueError(
                f"{type(evaluator).__name__} shares weights between its children, which do not train one by one: "
                "its durations cannot be simulated"
            )
        if durations not in DURATIONS:
            raise ValueError(f"durations must be one of {list(DURATIONS)}, got {durations!r}")
        for name, value in (("time_scale", time_scale), ("seconds_per_gflop", seconds_per_gflop)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if not (isinstance(min_seconds, (int, float)) and math.isfinite(min_seconds) and min_seconds >= 0):
            raise ValueError(f"min_seconds must be a number >= 0, got {min_seconds!r}")
        if durations == "flops" and evaluator.input_shape is None:  # its children's FLOPs cannot be counted
            raise ValueError(
                f"durations='flops' needs the FLOPs of each child, and {type(evaluator).__name__} has no "
                "input_shape (it does not build its children): use durations='mnist1d'"
            )
        self.evaluator = evaluator
        self.durations = durations
        self.time_scale = float(time_scale)
        self.seconds_per_gflop = float(seconds_per_gflop)
        self.min_seconds = float(min_seconds)
        self.wait = bool(wait)
        self.samples = mnist1d_child_seconds() if durations == "mnist1d" else ()

    # --- the wrapped evaluator's capabilities, forwarded by name --------------------------------------------

    @property
    def device(self) -> torch.device | None:
        """The wrapped evaluator's device; set, it is the wrapped evaluator's that changes (a worker's GPU)."""
        return self.evaluator.device

    @device.setter
    def device(self, value: torch.device | None) -> None:
        self.evaluator.device = value

    def fingerprint(self) -> dict[str, Any]:
        """The wrapped evaluator's: simulated durations do not change its results (see the class's docstring)."""
        return self.evaluator.fingerprint()

    @property
    def cacheable(self) -> bool:
        return self.evaluator.cacheable

    @property
    def shares_weights(self) -> bool:
        return self.evaluator.shares_weights

    @property
    def reward_is_accuracy(self) -> bool:
        return self.evaluator.reward_is_accuracy

    @property
    def score_label(self) -> str:
        return self.evaluator.score_label

    @property
    def summary_columns(self) -> tuple[str, ...]:
        return self.evaluator.summary_columns

    def describe_data(self) -> str | None:
        return self.evaluator.describe_data()

    def use_space(self, space: SearchSpace) -> None:
        self.evaluator.use_space(space)

    def start(self, seed: int) -> None:
        self.evaluator.start(seed)

    def round_options(self) -> dict[str, Any]:
        return self.evaluator.round_options()

    def observe(self, key: str, result: EvalResult) -> None:
        self.evaluator.observe(key, result)

    @property
    def keeps_state(self) -> bool:
        return self.evaluator.keeps_state

    def state_dict(self) -> dict[str, Any]:
        return self.evaluator.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.evaluator.load_state_dict(state)

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        return self.evaluator.input_shape

    def build(self, arch: Architecture) -> torch.nn.Module:
        return self.evaluator.build(arch)

    def count_costs(self, arch: Architecture) -> dict[str, int] | None:
        return self.evaluator.count_costs(arch)

    def counted_costs(self, arch: Architecture) -> dict[str, int]:
        return self.evaluator.counted_costs(arch)  # the wrapped evaluator's, counted once for both

    # --- its own --------------------------------------------------------------------------------------------

    def duration(self, arch: Architecture, seed: int) -> float:
        """Simulated training seconds of ``arch`` trained with child seed ``seed`` (unscaled by ``time_scale``)."""
        if self.durations == "flops":
            return self.min_seconds + self.flops(arch) / 1e9 * self.seconds_per_gflop
        return self.samples[int(draw(arch.tokens, seed) * len(self.samples))]

    def flops(self, arch: Architecture) -> int:
        """FLOPs of one forward pass of one example through ``arch``: the wrapped evaluator's
        ``count_costs(arch)["flops"]`` where it gives them, else counted on the network it builds."""
        return self.evaluator.counted_costs(arch)["flops"]

    def cost(self, arch: Architecture) -> float:
        """What a scheduler may know before training (runners start the costliest children first): the FLOPs
        with ``durations='flops'``, else the wrapped evaluator's ``cost`` (0 for all, the proposal order, by
        default)."""
        if self.durations == "flops":
            return float(self.flops(arch))
        return float(self.evaluator.cost(arch))

    def evaluate(self, arch: Architecture, seed: int, **round_options: Any) -> EvalResult:
        """The wrapped evaluator's result, with ``seconds`` the simulated duration (unscaled), after waiting
        (with ``wait``) until ``duration * time_scale`` wall seconds have passed since the call began: the
        wrapped evaluation's own time is part of the wait, never added to it. ``round_options`` are passed on."""
        start = time.perf_counter()
        result = self.evaluator.evaluate(arch, seed, **round_options)
        seconds = self.duration(arch, seed)
        if self.wait:
            time.sleep(max(0.0, seconds * self.time_scale - (time.perf_counter() - start)))
        return dataclasses.replace(result, seconds=seconds)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.evaluator!r}, durations={self.durations!r})"


def draw(tokens: Sequence[int], seed: int) -> float:
    """A number in [0, 1) fixed by ``tokens`` and ``seed`` (SHA-256, the same in every process and session)."""
    digest = hashlib.sha256(f"simulated duration:{seed}:{list(tokens)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@lru_cache(maxsize=1)
def mnist1d_child_seconds() -> tuple[float, ...]:
    """The measured MNIST-1D child training seconds shipped with nasrl, sorted (so that the draws do not depend
    on the order of the file's rows)."""
    with MNIST1D_SECONDS.open() as fh:
        rows = csv.DictReader(line for line in fh if not line.startswith("#"))
        return tuple(sorted(float(row["seconds"]) for row in rows))


# --- the data file: measured times, from search run folders ---------------------------------------------------


def measured_rows(run: Path) -> list[dict[str, Any]]:
    """The children of the search run folder ``run`` that were trained there (not reused, not cached, not
    failed), as rows of the data file. Refuses a run that is not ChildTrainer on MNIST-1D's ``cnn1d`` space at
    the default training settings, one child at a time: its times would be of another distribution."""
    import yaml

    from nasrl.env.evaluators.child_trainer import ChildTrainer
    from nasrl.env.evaluators.data import load_dataset

    config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    trainer = dict(config["env"]["evaluator"])
    if trainer.get("_target_") != "nasrl.env.evaluators.child_trainer.ChildTrainer":
        raise ValueError(
            f"{run}: evaluator {trainer.get('_target_')!r}, not nasrl.env.evaluators.child_trainer.ChildTrainer"
        )
    defaults = _defaults(ChildTrainer)
    differs = {k: v for k, v in trainer.items() if k not in ("_target_", "dataset", "stopping") and defaults[k] != v}
    differs |= {f"dataset.{k}": v for k, v in trainer["dataset"].items() if _defaults(load_dataset)[k] != v}
    if trainer.get("stopping", {}).get("enabled"):
        differs["stopping.enabled"] = True
    if config["env"].get("space") != "cnn1d" or config["search"]["workers"] != 1:
        differs |= {"env.space": config["env"].get("space"), "search.workers": config["search"]["workers"]}
    if differs:
        raise ValueError(f"{run}: not ChildTrainer on mnist1d's cnn1d at its defaults, one at a time: {differs}")
    with open(run / "history.csv", newline="") as fh:
        return [
            {"run": run.name, "index": r["index"], "params": r["params"],
             "flops": json.loads(r["metrics"] or "{}").get("flops", ""), "seconds": round(float(r["seconds"]), 3)}
            for r in csv.DictReader(fh)
            if r["reused"] == r["cached"] == r["failed"] == "0" and float(r["seconds"]) > 0
        ]  # fmt: skip


def _defaults(function: Any) -> dict[str, Any]:
    return {k: p.default for k, p in inspect.signature(function).parameters.items()}


def data_file(runs: Sequence[Path]) -> str:
    """The text of ``mnist1d_child_seconds.csv`` made from the run folders ``runs``: a header saying where the
    times come from and their summary, then one row per trained child."""
    from nasrl.env.evaluators.cost import machine_id
    from nasrl.env.threads import available_cores

    rows = [row for run in runs for row in measured_rows(run)]
    seconds = sorted(row["seconds"] for row in rows)
    median = statistics.median(seconds)
    p90 = seconds[math.ceil(0.9 * len(seconds)) - 1]
    stamps = [time.gmtime((run / "history.csv").stat().st_mtime) for run in runs]
    out = io.StringIO()
    for line in (
        "Child training seconds (EvalResult.seconds) of MNIST-1D searches: ChildTrainer at its defaults (10 epochs,",
        "batch 128, adam, cosine, 1 torch thread, CPU), cnn1d space, search.workers=1, one row per child trained.",
        f"Runs (history.csv): {', '.join(str(run) for run in runs)}; the searches finished between",
        f"{time.strftime('%Y-%m-%d %H:%M', min(stamps))} and {time.strftime('%H:%M UTC', max(stamps))}, on the machine"
        f" they were extracted on: {machine_id()}, {available_cores()} cores, shared with other people's jobs.",
        f"Extracted by: python -m nasrl.env.runners.durations {' '.join(str(run) for run in runs)}",
        f"{len(seconds)} children: median {median:.2f} s, p90 {p90:.2f} s, max {seconds[-1]:.2f} s "
        f"({seconds[-1] / median:.1f}x the median), min {seconds[0]:.2f} s.",
    ):
        out.write(f"# {line}\n")
    writer = csv.DictWriter(out, ["run", "index", "params", "flops", "seconds"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


if __name__ == "__main__":
    sys.stdout.write(data_file([Path(arg) for arg in sys.argv[1:]]))
