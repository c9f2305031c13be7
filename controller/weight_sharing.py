"""The weight-sharing schedule of the search driver: ENAS (Pham et al. 2018), and random search with weight sharing
(Li & Talwalkar 2019) when the policy is ``controller=random``. :func:`~nasrl.controller.search.run_search` runs it
for an environment whose evaluator shares weights, with the same episodes, history, checkpoint and TensorBoard as
every search (``controller/episodes.py``).

Reads top to bottom. Per epoch (``env.evaluator.epochs`` of them):

1. **Shared-weights phase**, policy frozen: ``shared_steps`` mini-batches, each training the shared weights
   through one architecture sampled from the current policy (sampled through ``env.step`` like any
   episode, then discarded by the policy: it learns nothing from it).
2. **Controller phase**, shared weights frozen: ``controller_steps`` ordinary episodes; the environment's
   last step scores the child with the shared weights on the next validation mini-batch
   (``SharedWeightsTrainer.evaluate``) and the policy learns from that reward (REINFORCE for the LSTM).

Then the **derivation**: ``derive_samples`` architectures sampled from the final policy, each scored on the
validation split with the shared weights (``evaluator.score``: accuracy; for a language model, its reward's
quantity); the best goes to ``best.json``, for ``nasrl-retrain`` to train from scratch. Its shared-weights
score is a search-phase number, never the result.

The checkpoint (``checkpoint.pt``, after every epoch) holds the policy, the loop's state, the shared
weights, their optimizer and schedule, and the data order, so a resumed search equals an uninterrupted
one; an interruption loses at most the epoch in flight. ``history.csv`` has a row per controller-phase
episode (its reward is a shared-weights mini-batch score) and ``derived.csv`` the derivation's candidates.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from nasrl.controller.episodes import Search
from nasrl.controller.policy import Policy
from nasrl.controller.runfolder import RunFolder, SearchState
from nasrl.env.childnet import token_env
from nasrl.env.evaluators.weight_sharing import SharedWeights
from nasrl.env.spaces.space import Architecture


@dataclass
class Derived:
    """The derivation's candidates, best first: (shared-weights validation accuracy, architecture)."""

    candidates: list[tuple[float, Architecture]]

    @property
    def best(self) -> tuple[float, Architecture]:
        return self.candidates[0]


def search_with_shared_weights(search: Search, time_left: Callable[[], bool], progress: bool = False) -> None:
    """ENAS's schedule, run by :func:`~nasrl.controller.search.run_search` for an environment whose evaluator shares
    weights (:class:`~nasrl.env.evaluators.weight_sharing.SharedWeights`): epochs of the two phases until the
    evaluator's ``epochs`` are done or (checked between epochs) ``time_left()`` says no, then the derivation, kept in
    ``search.state.derived`` and written to ``derived.csv`` and ``best.json``."""
    evaluator = search.base.evaluator
    if not isinstance(evaluator, SharedWeights):
        raise ValueError(
            f"weight sharing needs an evaluator that subclasses nasrl.env.evaluators.weight_sharing.SharedWeights "
            f"(SharedWeightsTrainer, SharedLanguageModelTrainer), got {type(evaluator).__name__}"
        )
    state, monitor = search.state, search.monitor
    bar = _progress_bar(evaluator) if progress else None
    try:
        while evaluator.step < evaluator.epochs * evaluator.shared_steps and time_left():
            for _ in range(evaluator.shared_steps):
                metrics = evaluator.train_step(sample_architecture(search.env, search.policy))
                monitor.shared_step(evaluator.step, metrics)
            for _ in range(evaluator.controller_steps):
                version = search.version()
                search.feed(*search.propose(), version)
            search.tick()
            search.save()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(shared_loss=f"{metrics['loss']:.3f}", reward=f"{state.best['reward']:.3f}")  # type: ignore[index]
        derived = derive(search.env, search.policy, evaluator)
        search.tick()
        state.derived = derived.candidates
        monitor.derived(state.episode, derived)
        if search.folder is not None:
            _write_derived(search.folder, derived, evaluator, state)
    finally:
        if bar is not None:
            bar.close()


def sample_architecture(env: gym.Env, policy: Policy) -> Architecture:
    """An architecture sampled from ``policy`` through the environment's token protocol (masks included),
    which the policy then forgets (``discard_episode``): the shared-weights phase and the derivation sample
    without learning. The last token is not stepped, so the environment trains nothing."""
    space = token_env(env).space
    obs, _ = env.reset()
    policy.start_episode()
    tokens: list[int] = []
    while True:
        action = policy.act(obs)
        tokens.append(int(action))
        if space.next_decision(tokens) is None:
            break
        obs, *_ = env.step(action)
    policy.discard_episode()
    return space.decode(tokens)


def derive(env: gym.Env, policy: Policy, evaluator: SharedWeights) -> Derived:
    """Sample ``evaluator.derive_samples`` architectures from ``policy`` and score the distinct ones on the whole
    validation split with the shared weights; best first (ties: the one sampled first)."""
    scored: dict[tuple[int, ...], tuple[float, Architecture]] = {}
    for _ in range(evaluator.derive_samples):
        arch = sample_architecture(env, policy)
        if arch.tokens not in scored:
            scored[arch.tokens] = (evaluator.score(arch), arch)
    ranked = sorted(scored.values(), key=lambda pair: -pair[0])  # stable: among equal scores, the first sampled
    return Derived(ranked)


def _write_derived(folder: RunFolder, derived: Derived, evaluator: SharedWeights, state: SearchState) -> None:
    """``derived.csv`` (every candidate, best first) and ``best.json`` (the best, for ``nasrl-retrain``)."""
    with open(folder.path / "derived.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["rank", "tokens", "architecture", "shared_score", "params"])
        for rank, (score, arch) in enumerate(derived.candidates):
            tokens = " ".join(map(str, arch.tokens))
            writer.writerow([rank, tokens, arch.describe(), score, evaluator.standalone_params(arch)])
    score, arch = derived.best
    folder.write_best(
        {
            "architecture": arch.describe(),
            "tokens": list(arch.tokens),
            "arch": arch.to_dict(),
            "reward": score,
            "val_accuracy": score,
            "params": evaluator.standalone_params(arch),
            "episode": state.episode,
            "index": 0,
            "search_seconds": state.elapsed,  # wall time over all sessions, the derivation included
            "metrics": {"shared_score": score, "derived_from": len(derived.candidates)},
            "note": f"reward and val_accuracy: the shared weights' {evaluator.score_label} (search phase); "
            "retrain it for the result",
        }
    )


def _progress_bar(evaluator: SharedWeights) -> Any:
    from tqdm import tqdm

    done = evaluator.step // evaluator.shared_steps
    return tqdm(total=evaluator.epochs, initial=done, desc="epochs", unit="epoch", dynamic_ncols=True, mininterval=1.0)
