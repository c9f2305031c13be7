"""How well shared weights rank architectures: Kendall tau against stand-alone training, from one run.

    python experiments/bench_weight_sharing.py                         # 50 cnn1d architectures on MNIST-1D
    python experiments/bench_weight_sharing.py --variant optimizer=adam,lr=0.003 --variant epochs=25

1. ``--archs`` distinct architectures are sampled uniformly (each token uniform among its valid choices, as
   ``controller=random`` samples; ``nasrl.env.spaces.sampling.sample_distinct``) from the space and trained
   stand-alone, as a per-child search trains them (``ChildTrainer``'s defaults: 10 epochs of Adam), ``--workers``
   at a time; the results are kept in an evaluation cache (``--cache``), so a second run trains nothing.
2. For every ``--variant`` (``SharedWeightsTrainer`` settings, ``key=value`` separated by commas; the
   defaults of ``env=mnist1d_ws`` first), shared weights are trained as random search with weight sharing
   trains them (``epochs * shared_steps`` steps, one uniformly sampled child per mini-batch; a
   ``depth_power`` setting is ``controller.depth_power`` of ``controller=random``), then every architecture is
   scored on the validation split with them. ``--shared-seed`` seeds the shared weights and their sampling.
3. Printed per variant: Kendall tau and Spearman rho between the two validation accuracies, the overlap of
   the two top-5 sets (ties: the architecture sampled first), the stand-alone accuracy of the shared weights'
   top-1 against the best of the set, and the seconds its shared weights took to train.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from nasrl.controller.policy import TokenSpec
from nasrl.controller.random_search import RandomPolicy
from nasrl.controller.search import play_episode
from nasrl.controller.stats import ranking_quality
from nasrl.controller.weight_sharing import sample_architecture
from nasrl.env.childnet import ChildNetEnv
from nasrl.env.evaluators.weight_sharing import SharedWeightsTrainer
from nasrl.env.runners.local import ProcessRunner
from nasrl.env.spaces.sampling import sample_distinct
from nasrl.env.spaces.space import Architecture, load_space


def standalone(space: str, archs: list[Architecture], workers: int, cache: str, seed: int) -> list[float]:
    """Validation accuracies of ``archs`` trained stand-alone (cached), through the environment's own queue."""
    env = ChildNetEnv(space=space, cache=cache)
    env.reset(seed=seed)
    env.defer_training()
    played = [play_episode(env, None, list(arch.tokens)) for arch in archs]
    runner = ProcessRunner(env.evaluator, workers)
    try:
        trained = env.train_deferred(runner)
    finally:
        runner.close()
    print(f"trained {trained} of {len(archs)} children stand-alone (the rest were in {cache})", flush=True)
    finished = [env.complete(info) if info.get("deferred") else (reward, info) for reward, info in played]
    return [info["val_accuracy"] for _, info in finished]


def shared(space: str, archs: list[Architecture], settings: dict[str, Any], seed: int) -> tuple[list[float], float]:
    """Validation accuracies of ``archs`` with shared weights trained on randomly sampled children (uniform, or
    with the depths weighted by a ``depth_power`` setting, which goes to ``RandomPolicy``)."""
    settings = dict(settings)
    depth_power = settings.pop("depth_power", 0.0)
    evaluator = SharedWeightsTrainer(**settings)
    env = ChildNetEnv(space=space, evaluator=evaluator)
    policy = RandomPolicy(TokenSpec.from_env(env), seed=seed, depth_power=depth_power)
    env.reset(seed=seed)
    evaluator.start(seed)
    start = time.perf_counter()
    for _ in range(evaluator.epochs * evaluator.shared_steps):
        evaluator.train_step(sample_architecture(env, policy))
    seconds = time.perf_counter() - start
    return [evaluator.score(arch) for arch in archs], seconds


def parse_variant(text: str) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if value.lower() in ("true", "false"):
            settings[key] = value.lower() == "true"
        elif _is_number(value):
            settings[key] = int(value) if value.isdigit() else float(value)
        else:
            settings[key] = value
    return settings


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", default="cnn1d")
    parser.add_argument("--archs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shared-seed", type=int, action="append", help="shared weights seeds (default: --seed)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache", default="outputs/bench_weight_sharing.sqlite")
    parser.add_argument("--variant", action="append", default=[], help="SharedWeightsTrainer settings k=v,k=v")
    args = parser.parse_args()

    archs = sample_distinct(load_space(args.space), args.archs, args.seed)
    truth = np.array(standalone(args.space, archs, args.workers, args.cache, args.seed))
    print(f"stand-alone validation accuracy of the {len(archs)} architectures: "
          f"{truth.min():.4f} .. {truth.max():.4f}, median {np.median(truth):.4f}")  # fmt: skip
    print("| shared-weights settings | Kendall tau | Spearman rho | top-5 overlap | top-1 stand-alone (best) | s |")
    print("|---|---|---|---|---|---|")
    for variant in ["", *args.variant]:
        for seed in args.shared_seed or [args.seed]:
            scores, seconds = shared(args.space, archs, parse_variant(variant), seed)
            q = ranking_quality(scores, truth)
            label = (variant or "defaults") + (f" (shared seed {seed})" if args.shared_seed else "")
            print(f"| {label} | {q.tau:.3f} | {q.rho:.3f} | {q.overlap}/5 | {q.top1:.4f} ({q.best:.4f}) | "
                  f"{seconds:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
