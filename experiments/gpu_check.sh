#!/usr/bin/env bash
# The device checks of a GPU machine (docs/guides/gpus.md), in about 3 to 4 minutes on one H200 with 16 cores:
#   bash experiments/gpu_check.sh             # CHILDREN=4 bash experiments/gpu_check.sh: a quicker benchmark
# 1. the tests marked cuda in tests/test_device.py: a child, a mixed-precision child and a language-model child
#    on the GPU, retraining there (the saved model loads on the CPU), one GPU per worker process, Ray
#    children with a GPU share (if Ray is installed);
# 2. children per hour of the default MNIST-1D child (nasrl.env.ChildTrainer's defaults: 10 epochs of Adam),
#    the same CHILDREN architectures one after another on the CPU (one torch thread, as a search trains them),
#    on the GPU and on the GPU with amp; then the whole machine: one worker process per core on the CPU,
#    against GPU_WORKERS processes sharing the GPU.
# Needs the package installed with its test tools (pip install -e ".[dev]"); uses .venv if there is one.
# Exits 0 when the tests pass and no benchmark child failed.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
start=$SECONDS
python -c "import torch; print(f'torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}, GPUs: {torch.cuda.device_count()}')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not found"

echo "== tests marked cuda"
python -m pytest -m cuda tests/test_device.py tests/test_weight_sharing.py -q -p no:cacheprovider -rs
tests_status=$?

echo "== benchmark: the default MNIST-1D child"
# python -c, not a script on stdin: worker processes are spawned, and a spawned process re-reads the main
# script from its path, which stdin does not have
bench=$(cat <<'EOF'
import os
import statistics
import time

import numpy as np
import torch

from nasrl.env.evaluators.child_trainer import ChildTrainer
from nasrl.env.threads import available_cores
from nasrl.env.runners.local import ProcessRunner
from nasrl.env.spaces.sampling import random_tokens
from nasrl.env.spaces.space import load_space

n = int(os.environ["CHILDREN"])
gpu_workers = int(os.environ["GPU_WORKERS"])
cores = available_cores()
space = load_space("cnn1d")
rng = np.random.default_rng(0)
failures = 0


# archs[0] warms up (data to the device, CUDA context, cuDNN choices)
archs = [space.decode(random_tokens(space, rng)) for _ in range(n + 1)]


def one_after_another(label, **settings):
    global failures
    trainer = ChildTrainer(**settings)
    trainer.evaluate(archs[0], 0)
    begin = time.perf_counter()
    results = [trainer.evaluate(arch, seed) for seed, arch in enumerate(archs[1:], 1)]
    seconds = time.perf_counter() - begin
    failed = sum(r.failed for r in results)
    failures += failed
    accuracy = statistics.mean(r.val_accuracy for r in results)
    print(f"{label:<24} {3600 * n / seconds:8.0f} children/hour  {seconds / n:6.2f} s each  "
          f"mean val accuracy {accuracy:.4f}  failed {failed}", flush=True)


def whole_machine(label, workers, **settings):
    global failures
    runner = ProcessRunner(ChildTrainer(**settings), workers=workers)
    try:
        runner.run([(archs[i % n + 1], i) for i in range(workers)])  # starts the workers, warms them up
        jobs = [(archs[i % n + 1], i) for i in range(2 * workers)]
        begin = time.perf_counter()
        results = runner.run(jobs)
        seconds = time.perf_counter() - begin
    finally:
        runner.close()
    failed = sum(r.failed for r in results)
    failures += failed
    print(f"{label:<24} {3600 * len(jobs) / seconds:8.0f} children/hour  ({len(jobs)} children, "
          f"{seconds:.1f} s)  failed {failed}", flush=True)


print(f"{n} children of cnn1d on MNIST-1D, {cores} cores; one after another:")
one_after_another("cpu, 1 thread", device="cpu")
if torch.cuda.is_available():
    one_after_another("cuda", device="cuda")
    one_after_another("cuda, amp", device="cuda", amp=True)
print("the whole machine (worker processes):")
whole_machine(f"cpu, {cores} workers", cores, device="cpu")
if torch.cuda.is_available():
    whole_machine(f"cuda, {gpu_workers} workers", gpu_workers, device="cuda")
    whole_machine(f"cuda amp, {gpu_workers} workers", gpu_workers, device="cuda", amp=True)
if failures:
    raise SystemExit(f"{failures} benchmark children failed")
EOF
)
CHILDREN="${CHILDREN:-8}" GPU_WORKERS="${GPU_WORKERS:-4}" python -c "$bench"
bench_status=$?
echo "== done in $((SECONDS - start)) s (tests: exit $tests_status, benchmark: exit $bench_status)"
[ "$tests_status" -eq 0 ] && [ "$bench_status" -eq 0 ]
