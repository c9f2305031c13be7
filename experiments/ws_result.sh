#!/usr/bin/env bash
# The weight-sharing result (docs/results/weight-sharing.md) on MNIST-1D: for seeds 0-2, ENAS's search (env=mnist1d_ws) with the
# LSTM at the command line's defaults, with settings for many noisy rewards (5 architectures per update,
# no self-imitation) and with ENAS's controller settings (Adam lr 1e-3, tanh constant 1.5, entropy weight
# 1e-4, baseline decay 0.99, 20 architectures per update), and random search with weight sharing
# (controller=random on the same shared weights, with uniform depths and with depth d drawn in proportion
# to d ** 2);
# each derived architecture retrained from scratch with the full recipe (as experiments/mnist1d_result.sh
# retrains the per-child searches' best). JOBS searches (one thread each) and then JOBS retrainings run at
# once; each search takes 2 to 3 minutes and each retraining 1 to 18 (by its size), so with JOBS=2 on 2 cores
# all rows take about an hour. Finished steps are skipped.
#   JOBS=2 bash experiments/ws_result.sh [OUT_FOLDER]        # then: python experiments/ws_table.py OUT_FOLDER
#   EPOCHS=100 bash experiments/ws_result.sh outputs/ws_result_100   # another length of the schedule
#   SEEDS="3 4" ONLY="lstm_batch5 random" JOBS=2 bash experiments/ws_result.sh   # more seeds of some rows
#   EXTRA="search.max_minutes=30" ...                    # more settings for every search
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-outputs/ws_result}
jobs=${JOBS:-1}
epochs=${EPOCHS:-}  # empty: the default of env=mnist1d_ws
seeds=${SEEDS:-0 1 2}
only=${ONLY:-}  # names of the rows below to run (empty: all)
extra=${EXTRA:-}  # more overrides for every search
mkdir -p "$out"
run_all() { xargs -d '\n' -P "$jobs" -I{} bash -c {}; }  # one command per line, $jobs at a time
strategies=(lstm lstm_batch5 lstm_enas random random_depth2)  # conf/experiment/ws_NAME.yaml
selected=()
for name in "${strategies[@]}"; do
  if [ -z "$only" ] || [[ " $only " == *" $name "* ]]; then selected+=("$name"); fi
done
for name in "${selected[@]}"; do
  for seed in $seeds; do
    search=$out/search_${name}_$seed
    [ -f "$search/done" ] && continue
    echo "rm -rf $search && nasrl-train +experiment=ws_$name seed=$seed search.progress=false \
${epochs:+env.evaluator.epochs=$epochs} $extra hydra.run.dir=$search > $search.log 2>&1 && touch $search/done"
  done
done | run_all
for name in "${selected[@]}"; do
  for seed in $seeds; do
    dest=$out/retrain_${name}_$seed
    [ -f "$dest/result.json" ] && continue
    echo "nasrl-retrain arch=$out/search_${name}_$seed seed=$seed retrain.num_threads=1 \
hydra.run.dir=$dest > $dest.log 2>&1"
  done
done | run_all
python experiments/ws_table.py "$out" $seeds
