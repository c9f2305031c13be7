"""Test retrained MNIST-1D models again: on the standard 1000 test examples and on fresh ones.

    python experiments/retest.py outputs/ws_result/retrain_lstm_batch5_0 outputs/ws_result/retrain_random_0
    python experiments/retest.py RUN [RUN ...] --test-examples 50000 --test-seed 0

For each ``nasrl-retrain`` run folder (its ``model.pt`` and ``result.json``) of a classifier retrained on
MNIST-1D: the saved model's accuracy on the standard test split (what ``nasrl-retrain`` reported; the script
says if it differs) and on ``--test-examples`` fresh examples that MNIST-1D's generator draws with
``--test-seed`` (``load_dataset(test_examples=..., test_seed=...)``; docs/results/weight-sharing.md, "Retraining
noise on the 1,000 test examples is of the size of the gap"). One example of the standard split is 0.1 point, and
a model at 99.3% has a sampling standard error of 0.26 points there; on 50,000 fresh examples it is 0.04. With
several runs (seeds of one search), a last line gives the mean and standard deviation between them. Nothing is
trained, nothing is written.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from pathlib import Path
from typing import Any

from nasrl.controller.runfolder import SearchError
from nasrl.controller.stats import mean_std
from nasrl.env.evaluators.child_trainer import accuracy_of
from nasrl.env.evaluators.data import DataError, load_dataset
from nasrl.scripts.retraining import RetrainError, load_model


def retest(run: Path, test_examples: int, test_seed: int) -> dict[str, Any]:
    """The standard and fresh test accuracies of the model retrained in ``run``, and the standard one that
    ``nasrl-retrain`` reported (None if it tested on fresh examples)."""
    if not (run / "model.pt").exists() or not (run / "result.json").exists():
        raise SystemExit(f"{run}: not a nasrl-retrain run folder (it needs model.pt and result.json)")
    result = json.loads((run / "result.json").read_text())
    dataset = dict(result.get("dataset") or {"name": "mnist1d"})  # the data it was normalised with
    if dataset.get("name", "mnist1d") != "mnist1d" or "test_accuracy" not in result:
        raise SystemExit(f"{run}: retests MNIST-1D classifiers; this model is a {dataset.get('name')} model")
    # a model retrained with dataset={test_examples:...} reported its accuracy on those, not on the standard split
    reported = result["test_accuracy"] if dataset.pop("test_examples", None) is None else None
    dataset.pop("test_seed", None)
    try:
        model = load_model(run / "model.pt")
    except (RetrainError, SearchError) as exc:  # unreadable, or one that only the full unpickler reads
        raise SystemExit(f"error: {exc}") from None
    standard = accuracy_of(model, *_test_split(tuple(sorted(dataset.items()))))
    fresh_settings = dataset | {"test_examples": test_examples, "test_seed": test_seed}
    fresh = accuracy_of(model, *_test_split(tuple(sorted(fresh_settings.items()))))
    return {"standard": standard, "reported": reported, "fresh": fresh, "params": result["params"]}


@functools.cache  # runs retrained with the same data settings share one loading
def _test_split(settings: tuple[tuple[str, Any], ...]) -> tuple[Any, Any]:
    data = load_dataset(**dict(settings))
    return data.x_test, data.y_test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="nasrl-retrain run folders of MNIST-1D classifiers")
    parser.add_argument("--test-examples", type=int, default=50000, help="fresh test examples (default 50000)")
    parser.add_argument("--test-seed", type=int, default=0, help="their generator seed (default 0; not 42)")
    args = parser.parse_args()
    n = args.test_examples
    print(f"{'run':<60} {'params':>9} {'standard (1000)':>16} {f'fresh ({n})':>16}")
    tested = []
    for run in args.runs:
        try:  # load_dataset refuses bad fresh-test settings before it loads or draws anything
            r = retest(run, n, args.test_seed)
        except DataError as exc:
            parser.error(str(exc))
        tested.append(r)
        stderr = math.sqrt(r["fresh"] * (1 - r["fresh"]) / n)
        differs = r["reported"] is not None and abs(r["standard"] - r["reported"]) > 1e-9
        check = f"  (nasrl-retrain reported {r['reported']:.4f})" if differs else ""
        print(f"{str(run):<60} {r['params']:>9,} {100 * r['standard']:>15.1f}% "
              f"{100 * r['fresh']:>10.2f} ± {100 * stderr:.2f}%{check}")  # fmt: skip
    if len(tested) > 1:  # the spread between the runs (seeds), not a model's sampling error
        spread = " ".join(f"{mean_std([100 * r[key] for r in tested]):>15}%" for key in ("standard", "fresh"))
        print(f"{f'mean ± std of the {len(tested)}':<60} {'':>9} {spread}")


if __name__ == "__main__":
    main()
