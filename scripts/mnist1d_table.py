"""Print the README's MNIST-1D table from the folder that ``scripts/mnist1d_result.sh`` filled."""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path

import torch

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
            history = out / f"search_{name}_{seed}" / "history.csv"
            if history.exists():
                rows = list(csv.DictReader(open(history)))
                distinct = [r for r in rows if r["reused"] == "0"]
                # wall-clock minutes of the search (what search.max_minutes caps), from its checkpoint
                state = torch.load(history.parent / "checkpoint.pt", weights_only=False)["state"]
                minutes = state["elapsed"] / 60
                best = max(float(r["val_accuracy"]) for r in distinct)
                notes.append(f"{len(distinct)}, {minutes:.1f}, {best:.4f}")
        if accs:
            mean = f"{statistics.mean(accs):.2f}" + (f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else "")
            print(f"| {label} | {', '.join(f'{a:.1f}' for a in accs)} | {mean} | {'; '.join(notes) or '-'} |")
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
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/mnist1d_result"))
