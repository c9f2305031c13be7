"""The search loop: a policy designs architectures through the environment until the budget is spent.

Reads top to bottom: restore (if resuming), then per round: the policy proposes as many architectures
as it can before it needs feedback (``policy.proposals_per_round()``: M for REINFORCE with batch size
M), their children are trained at once (``runner``: in this process, worker processes or Ray), and the
results are fed back in the order of the proposals, each episode played through ``env.step``. The round
does not depend on the number of workers, so a seed gives the same search whatever that number is. Every
caller (``nasrl-train``, ``nasrl-benchmark``, the tests) goes through this one path, except a search with
shared weights, whose schedule is ENAS's (``controller/weight_sharing.py``).

Files: ``controller/runfolder.py``; TensorBoard and the progress bar: ``controller/monitor.py``; at the end
(also of an interrupted or stopped search), ``pareto.csv`` and ``pareto.png``: ``controller/pareto.py``.
An interruption loses at most the round in flight, and the children it finished are in the evaluation
cache, so the resumed round trains only what was not finished.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym

from nasrl.controller.monitor import Monitor
from nasrl.controller.pareto import write_pareto
from nasrl.controller.policy import Policy
from nasrl.controller.runfolder import RunFolder, SearchError, SearchState, evaluator_to_keep
from nasrl.env.evaluation import torch_threads
from nasrl.env.parallel import InProcessRunner

__all__ = ["SearchError", "SearchState", "play_episode", "run_search"]


def run_search(
    env: gym.Env,
    policy: Policy,
    budget: int,
    max_episodes: int,
    seed: int = 0,
    run_dir: str | Path | None = None,
    resume: bool = False,
    max_consecutive_failures: int = 20,
    max_minutes: float | None = None,
    progress: bool = False,
    hparams: dict[str, Any] | None = None,
    runner: Any = None,
    workers: int = 1,
) -> SearchState:
    """Search until ``budget`` distinct architectures were evaluated, ``max_episodes`` were played, or
    (checked between rounds) ``max_minutes`` of wall time were spent over all sessions of the run.

    With ``run_dir``, writes the run folder's files and TensorBoard events; with ``resume``, continues from
    its checkpoint. ``runner`` (``env/parallel.py``; default: one child after another in this process) trains
    a round's children, ``workers`` of them at once. An environment without ``defer_training`` trains each
    child in its last step, one round being one episode.
    """
    _check(budget, max_episodes, max_consecutive_failures, max_minutes, getattr(policy, "batch_size", 1))
    if getattr(getattr(env.unwrapped, "evaluator", None), "shares_weights", False):
        raise ValueError(
            "the environment's evaluator shares weights: its search is run_weight_sharing_search "
            "(controller/weight_sharing.py), which nasrl-train runs for it"
        )
    folder = RunFolder(run_dir) if run_dir is not None else None
    state = folder.start(policy, resume, evaluator_to_keep(env)) if folder is not None else SearchState()
    monitor = Monitor(folder.path if folder else None, state, budget, max_minutes, progress, hparams)
    if runner is None and hasattr(env.unwrapped, "defer_training"):
        runner = InProcessRunner(env.unwrapped.evaluator)  # type: ignore[attr-defined]

    env.reset(seed=seed)  # fixes the environment's child seeds; the resets below continue from it
    session_start, elapsed_before, warned_idle = time.monotonic(), state.elapsed, False
    # the controller's tensors are tiny: one thread is several times faster, ten times on a busy machine
    # (runners give children threads of their own), and the controller's numbers do not depend on the caller's
    with torch_threads(1):
        try:
            while state.distinct < budget and state.episode < max_episodes:
                if max_minutes is not None and state.elapsed >= 60 * max_minutes:
                    break
                left = min(budget - state.distinct, max_episodes - state.episode)  # what the round may propose
                rounds_matter = evaluator_to_keep(env) is not None
                size = _round_size(policy, workers, left, rounds_matter) if runner is not None else 1
                if size < min(workers, left) and not warned_idle:
                    warned_idle = True
                    warnings.warn(_idle_workers(workers, size), stacklevel=2)
                for reward, info in _play_round(env, policy, runner, size):
                    row = state.add(reward, info)
                    state.elapsed = elapsed_before + time.monotonic() - session_start
                    metrics = policy.end_episode(reward, info)
                    best = state.best
                    assert best is not None
                    if folder is not None:
                        folder.record(row, best)
                    monitor.episode(state, row, best, metrics, policy)
                    if state.consecutive_failures >= max_consecutive_failures:
                        reasons = [r["reason"] for r in state.history[-3:]]
                        raise SearchError(
                            f"{state.consecutive_failures} children failed in a row "
                            f"(search.max_consecutive_failures={max_consecutive_failures}); last reasons: {reasons}"
                        )
                if folder is not None:
                    folder.save(policy, state, evaluator_to_keep(env))  # early stopping's curves, if on
        finally:
            monitor.close(state)
            if folder is not None:
                _write_pareto(folder.path, state)
    return state


def _write_pareto(run_dir: Path, state: SearchState) -> None:
    """pareto.csv and pareto.png from the history so far. A failure here only warns: it must not hide the
    search's own outcome (an interrupt, an error) or make a finished search fail; history.csv is complete."""
    try:
        write_pareto(run_dir, state.history)
    except Exception as exc:
        warnings.warn(f"pareto.csv / pareto.png not written: {type(exc).__name__}: {exc}", stacklevel=2)


