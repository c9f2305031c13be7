"""Print the MNIST-1D table of docs/results/mnist1d.md from the folder that ``experiments/mnist1d_result.sh`` filled."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from nasrl.controller.runfolder import read_elapsed_minutes, read_history
from nasrl.controller.stats import mean_std
from nasrl.scripts.app import stops_on_bad_input

PUBLISHED = [("logistic regression", 32), ("MLP", 68), ("CNN", 94), ("GRU", 91), ("human", 96)]


def main(out: Path) -> None:
    print("| model | test accuracy (%), seeds 0-2 | mean | search: distinct archs, wall-clock minutes, best val |")
    print("|---|---|---|---|")
    for name, label in (("lstm", "default search (LSTM)"), ("random", "random search"), ("plain_cnn", "plain CNN")):
        accs, notes = [], []
        for seed in (0, 1, 2):
            result = out / f"retrain_{name}_{seed}" / "result.json"
            if not result.exists():
                continue
            accs.append(100 * json.loads(result.read_text())["test_accuracy"])
            search = out / f"search_{name}_{seed}"
            if (search / "history.csv").exists():
                distinct = [r for r in read_history(search) if r["reused"] == "0"]
                minutes = read_elapsed_minutes(search)  # what search.max_minutes caps
                best = max(float(r["val_accuracy"]) for r in distinct)
                notes.append(f"{len(distinct)}, {minutes:.1f}, {best:.4f}")
        if accs:
            print(f"| {label} | {', '.join(f'{a:.1f}' for a in accs)} | {mean_std(accs)} | {'; '.join(notes) or '-'} |")
    for name, acc in PUBLISHED:
        print(f"| {name} (MNIST-1D paper) | - | {acc} | - |")
    for name in ("lstm", "random"):
        for seed in (0, 1, 2):
            result = out / f"retrain_{name}_{seed}" / "result.json"
            if result.exists():
                r = json.loads(result.read_text())
                acc, params = 100 * r["test_accuracy"], r["params"]
                print(f"\n{name} seed {seed}: {acc:.1f}% test, {params:,} params: {r['architecture']}")


if __name__ == "__main__":
    with stops_on_bad_input():  # e.g. a 0.1.0 run folder, whose checkpoint needs NASRL_TRUST_PICKLES=1
        main(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/mnist1d_result"))
