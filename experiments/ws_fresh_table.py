"""Print docs/results/weight-sharing.md's table of weight sharing against the per-child search on fresh MNIST-1D
test examples.

    python experiments/ws_fresh_table.py [WS_FOLDER] [REF_FOLDER]   # outputs/ws_result outputs/mnist1d_ref

Tests every retrained model of the rows below again with ``experiments/retest.py`` (50,000 fresh examples, test
seed 0; about 10 minutes on 2 cores) and prints, per row, the fresh and standard test accuracies, then the
figures that page draws from them: retraining noise, the per-child search against the LSTM with weight
sharing and the LSTM against random search (Welch's t-tests), and how much easier the standard 1000 examples
are. WS_FOLDER is what ``experiments/ws_result.sh`` filled (with the page's extra retrainings); REF_FOLDER holds
the per-child searches retrained as that page says.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from retest import retest  # experiments/retest.py: python puts this script's folder first on sys.path
from scipy import stats

from nasrl.controller.stats import mean_std

# (label, folder name with {s} for the seed and {ws} / {ref} for the two folders, seeds, seeds whose folder is
# another row's because the derivation picked the search's own architecture there)
ROWS = (
    ("per-child search, today's code", "{ref}/retrain_lstm_{s}", (0, 1, 2), {}),
    ("the same architectures retrained with seeds 5 to 7", "{ref}/retrain2_lstm_{s}", (0, 1, 2), {}),
    ("ENAS: LSTM, 5 per update, no self-imitation", "{ws}/retrain_lstm_batch5_{s}", range(5), {}),
    ("the same architectures retrained with seeds 5 to 9", "{ws}/retrain2_lstm_batch5_{s}", range(5), {}),
    ("its 3 best shared scores trained stand-alone", "{ws}/retrain_lstm_batch5_shortlist_{s}", range(5),
     {2: "{ws}/retrain_lstm_batch5_2"}),
    ("its best shared score of 300 samples", "{ws}/retrain_lstm_batch5_d300_{s}", range(5),
     {1: "{ws}/retrain_lstm_batch5_1"}),
    ("random search with weight sharing", "{ws}/retrain_random_{s}", range(5), {}),
    ("ENAS: LSTM, the controller's defaults", "{ws}/retrain_lstm_{s}", range(3), {}),
    ("ENAS: LSTM with ENAS's controller settings", "{ws}/retrain_lstm_enas_{s}", range(3), {}),
    ("random search with weight sharing, depth_power=2", "{ws}/retrain_random_depth2_{s}", range(3), {}),
)  # fmt: skip
PER_CHILD, PER_CHILD_AGAIN, LSTM, LSTM_AGAIN, RANDOM = (ROWS[i][0] for i in (0, 1, 2, 3, 6))
TEST_EXAMPLES, TEST_SEED = 50000, 0


def main(ws: Path, ref: Path) -> None:
    folders = {
        label: [Path(subs.get(s, pattern).format(s=s, ws=ws, ref=ref)) for s in seeds]
        for label, pattern, seeds, subs in ROWS
    }  # fmt: skip
    tested = {run: retest(run, TEST_EXAMPLES, TEST_SEED) for runs in folders.values() for run in runs}
    print("| search | fresh test accuracy (%) | mean ± std | the same models on the 1000 standard test examples |")
    print("|---|---|---|---|")
    for label, runs in folders.items():
        fresh, standard = column(tested, runs), column(tested, runs, "standard")
        print(f"| {label} | {' / '.join(f'{f:.2f}' for f in fresh)} | {mean_std(fresh)} | "
              f"{' / '.join(f'{a:.1f}' for a in standard)} ({statistics.mean(standard):.2f}) |")  # fmt: skip

    averaged = {}
    for first, again in ((PER_CHILD, PER_CHILD_AGAIN), (LSTM, LSTM_AGAIN)):
        a, b = column(tested, folders[first]), column(tested, folders[again])
        diffs = [abs(x - y) for x, y in zip(a, b)]
        std = (statistics.mean(d * d for d in diffs) / 2) ** 0.5  # of one retraining, from the pairs
        print(f"\n{first}, retrained twice: the fresh accuracies differ by {min(diffs):.2f} to {max(diffs):.2f} "
              f"(a retraining's standard deviation {std:.3f})", end="")  # fmt: skip
        averaged[first] = [(x + y) / 2 for x, y in zip(a, b)]
    per_child, lstm = averaged[PER_CHILD], averaged[LSTM]
    gap = statistics.mean(per_child) - statistics.mean(lstm)
    print(f"\nper-child search {mean_std(per_child)} against the LSTM with weight sharing {mean_std(lstm)}, each "
          f"architecture averaged over its two retrainings: a gap of {gap:.2f}, "
          f"Welch p = {stats.ttest_ind(per_child, lstm, equal_var=False).pvalue:.3f}")  # fmt: skip
    first_lstm, random = column(tested, folders[LSTM]), column(tested, folders[RANDOM])
    print(f"LSTM {mean_std(first_lstm)} against random search with weight sharing {mean_std(random)}: Welch p = "
          f"{stats.ttest_ind(first_lstm, random, equal_var=False).pvalue:.3f}")  # fmt: skip
    lower = sum(r["fresh"] < r["standard"] for r in tested.values())
    print(f"{lower} of the {len(tested)} models score less on fresh examples than on the standard ones")
    per_child_runs = set(folders[PER_CHILD] + folders[PER_CHILD_AGAIN])
    for name, runs in (("per-child", per_child_runs), ("weight-sharing", set(tested) - per_child_runs)):
        offsets = [100 * (tested[r]["standard"] - tested[r]["fresh"]) for r in runs if tested[r]["standard"] >= 0.99]
        print(f"{name} models at 99.0 or more on the standard examples: {len(offsets)}, which lose "
              f"{min(offsets):.2f} to {max(offsets):.2f} points on fresh ones "
              f"({statistics.mean(offsets):.2f} on average)")  # fmt: skip


def column(tested: dict[Path, dict], runs: list[Path], key: str = "fresh") -> list[float]:
    return [100 * tested[run][key] for run in runs]


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/ws_result"),
         Path(sys.argv[2] if len(sys.argv) > 2 else "outputs/mnist1d_ref"))  # fmt: skip
