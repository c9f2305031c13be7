#!/usr/bin/env bash
# The MNIST-1D result (docs/results/mnist1d.md): for seeds 0-2, the default search (LSTM) and random search with the same
# budget (conf/experiment/mnist1d_result.yaml), each best architecture retrained with the full recipe, and a
# plain 4-layer CNN with that recipe.
# About 100 minutes on 2 cores. Finished steps are skipped, so a second call picks up where one stopped.
#   bash experiments/mnist1d_result.sh [OUT_FOLDER]        # then: python experiments/mnist1d_table.py OUT_FOLDER
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-outputs/mnist1d_result}
# 4 conv layers of 64 filters, kernel 5, strides 1,2,1,2, ReLU, no skips (cnn1d tokens)
plain_cnn='[3,4,1,0,0,1,4,1,1,0,0,1,4,1,0,0,0,0,1,4,1,1,0]'
for controller in lstm random; do
  for seed in 0 1 2; do
    search=$out/search_${controller}_$seed
    [ -f "$search/done" ] || {
      rm -rf "$search"
      nasrl-train +experiment=mnist1d_result controller=$controller seed=$seed search.progress=false \
        hydra.run.dir="$search"
      touch "$search/done"
    }
    [ -f "$out/retrain_${controller}_$seed/result.json" ] ||
      nasrl-retrain arch="$search/best.json" seed=$seed hydra.run.dir="$out/retrain_${controller}_$seed"
  done
done
for seed in 0 1 2; do
  [ -f "$out/retrain_plain_cnn_$seed/result.json" ] ||
    nasrl-retrain arch="$plain_cnn" seed=$seed hydra.run.dir="$out/retrain_plain_cnn_$seed"
done
python experiments/mnist1d_table.py "$out"
