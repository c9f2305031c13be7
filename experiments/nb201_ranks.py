"""Where each search's best-reward cell ranks among the 15,625 cells of the NAS-Bench-201 table.

    python experiments/nb201_ranks.py --table ../shared/data/nb201/cifar10.csv --strategy lstm_gp --first-seed 1000
    python experiments/nb201_ranks.py --table T --strategy lstm_gp -- strategies.lstm_gp.warmup=35

``nasrl-benchmark`` reports the mean ``valid_acc_200ep`` of the best-reward cells; this says why a mean is
what it is. It runs the benchmark's searches (``search_once``, the ``nasrl-train`` loop; a strategy is one of
``conf/benchmark.yaml``'s, with ``--`` Hydra overrides after the options) and prints, after 25, 50, 100 and 200
distinct evaluations, how many seeds have as their best-reward cell the table's best (rank 0: no cell has a
higher ``valid_acc_12ep``), rank 1, ... 8, or a rank of 9 or more, and the cells outside the top 9 that most
seeds have as their best.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
from collections import Counter

import numpy as np
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from nasrl.scripts.app import register_configs
from nasrl.scripts.benchmark import best_so_far, search_once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", required=True, help="the NAS-Bench-201 CSV (nasrl-data nb201 builds one)")
    parser.add_argument("--strategy", default="lstm_gp")
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the benchmark's config")
    args = parser.parse_args()

    register_configs()
    with initialize_config_module("nasrl.conf", version_base=None):  # the installed configs
        cfg = compose("benchmark", overrides=[f"env.table={args.table}", *args.overrides])
    strategy = OmegaConf.to_container(cfg.strategies[args.strategy], resolve=True)
    env = OmegaConf.to_container(cfg.env, resolve=True)
    simulated = {"workers": 1, "mode": "rounds", "durations": "flops"}
    tasks = [
        (args.strategy, strategy, env, seed, args.budget, 20 * args.budget, simulated)
        for seed in range(args.first_seed, args.first_seed + args.seeds)
    ]
    with mp.get_context("spawn").Pool(args.workers) as pool:
        searches = pool.map(search_once, tasks, chunksize=2)

    with open(args.table, newline="") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda row: -float(row["valid_acc_12ep"]))
    rewards_desc = np.array([float(row["valid_acc_12ep"]) for row in rows])
    print(f"{args.strategy}, seeds {args.first_seed}-{args.first_seed + args.seeds - 1} {' '.join(args.overrides)}")
    for k in (25, 50, 100, 200):
        if k > args.budget:
            continue
        ranks, outside = [], Counter()
        for _, _, rewards, metrics, _ in searches:
            best = 100 * max(rewards[:k])  # the env's reward is valid_acc_12ep / 100
            rank = int(np.sum(rewards_desc > best + 1e-6))  # cells with a higher reward
            ranks.append(rank)
            if rank >= 9:
                outside[(rank, metrics[int(np.argmax(rewards[:k]))]["valid_acc_200ep"])] += 1
        values = [best_so_far(r, m, "valid_acc_200ep", args.budget)[k - 1] for _, _, r, m, _ in searches]
        counts = np.bincount(np.minimum(ranks, 9), minlength=10).tolist()
        print(f"at {k}: valid_acc_200ep {np.mean(values):.3f}; seeds by rank 0..8, 9+: {counts}")
        for (rank, acc_200), n in outside.most_common(2):
            arch = next(row["arch"] for row in rows[rank:] if abs(float(row["valid_acc_200ep"]) - acc_200) < 1e-6)
            print(f"   {n} seeds best at rank {rank}: {arch} ({rewards_desc[rank]} / {acc_200})")


if __name__ == "__main__":
    main()
