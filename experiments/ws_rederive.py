"""Derive again from a finished weight-sharing search, with other derivation settings, without searching again.

    python experiments/ws_rederive.py outputs/ws_result/search_lstm_batch5_0                 # reproduces derived.csv
    python experiments/ws_rederive.py RUN [RUN ...] --samples 300                            # a larger derivation
    python experiments/ws_rederive.py RUN [RUN ...] --standalone-top 3                       # a stand-alone shortlist
    python experiments/ws_rederive.py RUN --score outputs/mnist1d_ref/search_lstm_0          # rank another architecture

For each run folder of ``nasrl-train env=mnist1d_ws ...`` (or another ``SharedWeightsTrainer`` search): the
policy, shared weights and random states are loaded from its final ``checkpoint.pt``, exactly as a resumed
search would hold them before its derivation, and the derivation (``controller/weight_sharing.py``'s
``derive``) runs with ``--samples`` architectures. With the run's own ``derive_samples`` it picks the
architecture the search picked (the script says whether it did). ``--standalone-top K`` also trains the K best
by shared-weights score stand-alone, as a per-child search trains a child (``ChildTrainer``'s defaults: 10
epochs of Adam on the run's data set, child seed ``--child-seed``), and picks the best by that validation
accuracy instead. ``--score ARCH`` (repeatable; a run folder, its ``best.json`` or tokens, as ``nasrl-retrain``
takes them) scores another architecture with the shared weights and says how many candidates score higher.

Printed per run: the pick by shared-weights score and, with ``--standalone-top``, the shortlist and its pick,
each with its tokens, so that ``nasrl-retrain "arch=[TOKENS]" seed=S`` retrains it (docs/results/weight-sharing.md,
where these were measured). Writes nothing into the run folders.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym

from nasrl.controller.build import build_env, build_policy
from nasrl.controller.policy import Policy
from nasrl.controller.runfolder import SearchError, load_checkpoint, read_best, read_config
from nasrl.controller.weight_sharing import derive
from nasrl.env.evaluators.child_trainer import ChildTrainer
from nasrl.env.spaces.space import Architecture
from nasrl.scripts.retraining import resolve_architecture


def load_search(run: Path) -> tuple[gym.Env, Policy, Any, int]:
    """The environment, policy and shared-weights evaluator of a finished search, as its checkpoint left them."""
    if not (run / "checkpoint.pt").exists():
        raise SystemExit(f"{run}: not a finished nasrl-train run folder (it has no checkpoint.pt)")
    try:
        cfg = read_config(run)
        env = build_env(cfg.env, None)
        policy = build_policy(cfg.controller, env, cfg.seed)
        evaluator = env.unwrapped.evaluator  # type: ignore[attr-defined]
        if not getattr(evaluator, "shares_weights", False):
            raise SearchError(f"not a weight-sharing search (its evaluator is {type(evaluator).__name__})")
        evaluator.start(cfg.seed)
        load_checkpoint(run / "checkpoint.pt", policy, evaluator)
    except SearchError as exc:
        raise SystemExit(f"{run}: {exc}") from None
    env.reset(seed=cfg.seed)  # what run_search does before its weight-sharing schedule
    return env, policy, evaluator, int(cfg.seed)


def in_space(given: str, space: Any) -> Architecture:
    """The architecture ``given`` (as ``nasrl-retrain arch=`` takes it) decoded in the search's ``space``."""
    try:
        tokens = resolve_architecture(given, space.name)[0].tokens
        return space.decode(list(tokens))
    except ValueError as exc:  # RetrainError, SpaceError, or tokens that the search's space cannot decode
        raise SystemExit(f"--score {given}: {exc}") from None


class Shortlisted(NamedTuple):
    """A candidate of ``--standalone-top`` with its stand-alone validation accuracy."""

    standalone: float
    arch: Architecture
    params: int


def describe(arch: Architecture, params: int) -> str:
    return f"{params:,} parameters, tokens [{','.join(map(str, arch.tokens))}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of finished weight-sharing searches")
    parser.add_argument("--samples", type=int, default=None, help="architectures to derive from (default: the run's)")
    parser.add_argument("--standalone-top", type=int, default=0, help="train this many of the best stand-alone")
    parser.add_argument("--child-seed", type=int, default=0, help="seed of the stand-alone children (default 0)")
    parser.add_argument("--score", action="append", default=[], metavar="ARCH",
                        help="also score ARCH (a run folder, its best.json or tokens) and rank it")  # fmt: skip
    args = parser.parse_args()
    if args.samples is not None and args.samples < 1:
        parser.error(f"--samples must be a positive integer, got {args.samples}")
    if args.standalone_top < 0:
        parser.error(f"--standalone-top must be 0 (none) or a positive integer, got {args.standalone_top}")
    for run in args.runs:
        env, policy, evaluator, seed = load_search(run)
        evaluator.derive_samples = args.samples or evaluator.derive_samples
        start = time.perf_counter()
        derived = derive(env, policy, evaluator)
        seconds = time.perf_counter() - start
        score, arch = derived.best
        searched = read_best(run)["tokens"] if (run / "best.json").exists() else None
        same = "the search's own pick" if list(arch.tokens) == searched else "not the search's pick"
        print(f"{run} (seed {seed}), {evaluator.derive_samples} samples, {len(derived.candidates)} distinct, "
              f"{seconds:.0f} s")  # fmt: skip
        print(f"  by shared-weights score: {score:.4f}, {describe(arch, evaluator.standalone_params(arch))} ({same})")
        for given in args.score:
            other = in_space(given, env.unwrapped.space)  # type: ignore[attr-defined]
            shared = evaluator.score(other)
            higher = sum(candidate > shared for candidate, _ in derived.candidates)
            print(f"  --score {given}: {shared:.4f}, {higher} of the {len(derived.candidates)} candidates score "
                  f"higher; {describe(other, evaluator.standalone_params(other))}")  # fmt: skip
        if args.standalone_top:
            if not hasattr(evaluator, "dataset"):  # a language model's shared cell: ChildTrainer trains classifiers
                raise SystemExit(f"{run}: --standalone-top trains classifiers; this search's are language models")
            trainer = ChildTrainer(evaluator.dataset)
            shortlist = []
            for shared, candidate in derived.candidates[: args.standalone_top]:
                result = trainer.evaluate(candidate, args.child_seed)
                shortlist.append(Shortlisted(result.val_accuracy, candidate, result.params))
                print(f"    stand-alone {result.val_accuracy:.4f} (shared {shared:.4f}, {result.seconds:.0f} s): "
                      f"{describe(candidate, result.params)}")  # fmt: skip
            best = max(shortlist, key=lambda row: row.standalone)  # ties: the better shared score (listed first)
            pick = describe(best.arch, best.params)
            print(f"  by stand-alone accuracy among the top {len(shortlist)}: {best.standalone:.4f}, {pick}")


if __name__ == "__main__":
    main()
