#!/usr/bin/env bash
# The language-model result (docs/results/language-models.md) (Zoph & Le's Penn Treebank experiment on tiny-shakespeare): for seeds
# 0-2, the default recurrent-cell search (env=lm, LSTM controller: conf/experiment/lm_result.yaml) and random
# search with the same budget;
# then each found cell and the standard LSTM, GRU and tanh RNN retrained at 500k parameters on words
# (4 epochs, test perplexity) and moved to characters (2 epochs, bits per character), as Zoph & Le moved
# their cell from word-level to character-level Penn Treebank. About 40 minutes of searches and 40 of
# retraining with JOBS=2 on 2 cores. Finished steps are skipped, so a second call picks up where one stopped.
#   JOBS=2 bash experiments/lm_result.sh [OUT_FOLDER]        # then: python experiments/lm_table.py OUT_FOLDER
#   EXTRA="env.space=rnn_cell_small" ...                     # more settings for every search (here: the 5-node
#                                                            # space the table of commit 5e75b47 searched)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-outputs/lm_result}
jobs=${JOBS:-1}
extra=${EXTRA:-}  # more overrides for every search
mkdir -p "$out"
# the corpus every step reads: $NASRL_DATA/text/tinyshakespeare.txt, checked against its SHA-256 (fetched if absent;
# offline, put a copy there first, e.g. ../shared/data/text/tinyshakespeare.txt)
nasrl-data tinyshakespeare
run_all() { xargs -d '\n' -P "$jobs" -I{} bash -c {}; }  # one command per line, $jobs at a time

for controller in lstm random; do
  for seed in 0 1 2; do
    search=$out/search_${controller}_$seed
    [ -f "$search/done" ] && continue
    echo "rm -rf $search && nasrl-train +experiment=lm_result controller=$controller seed=$seed \
search.progress=false $extra hydra.run.dir=$search > $search.log 2>&1 && touch $search/done"
  done
done | run_all

vocab=2000  # the search's vocabulary (conf/env/lm.yaml), for the standard cells too
for seed in 0 1 2; do
  for cell in lstm random lstm_cell gru rnn_tanh; do
    case $cell in
      lstm|random) arch=$out/search_${cell}_$seed/best.json ;;
      lstm_cell) arch=lstm ;;
      *) arch=$cell ;;
    esac
    for level in word char; do
      epochs=$([ $level = word ] && echo 4 || echo 2)
      dest=$out/retrain_${cell}_${level}_$seed
      [ -f "$dest/result.json" ] && continue
      echo "nasrl-retrain arch=$arch 'dataset={vocab_size:$vocab,level:$level}' lm.epochs=$epochs \
lm.num_threads=1 seed=$seed hydra.run.dir=$dest > $dest.log 2>&1"
    done
  done
done | run_all
python experiments/lm_table.py "$out"
