#!/usr/bin/env bash
# The README's weight-sharing result on MNIST-1D: for seeds 0-2, ENAS's search (env=mnist1d_ws, LSTM
# controller) and random search with weight sharing (controller=random on the same shared weights), each
# derived architecture retrained from scratch with the full recipe (as scripts/mnist1d_result.sh retrains
# the per-child searches' best). Searches run one at a time, so each search's wall time is its own on this
# machine; retraining runs JOBS at a time on one thread each. Finished steps are skipped.
#   JOBS=2 bash scripts/ws_result.sh [OUT_FOLDER]        # then: python scripts/ws_table.py OUT_FOLDER
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-outputs/ws_result}
jobs=${JOBS:-1}
mkdir -p "$out"
for controller in lstm random; do
  for seed in 0 1 2; do
    search=$out/search_${controller}_$seed
    [ -f "$search/done" ] && continue
    rm -rf "$search"
    python scripts/train.py env=mnist1d_ws controller=$controller seed=$seed search.progress=false \
      hydra.run.dir="$search" > "$search.log" 2>&1
    touch "$search/done"
  done
done
for controller in lstm random; do
  for seed in 0 1 2; do
    dest=$out/retrain_${controller}_$seed
    [ -f "$dest/result.json" ] && continue
    echo "python scripts/retrain.py arch=$out/search_${controller}_$seed seed=$seed retrain.num_threads=1 \
hydra.run.dir=$dest > $dest.log 2>&1"
  done
done | xargs -d '\n' -P "$jobs" -I{} bash -c {}
python scripts/ws_table.py "$out"
