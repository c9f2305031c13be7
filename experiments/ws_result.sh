#!/usr/bin/env bash
# The README's weight-sharing result on MNIST-1D: for seeds 0-2, ENAS's search (env=mnist1d_ws) with the
# LSTM at the command line's defaults, with settings for many noisy rewards (5 architectures per update,
# no self-imitation) and with ENAS's controller settings (Adam lr 1e-3, tanh constant 1.5, entropy weight
# 1e-4, baseline decay 0.99, 20 architectures per update), and random search with weight sharing
# (controller=random on the same shared weights, with uniform depths and with depth d drawn in proportion
# to d ** 2);
# each derived architecture retrained from scratch with the full recipe (as scripts/mnist1d_result.sh
# retrains the per-child searches' best). JOBS searches (one thread each) and then JOBS retrainings run at
# once; each search takes 2 to 3 minutes and each retraining 1 to 18 (by its size), so with JOBS=2 on 2 cores
# all rows take about an hour. Finished steps are skipped.
#   JOBS=2 bash scripts/ws_result.sh [OUT_FOLDER]        # then: python scripts/ws_table.py OUT_FOLDER
#   EPOCHS=100 bash scripts/ws_result.sh outputs/ws_result_100   # another length of the schedule
#   SEEDS="3 4" ONLY="lstm_batch5 random" JOBS=2 bash scripts/ws_result.sh   # more seeds of some rows
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
strategies=(
  "lstm|controller=lstm"
  "lstm_batch5|controller=lstm controller.batch_size=5 controller.replay_top_k=0"
  "lstm_enas|controller=lstm controller.lr=0.001 controller.tanh_constant=1.5 controller.entropy_weight=0.0001 \
controller.baseline_decay=0.99 controller.batch_size=20 controller.replay_top_k=0"
  "random|controller=random"
  "random_depth2|controller=random controller.depth_power=2"
)
selected=()
for entry in "${strategies[@]}"; do
  name=${entry%%|*}
  if [ -z "$only" ] || [[ " $only " == *" $name "* ]]; then selected+=("$entry"); fi
done
for entry in "${selected[@]}"; do
  name=${entry%%|*}; settings=${entry#*|}
  for seed in $seeds; do
    search=$out/search_${name}_$seed
    [ -f "$search/done" ] && continue
    echo "rm -rf $search && python scripts/train.py env=mnist1d_ws $settings seed=$seed search.progress=false \
${epochs:+env.evaluator.epochs=$epochs} $extra hydra.run.dir=$search > $search.log 2>&1 && touch $search/done"
  done
done | run_all
for entry in "${selected[@]}"; do
  name=${entry%%|*}
  for seed in $seeds; do
    dest=$out/retrain_${name}_$seed
    [ -f "$dest/result.json" ] && continue
    echo "python scripts/retrain.py arch=$out/search_${name}_$seed seed=$seed retrain.num_threads=1 \
hydra.run.dir=$dest > $dest.log 2>&1"
  done
done | run_all
python scripts/ws_table.py "$out" $seeds
