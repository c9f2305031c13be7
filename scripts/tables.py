"""What the scripts that print the README's tables share."""

from __future__ import annotations

import statistics


def mean_std(values: list[float], digits: int = 2) -> str:
    """``mean ± standard deviation`` of ``values`` with ``digits`` decimals: the mean alone for one value (no
    spread to give), ``-`` for none."""
    if not values:
        return "-"
    spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.{digits}f}{spread}"