def _play_round(env: gym.Env, policy: Policy, runner: Any, size: int) -> list[tuple[float, dict]]:
    """One round: the policy proposes ``size`` architectures, their new children are trained at once
    (``runner``), and the proposals are replayed through ``env.step`` for their rewards, in order.
    An environment that cannot defer training plays one episode, training its child in the last step."""
    if runner is None:
        return [play_episode(env, policy)]
    env.unwrapped.defer_training()  # type: ignore[attr-defined]
    proposals = [play_episode(env, policy)[1]["tokens"] for _ in range(size)]
    env.unwrapped.train_deferred(runner)  # type: ignore[attr-defined]
    return [play_episode(env, None, tokens) for tokens in proposals]


def _check(budget: int, max_episodes: int, max_failures: int, max_minutes: float | None, batch: int) -> None:
    """Range checks (the typed config has checked the types)."""
    for key, value in (("budget", budget), ("max_episodes", max_episodes), ("max_consecutive_failures", max_failures)):
        if value < 1:
            raise ValueError(f"search.{key} must be a positive integer, got {value!r}")
    if max_minutes is not None and max_minutes <= 0:
        raise ValueError(f"search.max_minutes must be a positive number or null, got {max_minutes!r}")
    if batch > budget:
        raise ValueError(
            f"controller.batch_size={batch} is larger than search.budget={budget}: "
            "the controller would never be updated; accepted is a batch_size <= the budget"
        )


FREE_ROUND = 16  # a round of a policy that ignores results, when results depend on the round (see below)


def _round_size(policy: Policy, workers: int, left: int, rounds_matter: bool = False) -> int:
    """How many architectures to propose before feeding results back; never depends on how the children
    are trained, except for a policy whose proposals ignore the results (``proposals_per_round() is None``),
    and then only when the results do not depend on the rounds: ``rounds_matter`` (early stopping judges a
    round's children by the children finished before it) fixes the round at ``FREE_ROUND`` whatever the
    number of workers, so that one seed still gives one search."""
    size = policy.proposals_per_round()
    if size is None:  # several children per worker, so that a slow child does not leave the others idle
        size = FREE_ROUND if rounds_matter else 4 * workers
    return max(1, min(size, left))


def _idle_workers(workers: int, size: int) -> str:
    return (
        f"search.workers={workers}, but the controller proposes {size} architecture(s) at a time, "
        f"so {workers - size} worker(s) idle: set controller.batch_size={workers} or more "
        "(the LSTM's architectures per update, evolution's mutants per round)"
    )


def play_episode(env: gym.Env, policy: Policy | None, tokens: list[int] | None = None) -> tuple[float, dict[str, Any]]:
    """One episode through ``env.step``: the policy acts, or ``tokens`` are replayed. Returns the last
    step's reward and info."""
    obs, _ = env.reset()
    if policy is not None:
        policy.start_episode()
    done, t = False, 0
    while not done:
        action = policy.act(obs) if policy is not None else tokens[t]  # type: ignore[index]
        obs, reward, terminated, truncated, info = env.step(action)
        done, t = terminated or truncated, t + 1
    return float(reward), info
