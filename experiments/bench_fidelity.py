"""How well cheap children rank architectures: Kendall tau of each cheap setting against the full budget.

    python experiments/bench_fidelity.py                  # 50 cnn1d architectures on MNIST-1D, the default settings
    python experiments/bench_fidelity.py --settings epochs=2 train_fraction=0.5,epochs=5 stopping.enabled=true

1. ``--archs`` distinct architectures are sampled uniformly from the space (``sample_distinct``, as
   ``experiments/bench_weight_sharing.py`` samples them: same seed, same architectures) and trained with the full budget
   (``ChildTrainer``'s defaults, changed by ``--full``), as ``bench_weight_sharing.py`` trains them: with the
   same cache (``--cache``) their results are already there and cost nothing (the first line says how many
   were trained).
2. Each setting of ``--settings`` (``ChildTrainer`` settings ``key=value`` separated by commas, applied on
   top of ``--full``; ``stopping.KEY=VALUE`` sets the early-stopping rule) trains the same architectures with
   the same child seeds, ``--workers`` at a time, results cached the same way, so a rerun trains nothing. A
   setting with early stopping plays the architectures in sample order, in rounds of ``--round-size`` as a
   search trains its rounds: each round's children are judged against the completed children of the rounds
   before it (the round size, not ``--workers``, fixes the result).
3. Printed per setting: Kendall tau and Spearman rho between its validation accuracies (a stopped child's
   partial one) and the full budget's, the overlap of the two top-5 sets, the full-budget accuracy of the
   setting's top-1 (and the best of the set), the training steps relative to the full budget (exact, the same
   on any machine), the measured child-training seconds relative to the full budget's (each child's own
   time on one thread: noisy on a shared machine, and the full budget's were measured in an earlier run),
   and how many children early stopping ended.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from nasrl.controller.search import play_episode
from nasrl.controller.stats import ranking_quality
from nasrl.env.childnet import ChildNetEnv
from nasrl.env.evaluators.child_trainer import ChildTrainer
from nasrl.env.runners import make_runner
from nasrl.env.spaces.sampling import sample_distinct
from nasrl.env.spaces.space import Architecture, load_space

DEFAULT_SETTINGS = [
    "epochs=1",
    "epochs=2",
    "epochs=3",
    "epochs=5",
    "train_fraction=0.25",
    "train_fraction=0.5",
    "stopping.enabled=true",
    "epochs=3,train_fraction=0.5",
]


@dataclass
class Outcome:
    """What one setting gave for the architectures, in sample order."""

    accuracy: list[float]  # validation accuracy (partial for a stopped child)
    steps: list[int]  # optimizer steps each child trained
    seconds: list[float]  # each child's measured training seconds (recorded when it was trained)
    stopped: int  # children early stopping ended
    trained: int  # children trained now (the others were cached)
    total_steps: int  # steps of one child's whole budget in this setting


def parse_settings(text: str) -> dict[str, Any]:
    """``"epochs=2,stopping.enabled=true"`` -> ``{"epochs": 2, "stopping": {"enabled": True}}``: numbers and
    booleans converted, a dotted key nested."""
    settings: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"a setting must read key=value (keys separated by commas), got {item!r}")
        node = settings
        *parents, last = key.strip().split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[last] = _value(value.strip())
    return settings


def _value(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lower() in ("null", "none"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` on top, nested mappings merged key by key."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def evaluate_setting(
    space: str,
    archs: list[Architecture],
    settings: dict[str, Any],
    *,
    workers: int,
    cache: str | None,
    seed: int,
    round_size: int,
) -> Outcome:
    """Validation accuracies of ``archs`` trained with ``ChildTrainer(**settings)`` through the environment's own
    queue (the same path, child seeds and cache keys as a search): in one round, or in rounds of ``round_size``
    in sample order when early stopping is on (then the environment hands the rule each result it reads)."""
    trainer = ChildTrainer(**settings)
    env = ChildNetEnv(space=space, evaluator=trainer, cache=cache)
    env.reset(seed=seed)
    size = round_size if trainer.stopping.enabled else len(archs)
    runner = make_runner(trainer, workers)
    infos: list[dict[str, Any]] = []
    trained = 0
    try:
        for start in range(0, len(archs), size):
            chunk = archs[start : start + size]
            env.defer_training()
            played = [play_episode(env, None, list(arch.tokens)) for arch in chunk]
            trained += env.train_deferred(runner)
            infos += [env.complete(info)[1] if info.get("deferred") else info for _, info in played]
    finally:
        runner.close()
    per_epoch, total = trainer.steps_per_epoch(), trainer.total_steps()
    steps = [min(total, int(i["stopped_epoch"]) * per_epoch) if i.get("stopped") else total for i in infos]
    return Outcome(
        accuracy=[float(i["val_accuracy"]) for i in infos],
        steps=steps,
        seconds=[float(i["train_seconds"]) for i in infos],
        stopped=sum(bool(i.get("stopped")) for i in infos),
        trained=trained,
        total_steps=total,
    )


def compare(cheap: Outcome, full: Outcome) -> dict[str, float]:
    """The cheap setting's ranking against the full budget's, and what it cost relative to it."""
    q = ranking_quality(cheap.accuracy, full.accuracy)
    return {
        "tau": q.tau,
        "rho": q.rho,
        "top5": q.overlap,
        "top1": q.top1,
        "best": q.best,
        "steps": sum(cheap.steps) / (len(full.steps) * full.total_steps),
        "seconds": sum(cheap.seconds) / max(sum(full.seconds), 1e-9),
        "stopped": cheap.stopped,
    }


def table_row(name: str, c: dict[str, float], count: int) -> str:
    return (
        f"| {name} | {c['tau']:.3f} | {c['rho']:.3f} | {c['top5']}/5 | {c['top1']:.4f} ({c['best']:.4f}) | "
        f"{c['steps']:.3f} | {c['seconds']:.3f} | {c['stopped']}/{count} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", default="cnn1d")
    parser.add_argument("--archs", type=int, default=50, help="distinct architectures (50 or more for a table)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache", default="outputs/bench_weight_sharing.sqlite")
    parser.add_argument("--full", default="", help="the full budget's ChildTrainer settings, k=v,k=v (default: none)")
    parser.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS, help="cheap settings, each k=v,k=v")
    parser.add_argument("--round-size", type=int, default=2, help="children per round when early stopping is on")
    args = parser.parse_args()
    if args.archs < 2 or args.round_size < 1:
        raise SystemExit(f"error: --archs must be >= 2 and --round-size >= 1, got {args.archs} and {args.round_size}")
    try:
        full_settings = parse_settings(args.full)
        cheap_settings = [merged(full_settings, parse_settings(s)) for s in args.settings]
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None

    archs = sample_distinct(load_space(args.space), args.archs, args.seed)
    common = {"workers": args.workers, "cache": args.cache, "seed": args.seed, "round_size": args.round_size}
    full = evaluate_setting(args.space, archs, full_settings, **common)
    truth = np.array(full.accuracy)
    print(f"full budget ({args.full or 'ChildTrainer defaults'}): trained {full.trained} of {len(archs)} children "
          f"(the rest were in {args.cache}); validation accuracy {truth.min():.4f} .. {truth.max():.4f}, "
          f"median {np.median(truth):.4f}; {sum(full.seconds):.1f} child-training seconds", flush=True)  # fmt: skip
    print(
        "| setting | Kendall tau | Spearman rho | top-5 overlap | full-budget accuracy of its top-1 (best) | "
        "training steps (relative) | child-training seconds (relative) | stopped |"
    )
    print("|---|---|---|---|---|---|---|---|", flush=True)
    for text, settings in zip(args.settings, cheap_settings):
        cheap = evaluate_setting(args.space, archs, settings, **common)
        print(f"{text}: trained {cheap.trained} of {len(archs)} children", file=sys.stderr, flush=True)
        print(table_row(text, compare(cheap, full), len(archs)), flush=True)


if __name__ == "__main__":
    main()
