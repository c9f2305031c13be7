"""The weight-sharing search of ENAS (Pham et al. 2018), and random search with weight sharing (Li &
Talwalkar 2019) when the policy is ``controller=random``.

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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym

from nasrl.controller.monitor import Monitor, logs_val_accuracy
from nasrl.controller.policy import Policy
from nasrl.controller.runfolder import RunFolder, SearchState
from nasrl.controller.search import play_episode
from nasrl.env.childnet import token_env
from nasrl.env.evaluators.weight_sharing import SharedWeights
from nasrl.env.spaces.space import Architecture
from nasrl.env.threads import torch_threads


@dataclass
class Derived:
    """The derivation's candidates, best first: (shared-weights validation accuracy, architecture)."""

    candidates: list[tuple[float, Architecture]]

    @property
    def best(self) -> tuple[float, Architecture]:
        return self.candidates[0]


def run_weight_sharing_search(
    env: gym.Env,
    policy: Policy,
    seed: int = 0,
    run_dir: str | Path | None = None,
    resume: bool = False,
    max_minutes: float | None = None,
    progress: bool = False,
    hparams: dict[str, Any] | None = None,
) -> tuple[SearchState, Derived]:
    """Run ENAS's schedule with the environment's :class:`~nasrl.env.evaluators.weight_sharing.SharedWeightsTrainer`
    (``env.unwrapped.evaluator``): epochs of the two phases until the evaluator's ``epochs`` are done or (checked
    between epochs) ``max_minutes`` have passed over all sessions, then the derivation. With ``run_dir``, writes
    the run folder and TensorBoard events; with ``resume``, continues from its checkpoint."""
    base = token_env(env)
    evaluator = base.evaluator
    if not (evaluator.shares_weights and isinstance(evaluator, SharedWeights)):
        raise ValueError(
            f"weight sharing needs an evaluator that subclasses nasrl.env.evaluators.weight_sharing.SharedWeights "
            f"(SharedWeightsTrainer, SharedLanguageModelTrainer), got {type(evaluator).__name__}"
        )
    if max_minutes is not None and max_minutes <= 0:
        raise ValueError(f"search.max_minutes must be a positive number or null, got {max_minutes!r}")
    evaluator.start(seed)
    folder = RunFolder(run_dir) if run_dir is not None else None
    state = folder.start(policy, resume, evaluator) if folder is not None else SearchState()
    monitor = Monitor(folder.path if folder else None, state, evaluator.epochs, max_minutes, False, hparams,
                      logs_val_accuracy(base))  # fmt: skip
    bar = _progress_bar(evaluator) if progress else None
    env.reset(seed=seed)
    session_start, elapsed_before = time.monotonic(), state.elapsed

    def elapsed() -> float:
        return elapsed_before + time.monotonic() - session_start

    with torch_threads(1):  # the controller's tensors are tiny (see controller/search.py); the evaluator sets its own
        try:
            while evaluator.step < evaluator.epochs * evaluator.shared_steps:
                if max_minutes is not None and state.elapsed >= 60 * max_minutes:
                    break
                for _ in range(evaluator.shared_steps):
                    metrics = evaluator.train_step(sample_architecture(env, policy))
                    monitor.shared_step(evaluator.step, metrics)
                for _ in range(evaluator.controller_steps):
                    reward, info = play_episode(env, policy)
                    row = state.add(reward, info)
                    state.elapsed = elapsed()
                    update = policy.end_episode(reward, info)
                    best = state.best
                    assert best is not None
                    if folder is not None:
                        folder.record(row, None)  # best.json is the derivation's, not a mini-batch score's
                    monitor.episode(state, row, best, update, policy)
                state.elapsed = elapsed()
                if folder is not None:
                    folder.save(policy, state, evaluator)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(shared_loss=f"{metrics['loss']:.3f}", reward=f"{state.best['reward']:.3f}")  # type: ignore[index]
            derived = derive(env, policy, evaluator)
            state.elapsed = elapsed()
            monitor.derived(state.episode, derived)
            if folder is not None:
                _write_derived(folder, derived, evaluator, state)
        finally:
            if bar is not None:
                bar.close()
            monitor.close(state)
    return state, derived


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
