"""Summaries that the experiments' tables share: mean ± standard deviation, and how well one ranking of
architectures agrees with another (Kendall's tau, Spearman's rho, the top-k overlap)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


def mean_std(values: Sequence[float], digits: int = 2) -> str:
    """``mean ± standard deviation`` of ``values`` with ``digits`` decimals: the mean alone for one value (no
    spread to give), ``-`` for none."""
    if not values:
        return "-"
    spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.{digits}f}{spread}"


@dataclass(frozen=True)
class RankingQuality:
    """How well ``scores`` rank architectures against their ``truth`` (e.g. shared-weights or cheap-child
    accuracies against stand-alone, full-budget ones)."""

    tau: float  # Kendall's tau between scores and truth
    rho: float  # Spearman's rho
    overlap: int  # architectures in both top-k sets
    top1: float  # the truth of the architecture with the best score
    best: float  # the best truth of all


def ranking_quality(scores: Sequence[float], truth: Sequence[float], k: int = 5) -> RankingQuality:
    """Compare the ranking by ``scores`` with the ranking by ``truth`` (one value each per architecture, higher
    better); ties in either keep the earlier architecture first."""
    if len(scores) != len(truth) or len(scores) < 2:
        raise ValueError(f"scores and truth need one value per architecture, at least 2; got {len(scores)} and "
                         f"{len(truth)}")  # fmt: skip
    s, t = np.asarray(scores, dtype=float), np.asarray(truth, dtype=float)
    order = np.argsort(-s, kind="stable")
    top_k = set(np.argsort(-t, kind="stable")[:k].tolist())
    return RankingQuality(
        tau=float(stats.kendalltau(s, t).statistic),
        rho=float(stats.spearmanr(s, t).statistic),
        overlap=len(top_k & set(order[:k].tolist())),
        top1=float(t[order[0]]),
        best=float(t.max()),
    )
