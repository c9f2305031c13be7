"""Print the weight-sharing table of docs/results/weight-sharing.md from the folder that
``experiments/ws_result.sh`` filled.

python experiments/ws_table.py [FOLDER] [SEED ...]      # seeds 0 1 2 unless given
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from nasrl.controller.runfolder import read_best
from nasrl.controller.stats import mean_std

SEEDS = (0, 1, 2)  # what experiments/ws_result.sh runs unless told


def main(out: Path, seeds: tuple[int, ...] = SEEDS) -> None:
    print(f"| search | test accuracy (%), seeds {' / '.join(map(str, seeds))} | mean ± std | parameters | "
          "search minutes | shared-weights val. accuracy of the derived architecture |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    strategies = (
        ("lstm", "ENAS: LSTM with weight sharing, the controller's defaults"),
        ("lstm_batch5", "ENAS: LSTM, 5 architectures per update, no self-imitation"),
        ("lstm_enas", "ENAS: LSTM with ENAS's controller settings (lr 1e-3, tanh 1.5, entropy 1e-4, 20 per update)"),
        ("random", "random search with weight sharing"),
        ("random_depth2", "random search with weight sharing, `controller.depth_power=2`"),
    )
    for name, label in strategies:
        accs, params, minutes, shared = [], [], [], []
        for seed in seeds:
            result = out / f"retrain_{name}_{seed}" / "result.json"
            search = out / f"search_{name}_{seed}"
            if not result.exists():
                continue
            retrained = json.loads(result.read_text())
            accs.append(100 * retrained["test_accuracy"])
            params.append(f"{retrained['params'] / 1000:.0f}k")
            best = read_best(search)
            minutes.append(f"{best['search_seconds'] / 60:.1f}")
            shared.append(f"{best['val_accuracy']:.4f}")
        if not accs:
            continue
        print(
            f"| {label} | {' / '.join(f'{a:.1f}' for a in accs)} | {mean_std(accs)} | "
            f"{' / '.join(params)} | {' / '.join(minutes)} | {' / '.join(shared)} |"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/ws_result"), tuple(map(int, sys.argv[2:])) or SEEDS)
