"""One training step of a searched recurrent cell against torch's LSTM and GRU, as ratios measured in one run.

    python experiments/bench_cells.py                                   # hidden 64, 128, 256; 1 and 2 threads
    python experiments/bench_cells.py --hidden 64 --threads 1 --repeats 3   # a quick look
    python experiments/bench_cells.py --hidden 8 --repeats 1 --cells 1 --out /tmp/b.json   # a smoke test

What is timed: forward plus backward of one BPTT window (``--steps`` 35 tokens, batch ``--batch`` 32) through one
recurrent layer whose input is already embedded (hidden -> hidden), the loss the sum of the outputs. For each hidden
size and thread count: ``--cells`` random 5-node cells (``rnn_cell_small``) and as many 12-node cells (ENAS's
``rnn_cell``), drawn with a fixed seed by the spaces' sampler, each through the fast cell (``unroll_cell``, what the
search trains) and the reference loop (``unroll_cell_reference``, the implementation before issue 36), against
``nn.LSTM`` and ``nn.GRU`` of the same hidden size. Every repeat runs every case once, in turn (interleaved, so load
that comes and goes falls on all of them); a case's time is the median over repeats, a cell kind's the mean over its
cells, and each is also given as a ratio to ``nn.LSTM``'s time in the same run. Prints a markdown table and writes
the numbers as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nasrl.env.spaces.rnn import DAGCell, unroll_cell, unroll_cell_reference
from nasrl.env.spaces.sampling import random_tokens
from nasrl.env.spaces.space import load_space

SPACES = {"5-node": "rnn_cell_small", "12-node": "rnn_cell"}
IMPLEMENTATIONS = {"fast": unroll_cell, "reference": unroll_cell_reference}


def cell_step(cell: DAGCell, unroll: Callable, x: torch.Tensor, h: torch.Tensor) -> Callable[[], None]:
    """One forward and backward of ``cell`` over ``x`` through the implementation ``unroll``."""

    def step() -> None:
        weights = [layer.weight.t() for layer in cell.w_h]  # type: ignore[union-attr]
        outputs, _ = unroll(cell.w_x(x), h, weights, cell.sources, cell.activations, cell.loose_ends)
        outputs.sum().backward()

    return step


def module_step(module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        outputs, _ = module(x)
        outputs.sum().backward()

    return step


def cases(hidden: int, steps: int, batch: int, cells: int, seed: int) -> dict[str, Callable[[], None]]:
    """Every timed case at one hidden size: ``lstm``, ``gru``, and ``{5,12}-node/{fast,reference}/{i}``."""
    torch.manual_seed(seed)
    x, h = torch.randn(steps, batch, hidden), torch.zeros(batch, hidden)
    timed: dict[str, Callable[[], None]] = {
        "lstm": module_step(nn.LSTM(hidden, hidden), x),
        "gru": module_step(nn.GRU(hidden, hidden), x),
    }
    for kind, name in SPACES.items():
        space = load_space(name)
        rng = np.random.default_rng(seed)
        for i in range(cells):
            cell = DAGCell(space.decode(random_tokens(space, rng)), hidden, hidden)
            for label, unroll in IMPLEMENTATIONS.items():
                timed[f"{kind}/{label}/{i}"] = cell_step(cell, unroll, x, h)
    return timed


def measure(timed: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds of each case over ``repeats`` interleaved rounds, after one untimed round (warm-up: the fast
    cell's loops are compiled on first use, allocations are made)."""
    for step in timed.values():
        step()
    seconds: dict[str, list[float]] = {key: [] for key in timed}
    for _ in range(repeats):
        for key, step in timed.items():
            start = time.perf_counter()
            step()
            seconds[key].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in seconds.items()}


def summarise(medians: dict[str, float], cells: int) -> dict[str, float]:
    """Milliseconds per row of the table: lstm, gru, and each (kind, implementation) as the mean over its cells."""
    rows = {"lstm": medians["lstm"] * 1e3, "gru": medians["gru"] * 1e3}
    for kind in SPACES:
        for label in IMPLEMENTATIONS:
            rows[f"{kind} {label}"] = statistics.mean(medians[f"{kind}/{label}/{i}"] for i in range(cells)) * 1e3
    return rows


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=positive, nargs="+", default=[64, 128, 256], help="hidden sizes")
    parser.add_argument("--threads", type=positive, nargs="+", default=[1, 2], help="torch thread counts")
    parser.add_argument("--cells", type=positive, default=5, help="random cells of each kind (5- and 12-node)")
    parser.add_argument("--steps", type=positive, default=35, help="tokens per BPTT window")
    parser.add_argument("--batch", type=positive, default=32, help="batch size")
    parser.add_argument("--repeats", type=positive, default=7, help="interleaved rounds; the median is reported")
    parser.add_argument("--seed", type=int, default=0, help="seed of the cells' draw and of the weights")
    parser.add_argument("--out", type=Path, default=Path("bench_cells.json"), help="where the JSON goes")
    args = parser.parse_args(argv)

    print("command:", " ".join([sys.executable, *sys.argv]) if argv is None else " ".join(["bench_cells.py", *argv]))
    print(f"torch {torch.__version__}, os.cpu_count() {os.cpu_count()}, repeats {args.repeats}, cells {args.cells}")
    results = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for hidden in args.hidden:
            medians = measure(cases(hidden, args.steps, args.batch, args.cells, args.seed), args.repeats)
            rows = summarise(medians, args.cells)
            results.append({"threads": threads, "hidden": hidden, "ms": rows, "case_ms": {
                key: value * 1e3 for key, value in medians.items()}})  # fmt: skip
            print(f"  {threads} thread(s), hidden {hidden}: " + ", ".join(f"{k} {v:.1f}" for k, v in rows.items()),
                  flush=True)  # fmt: skip

    print()
    print("| threads | hidden | nn.LSTM | nn.GRU | 5-node fast | 5-node reference | 12-node fast | 12-node reference |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        ms, lstm = r["ms"], r["ms"]["lstm"]
        cols = ["lstm", "gru", "5-node fast", "5-node reference", "12-node fast", "12-node reference"]
        cells = [f"{ms[c]:.1f} ms" + ("" if c == "lstm" else f" ({ms[c] / lstm:.2f}x)") for c in cols]
        print(f"| {r['threads']} | {r['hidden']} | " + " | ".join(cells) + " |")
    print(
        "\nms: median over the repeats (a cell kind: the mean of its cells' medians); (Nx): / nn.LSTM in the same run"
    )
    args.out.write_text(json.dumps({"settings": {k: (str(v) if isinstance(v, Path) else v)
                                                 for k, v in vars(args).items()}, "torch": torch.__version__,
                                    "results": results}, indent=1))  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
