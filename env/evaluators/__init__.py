"""Evaluators: what turns a finished architecture into a score. The contract every evaluator meets is in
:mod:`.base`; real child training (:mod:`.child_trainer`), language models (:mod:`.lm`), shared weights
(:mod:`.weight_sharing`), the NAS-Bench-201 table (:mod:`.nb201_table`) and a synthetic score (:mod:`.synthetic`)
meet it. Beside them what they use: data sets and corpora, costs, early stopping, the cache, devices."""
