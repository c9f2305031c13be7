"""How torch's intra-op thread count changes the training time of one child network, tiny to large.

    python experiments/bench_threads.py                              # all five children, the shipped budgets
    python experiments/bench_threads.py --only mlp-1x32,cnn-2x16     # a subset
    python experiments/bench_threads.py --epochs-scale 0.05 --repeats 1   # a quick check (at least 1 epoch)

For each child (MLPs of the mlp space on digits, CNNs of the cnn1d space on MNIST-1D), the wall time of
``ChildTrainer.evaluate(arch, seed=0)`` with the shipped budgets (mnist1d: 10 epochs of batch 128; digits: 20
epochs of batch 64), each run in a fresh spawned process that times only the evaluate call (after the imports,
torch._dynamo's included, and the data loading):
(a) alone, with torch.set_num_threads(1) and with 2;
(b) two identical children side by side, released together by a barrier, both with 1 thread and then both with
    2: the time from the first start until both have finished.
Medians over --repeats. The answer it informs: how many torch threads each child of a parallel search gets.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any

import torch

from nasrl.env.evaluators.child_trainer import ChildTrainer
from nasrl.env.spaces.space import DEPTH, SearchSpace, load_space

# The budgets of the shipped configs (conf/env/*.yaml): epochs, batch size.
BUDGETS: dict[str, tuple[int, int]] = {"mnist1d": (10, 128), "digits": (20, 64)}


@dataclass(frozen=True)
class Child:
    label: str
    dataset: str
    space: str
    tokens: tuple[int, ...]


def tokens_for(space: SearchSpace, layers: list[dict[str, Any]], dense: bool = False) -> tuple[int, ...]:
    """Tokens of ``space`` for a network with ``layers`` (one dict of decision values per layer): a chain (layer
    i fed by layer i-1), or with ``dense`` every earlier layer feeding every later one."""
    tokens: list[int] = []
    while (decision := space.next_decision(tokens)) is not None:
        dtype = space.decision_types[decision.type_index]
        if dtype.name == DEPTH:
            tokens.append(space.depths.index(len(layers)))
        elif dtype.kind == "skip":
            tokens.append(1 if dense or decision.source == decision.layer - 1 else 0)
        else:
            tokens.append(list(dtype.choices).index(layers[decision.layer][dtype.name]))
    return tuple(tokens)


def children() -> list[Child]:
    mlp, cnn = load_space("mlp"), load_space("cnn1d")

    def dense_layers(n: int, units: int) -> list[dict[str, Any]]:
        return [{"units": units, "activation": "relu"} for _ in range(n)]

    def conv_layers(n: int, filters: int) -> list[dict[str, Any]]:
        return [{"filters": filters, "kernel_size": 5, "stride": 1, "activation": "relu"} for _ in range(n)]

    return [
        Child("mlp-1x32", "digits", "mlp", tokens_for(mlp, dense_layers(1, 32))),  # tiny
        Child("mlp-3x128", "digits", "mlp", tokens_for(mlp, dense_layers(3, 128))),  # tiny
        Child("cnn-2x16", "mnist1d", "cnn1d", tokens_for(cnn, conv_layers(2, 16))),  # small
        Child("cnn-4x48", "mnist1d", "cnn1d", tokens_for(cnn, conv_layers(4, 48))),  # medium
        Child("cnn-6x96-dense", "mnist1d", "cnn1d", tokens_for(cnn, conv_layers(6, 96), dense=True)),  # large
    ]


def make_trainer(dataset: str, epochs_scale: float, threads: int | None = None) -> ChildTrainer:
    epochs, batch_size = BUDGETS[dataset]
    epochs = max(1, round(epochs * epochs_scale))
    return ChildTrainer(dataset={"name": dataset}, epochs=epochs, batch_size=batch_size, num_threads=threads)


def timed_child(child: Child, epochs_scale: float, threads: int, barrier: Any, results: Any) -> None:
    """In a fresh process: build the trainer (data loading not timed), wait at ``barrier`` if given, then time
    one evaluate call; put (start, end, val_accuracy, failure) on ``results``, or ("error", traceback)."""
    try:
        torch.set_num_threads(threads)
        trainer = make_trainer(child.dataset, epochs_scale, threads)
        arch = load_space(child.space).decode(child.tokens)
        # The first optimizer a process builds imports torch._dynamo (about 2 s): an import, paid once per
        # process (a search's workers live on), so it is done here, outside the timing. No training warm-up.
        torch.optim.Adam([torch.zeros(1, requires_grad=True)])
        if barrier is not None:
            barrier.wait()
        start = time.monotonic()  # system-wide on Linux: comparable across the two side-by-side processes
        result = trainer.evaluate(arch, seed=0)
        end = time.monotonic()
        results.put((start, end, result.val_accuracy, result.reason if result.failed else ""))
    except BaseException:
        results.put(("error", traceback.format_exc()))


def run_together(child: Child, epochs_scale: float, threads: int, copies: int) -> tuple[float, list[float]]:
    """Train ``copies`` copies of ``child`` in fresh processes started together; return the wall time until
    all have finished, and their validation accuracies."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    barrier = ctx.Barrier(copies) if copies > 1 else None
    procs = [
        ctx.Process(target=timed_child, args=(child, epochs_scale, threads, barrier, results)) for _ in range(copies)
    ]
    for p in procs:
        p.start()
    got: list[tuple[Any, ...]] = []
    while len(got) < copies:
        try:
            got.append(results.get(timeout=1.0))
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in procs):
                for p in procs:
                    p.terminate()
                codes = [p.exitcode for p in procs]
                raise RuntimeError(f"{child.label}: a child process died (exit codes {codes})") from None
    for p in procs:
        p.join()
    for item in got:
        if item[0] == "error":
            raise RuntimeError(f"{child.label}, {threads} thread(s):\n{item[1]}")
        if item[3]:
            print(f"    warning: {child.label} failed to train: {item[3]}", flush=True)
    return max(g[1] for g in got) - min(g[0] for g in got), [g[2] for g in got]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    all_children = children()
    labels = [c.label for c in all_children]
    parser.add_argument("--only", default=",".join(labels), help=f"comma-separated subset of {','.join(labels)}")
    parser.add_argument("--epochs-scale", type=float, default=1.0, help="multiply the epochs (at least 1 remains)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each measurement; the median is reported")
    args = parser.parse_args()
    wanted = args.only.split(",")
    unknown = [w for w in wanted if w not in labels]
    if unknown:
        parser.error(f"unknown labels {unknown}; accepted are {labels}")
    if args.repeats < 1 or not args.epochs_scale > 0:
        parser.error("--repeats must be at least 1 and --epochs-scale positive")
    print("command:", " ".join([sys.executable, *sys.argv]))
    print(f"torch {torch.__version__}, os.cpu_count() {os.cpu_count()}, repeats {args.repeats}")
    # Thread settings inherited by the spawned children (OMP_WAIT_POLICY changes oversubscribed runs a lot).
    threading_env = {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "GOMP_", "KMP_", "MKL_"))}
    print(f"threading environment: {threading_env or 'none set'}")

    rows = []
    for child in (c for c in all_children if c.label in wanted):
        trainer = make_trainer(child.dataset, args.epochs_scale)  # also generates/caches MNIST-1D before any spawn
        arch = load_space(child.space).decode(child.tokens)
        flops = trainer.cost(arch)
        print(
            f"{child.label}: {child.dataset}, {trainer.epochs} epochs of batch {trainer.batch_size} "
            f"({trainer.total_steps()} steps), {flops:.3g} FLOPs; {arch.describe()}",
            flush=True,
        )
        times: dict[tuple[int, int], list[float]] = {(copies, t): [] for copies in (1, 2) for t in (1, 2)}
        for r in range(args.repeats):  # the four measurements interleaved, so drift in load hits all alike
            for copies, threads in times:
                seconds, accs = run_together(child, args.epochs_scale, threads, copies)
                times[copies, threads].append(seconds)
                what = "alone" if copies == 1 else "side by side"
                acc = ", ".join(f"{a:.4f}" for a in accs)
                print(f"  repeat {r}: {what}, {threads} thread(s): {seconds:.2f} s (val {acc})", flush=True)
        med = {key: statistics.median(v) for key, v in times.items()}
        rows.append((child.label, flops, med))

    print()
    print(
        "| child | FLOPs | alone 1 thread (s) | alone 2 threads (s) | speed-up alone (t1/t2) "
        "| side by side 1 thread each (s) | side by side 2 threads each (s) | slowdown side by side (t2/t1) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, flops, med in rows:
        print(
            f"| {label} | {flops:.3g} | {med[1, 1]:.2f} | {med[1, 2]:.2f} | {med[1, 1] / med[1, 2]:.2f} "
            f"| {med[2, 1]:.2f} | {med[2, 2]:.2f} | {med[2, 2] / med[2, 1]:.2f} |"
        )


if __name__ == "__main__":
    main()
