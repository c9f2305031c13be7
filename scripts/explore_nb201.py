"""Exploratory variants of the LSTM controller on the NAS-Bench-201 table, outside the search loop.

    python scripts/explore_nb201.py --variant plain --seeds 100
    python scripts/explore_nb201.py --variant gp_filter --candidates 20 --seeds 100
    python scripts/explore_nb201.py --variant rank --scale 0.1 --seeds 100

What issue 17 tried on the way to a more sample-efficient controller and what did not help, kept so that the
figures in the README's "A controller that needs fewer evaluations" can be rerun. Each variant drives the
package's own ``LSTMPolicy`` (default settings) on the six NAS-Bench-201 decisions directly (the table is the
reward, ``valid_acc_12ep``; ``valid_acc_200ep`` of the best-reward cell is reported, as ``nasrl-benchmark``
does), so the plain variant is the benchmark's ``lstm`` strategy up to the random draws of the environment:

- ``plain``: the LSTM as it is.
- ``gp_filter``: a learned predictor filters the controller's samples before any evaluation. After
  ``--warmup`` evaluations, each proposal is the best of ``--candidates`` architectures sampled from the LSTM
  and not yet evaluated, by the posterior mean (plus ``--beta`` standard deviations) of a Gaussian process on
  the one-hot tokens (kernel exp(-Hamming distance / ``--length``), noise ``--noise``, fitted to the
  standardised rewards seen so far); the LSTM learns from the chosen one as from its own sample.
- ``rank``: REINFORCE on a reward's rank among the rewards seen so far (times ``--scale``) instead of the
  accuracy itself.

None of these beat ``plain`` on the reporting seeds (README). The filter that did, and became a strategy, is
``controller=lstm_gp`` (``controller/gp_filter.py``): rewards warped to normal scores of their ranks, the
kernel's length and the noise chosen by marginal likelihood at each fit, the candidates drawn in one batch.
Prints the mean
``valid_acc_200ep`` of the best-reward cell after 25, 50 and 100 distinct evaluations over seeds 1000 ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy.stats import norm

from nasrl.controller.lstm import LSTMPolicy
from nasrl.controller.policy import TokenSpec
from nasrl.env.evaluators.nb201_table import NB201Table
from nasrl.env.spaces.nb201_cell import OPS, SPACE

EDGES = SPACE["depth"]
SPEC = TokenSpec(("op",), ("categorical",), (tuple(OPS),), len(OPS), EDGES)


def sample(policy: LSTMPolicy) -> tuple[int, ...]:
    """One episode of the policy on the six edges (the observations ``env=nb201`` gives)."""
    policy.start_episode()
    tokens: list[int] = []
    for edge in range(EDGES):
        obs = {"decision": 0, "layer": edge, "source": 0, "prev_token": tokens[-1] if tokens else len(OPS)}
        tokens.append(policy.act({**obs, "action_mask": np.ones(len(OPS), dtype=np.int8)}))
    return tuple(tokens)


def one_hot(cells: list[tuple[int, ...]]) -> np.ndarray:
    x = np.zeros((len(cells), EDGES * len(OPS)))
    for row, cell in enumerate(cells):
        x[row, [edge * len(OPS) + op for edge, op in enumerate(cell)]] = 1
    return x


def gp_score(seen: dict[tuple[int, ...], float], cells: list[tuple[int, ...]], args: argparse.Namespace) -> np.ndarray:
    """Posterior mean + beta * std of a GP fitted to the rewards seen, at ``cells``. ``--target copula`` warps the
    rewards to normal scores of their ranks (else they are standardised); ``--length 0`` picks the length scale
    and the noise with the highest marginal likelihood on a grid at each fit (else ``--length``, ``--noise``)."""
    x, y = one_hot(list(seen)), np.array(list(seen.values()))
    if args.target == "copula":
        z = norm.ppf((y.argsort().argsort() + 0.5) / len(y))
    else:
        z = (y - y.mean()) / (y.std() + 1e-9)
    hamming = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1) / 2
    grid = [(args.length, args.noise)] if args.length else [(length, noise) for length in LENGTHS for noise in NOISES]
    best = None
    for length, noise in grid:
        chol = np.linalg.cholesky(np.exp(-hamming / length) + noise * np.eye(len(x)))
        alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, z))
        log_likelihood = -0.5 * z @ alpha - np.log(np.diag(chol)).sum()
        if best is None or log_likelihood > best[0]:
            best = (log_likelihood, length, chol, alpha)
    _, length, chol, alpha = best
    k_star = np.exp(-((one_hot(cells)[:, None, :] - x[None, :, :]) ** 2).sum(-1) / 2 / length)
    v = np.linalg.solve(chol, k_star.T)
    return k_star @ alpha + args.beta * np.sqrt(np.maximum(1 - (v * v).sum(0), 1e-12))


LENGTHS = [0.5, 1, 2, 4, 8, 16]
NOISES = [0.01, 0.1, 0.3]


def search(seed: int, rewards: dict, reported: dict, args: argparse.Namespace) -> list[float]:
    policy = LSTMPolicy(SPEC, seed=seed)
    seen: dict[tuple[int, ...], float] = {}
    curve: list[float] = []
    best, episodes = -np.inf, 0
    while len(seen) < args.budget and episodes < 20 * args.budget:
        episodes += 1
        cell = sample(policy)
        if args.variant == "gp_filter" and len(seen) >= args.warmup:
            cells, episodes_kept = [cell], [policy._proposed.pop()]  # the policy's record of each sample
            for _ in range(5 * args.candidates):
                if len(cells) >= args.candidates:
                    break
                cells.append(sample(policy))
                episodes_kept.append(policy._proposed.pop())
            new = [i for i, c in enumerate(cells) if c not in seen] or [0]
            pick = new[int(np.argmax(gp_score(seen, [cells[i] for i in new], args)))]
            cell = cells[pick]
            policy._proposed.append(episodes_kept[pick])
        reward = rewards[cell]
        if args.variant == "rank":
            values = np.array(list(seen.values()) or [reward])
            rank = float((values < reward).mean() + 0.5 * (values == reward).mean())
            policy.end_episode(args.scale * rank, {"tokens": cell})
        else:
            policy.end_episode(reward, {"tokens": cell})
        if cell not in seen:
            seen[cell] = reward
            if reward > best:
                best, value = reward, reported[cell]
            curve.append(value)
    return curve + [curve[-1]] * (args.budget - len(curve))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", default="../shared/data/nb201/cifar10.csv")
    parser.add_argument("--variant", choices=["plain", "gp_filter", "rank"], default="plain")
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--length", type=float, default=1.0)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--beta", type=float, default=0.0)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--target", choices=["std", "copula"], default="std")
    args = parser.parse_args()
    torch.set_num_threads(1)
    table = NB201Table(Path(args.table))
    rewards = {tuple(OPS.index(op) for op in ops): row["valid_acc_12ep"] / 100 for ops, row in table.rows.items()}
    reported = {tuple(OPS.index(op) for op in ops): row["valid_acc_200ep"] for ops, row in table.rows.items()}
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    curves = np.array([search(s, rewards, reported, args) for s in seeds])
    at = {b: curves[:, b - 1] for b in (25, 50, 100) if b <= args.budget}
    summary = "  ".join(f"at {b}: {v.mean():.2f} ± {v.std(ddof=1):.2f}" for b, v in at.items())
    print(f"{vars(args)}\nvalid_acc_200ep of the best-reward cell, {args.seeds} seeds: {summary}")


if __name__ == "__main__":
    main()
