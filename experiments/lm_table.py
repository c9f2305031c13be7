"""Print the language-model table of docs/results/language-models.md from the folder that
``experiments/lm_result.sh`` filled."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from nasrl.controller.runfolder import read_elapsed_minutes, read_history
from nasrl.controller.stats import mean_std
from nasrl.scripts.app import stops_on_bad_input

CELLS = [
    ("lstm", "searched cell (LSTM controller)"),
    ("random", "random search, same budget"),
    ("lstm_cell", "LSTM"),
    ("gru", "GRU"),
    ("rnn_tanh", "tanh RNN"),
]


def main(out: Path) -> None:
    print("| cell | params | word test perplexity, seeds 0-2 | mean | char test bpc, seeds 0-2 | mean |")
    print("|---|---|---|---|---|---|")
    for name, label in CELLS:
        ppl, bpc, params = [], [], set()
        for seed in (0, 1, 2):
            for level, values, key in (("word", ppl, "test_perplexity"), ("char", bpc, "test_bpc")):
                result = out / f"retrain_{name}_{level}_{seed}" / "result.json"
                if result.exists():
                    r = json.loads(result.read_text())
                    values.append(r[key])
                    params.add(f"{r['params'] / 1000:.0f}k")
        print(f"| {label} | {'/'.join(sorted(params)) or '-'} | {', '.join(f'{p:.1f}' for p in ppl)} | "
              f"{mean_std(ppl, 1)} | {', '.join(f'{b:.3f}' for b in bpc)} | {mean_std(bpc, 3)} |")  # fmt: skip
    print("\n| search | seed | distinct cells | wall-clock minutes | best validation perplexity | cell |")
    print("|---|---|---|---|---|---|")
    for name in ("lstm", "random"):
        for seed in (0, 1, 2):
            search = out / f"search_{name}_{seed}"
            if not (search / "best.json").exists():
                continue
            distinct = [r for r in read_history(search) if r["reused"] == "0"]
            best = json.loads((search / "best.json").read_text())
            ppl = best["metrics"].get("val_perplexity", float("nan"))
            minutes = read_elapsed_minutes(search)
            print(f"| {name} | {seed} | {len(distinct)} | {minutes:.1f} | {ppl:.1f} | `{best['architecture']}` |")


if __name__ == "__main__":
    with stops_on_bad_input():  # e.g. a 0.1.0 run folder, whose checkpoint needs NASRL_TRUST_PICKLES=1
        main(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/lm_result"))
