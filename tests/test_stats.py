"""The experiments' shared summaries: mean ± std for tables, and ranking quality."""

from __future__ import annotations

import pytest

from nasrl.controller.stats import mean_std, ranking_quality


def test_mean_std_gives_the_spread_of_two_or_more_the_mean_of_one_and_a_dash_for_none() -> None:
    assert mean_std([99.6, 99.3, 99.4]) == "99.43 ± 0.15"  # docs/results/mnist1d.md's row
    assert mean_std([52.5, 50.1], 1) == "51.3 ± 1.7" and mean_std([2.4], 3) == "2.400" and mean_std([]) == "-"


def test_ranking_quality_of_a_perfect_a_reversed_and_a_tied_ranking() -> None:
    truth = [0.90, 0.95, 0.80, 0.99, 0.85, 0.70, 0.60]
    perfect = ranking_quality([t - 0.5 for t in truth], truth, k=3)
    assert (perfect.tau, perfect.rho, perfect.overlap, perfect.top1, perfect.best) == (1.0, 1.0, 3, 0.99, 0.99)
    reversed_ = ranking_quality([-t for t in truth], truth, k=3)
    assert reversed_.tau == pytest.approx(-1.0) and reversed_.overlap == 0 and reversed_.top1 == 0.60
    tied = ranking_quality([1, 1, 0, 0, 0, 0, 0], truth, k=2)  # a tie keeps the earlier architecture first
    assert tied.top1 == 0.90 and tied.overlap == 1
    with pytest.raises(ValueError, match="one value per architecture, at least 2; got 3 and 7"):
        ranking_quality([1, 2, 3], truth)
