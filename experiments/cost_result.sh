#!/usr/bin/env bash
# The accuracy-against-cost result (docs/results/cost.md) on MNIST-1D: for seed S (default 0), the accuracy-only search
# and three cost-aware searches (MnasNet's soft reward with a 10k-parameter target, the hard one with 15k and
# with 25k), 40 architectures each and no time cap (conf/experiment/cost_NAME.yaml), then each best
# architecture retrained with the full recipe.
# About an hour on 2 cores; finished steps are skipped, so a second call picks up where one stopped.
#   bash experiments/cost_result.sh [SEED] [OUT_FOLDER]
set -euo pipefail
cd "$(dirname "$0")/.."
seed=${1:-0}
out=${2:-outputs/cost_result}
for name in accuracy soft10k hard15k hard25k; do
  search=$out/search_${name}_$seed
  [ -f "$search/done" ] || {
    rm -rf "$search"
    nasrl-train +experiment="cost_$name" seed="$seed" search.progress=false hydra.run.dir="$search"
    touch "$search/done"
  }
  [ -f "$out/retrain_${name}_$seed/result.json" ] ||
    nasrl-retrain arch="$search/best.json" seed="$seed" hydra.run.dir="$out/retrain_${name}_$seed"
done
