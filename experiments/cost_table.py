"""Print the accuracy-against-cost table of docs/results/cost.md from the folder ``experiments/cost_result.sh``
filled, and draw every search's front of validation accuracy against parameters on one figure.

    python experiments/cost_table.py [OUT_FOLDER] [SEED] [FIGURE]     # defaults: outputs/cost_result 0 OUT/fronts.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from nasrl.controller.pareto import candidates, pareto_front
from nasrl.controller.runfolder import read_best, read_elapsed_minutes, read_history
from nasrl.scripts.app import stops_on_bad_input

SEARCHES = (
    ("accuracy", "accuracy alone (the default)"),
    ("soft10k", "soft, target 10k parameters"),
    ("hard15k", "hard, target 15k parameters"),
    ("hard25k", "hard, target 25k parameters"),
)


def main(out: Path, seed: int, figure: Path) -> None:
    print("| objective (`env.objective`) | search: best validation accuracy, its parameters | minutes | "
          "retrained test accuracy (%) | parameters (share of accuracy alone's) |")  # fmt: skip
    print("|---|---|---|---|---|")
    fronts = {}
    reference = None
    for name, label in SEARCHES:
        search = out / f"search_{name}_{seed}"
        result = out / f"retrain_{name}_{seed}" / "result.json"
        if not result.exists():
            continue
        best, retrained = read_best(search), json.loads(result.read_text())
        reference = reference or retrained["params"]
        share = retrained["params"] / reference
        print(
            f"| {label} | {best['val_accuracy']:.4f}, {best['params']:,} | {read_elapsed_minutes(search):.1f} | "
            f"{100 * retrained['test_accuracy']:.1f} | {retrained['params']:,} ({share:.0%}) |"
        )
        rows = candidates(read_history(search))
        front = pareto_front([(r["val_accuracy"], r["params"]) for r in rows])
        fronts[label] = ([rows[i]["params"] for i in front], [rows[i]["val_accuracy"] for i in front], best)
    plot(fronts, figure)


def plot(fronts: dict, figure: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (params, accuracies, best) in fronts.items():
        (line,) = ax.step(params, accuracies, where="post", label=label)
        ax.plot([best["params"]], [best["val_accuracy"]], "o", color=line.get_color(), markersize=8)
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("validation accuracy (10-epoch children)")
    ax.set_ylim(0.8, 1.0)
    ax.set_xlim(3e3, 1.2e5)
    ax.set_title("front of each search (40 architectures, seed 0); dot: the search's best.json")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(figure, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    with stops_on_bad_input():  # e.g. a 0.1.0 run folder, whose checkpoint needs NASRL_TRUST_PICKLES=1
        folder = Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/cost_result")
        main(
            folder,
            int(sys.argv[2]) if len(sys.argv) > 2 else 0,
            Path(sys.argv[3]) if len(sys.argv) > 3 else folder / "fronts.png",
        )
