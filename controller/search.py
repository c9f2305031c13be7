"""The search driver: a policy designs architectures through the environment until the budget is spent.

Every search goes through :func:`run_search` (``nasrl-train``, ``nasrl-benchmark``, the tests, your code), which
restores the run (if resuming) and runs one of three schedules of the same episodes and bookkeeping
(``controller/episodes.py``):

- **rounds** (default): the policy proposes as many architectures as it can before it needs feedback
  (``policy.proposals_per_round()``: M for REINFORCE with batch size M), their children are trained at once
  (``runner``: in this process, worker processes or Ray), and the results are fed back in the order of the
  proposals. The round does not depend on the number of workers, so a seed gives the same search whatever that
  number is (:func:`_search_rounds`).
- **async** (``search.mode=async``): a new architecture whenever a worker frees up, results fed back as they
  arrive (:func:`_search_async`).
- **weight sharing**, chosen by an environment whose evaluator shares weights (``env=mnist1d_ws``, ``lm_ws``):
  ENAS's alternating phases and derivation (:func:`nasrl.controller.weight_sharing.search_with_shared_weights`).

Files: ``controller/runfolder.py``; TensorBoard and the progress bar: ``controller/monitor.py``; at the end
(also of an interrupted or stopped search), ``pareto.csv`` and ``pareto.png``: ``controller/pareto.py``.
An interruption loses at most the round in flight, and the children it finished are in the evaluation
cache, so the resumed round trains only what was not finished.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym

from nasrl.controller.episodes import Search, play_episode
from nasrl.controller.monitor import Monitor, logs_val_accuracy
from nasrl.controller.pareto import write_pareto
from nasrl.controller.policy import Policy
from nasrl.controller.runfolder import RunFolder, SearchError, SearchState, evaluator_to_keep, read_completions
from nasrl.controller.weight_sharing import search_with_shared_weights
from nasrl.env.childnet import TokenEnv, token_env
from nasrl.env.runners.clock import OrderedRunner
from nasrl.env.runners.local import InProcessRunner
from nasrl.env.threads import torch_threads

__all__ = ["SearchError", "SearchState", "play_episode", "result_lines", "run_search"]


MODES = ("rounds", "async")


def run_search(
    env: gym.Env,
    policy: Policy,
    budget: int = 80,
    max_episodes: int = 800,
    seed: int = 0,
    run_dir: str | Path | None = None,
    resume: bool = False,
    max_consecutive_failures: int = 20,
    max_minutes: float | None = None,
    progress: bool = False,
    hparams: dict[str, Any] | None = None,
    runner: Any = None,
    workers: int = 1,
    mode: str = "rounds",
    completion_order: str | Path | None = None,
) -> SearchState:
    """Search until ``budget`` distinct architectures were evaluated, ``max_episodes`` were played, or
    (checked between rounds, or before each proposal in ``async`` mode) ``max_minutes`` of wall time were
    spent over all sessions of the run.

    With ``run_dir``, writes the run folder's files and TensorBoard events; with ``resume``, continues from
    its checkpoint. ``runner`` (``env/runners/``; default: one child after another in this process) trains
    a round's children, ``workers`` of them at once. ``mode="async"`` keeps ``workers`` children in training at
    all times instead (see :func:`_search_async`); ``completion_order`` (a run folder or its ``completions.txt``)
    replays a recorded asynchronous run. ``env.unwrapped`` must be a
    :class:`~nasrl.env.childnet.TokenEnv` (``ChildNetEnv`` is), refused in one line otherwise.

    An evaluator that shares weights is searched by ENAS's schedule instead, whose length is the evaluator's
    ``epochs`` (``budget``, ``max_episodes``, ``runner``, ``workers`` and ``mode`` do not apply: one set of weights
    trains in this process); its derivation is ``state.derived`` and ``best.json``.
    """
    base = token_env(env)
    shares_weights = base.evaluator.shares_weights
    _check(budget, max_episodes, max_consecutive_failures, max_minutes, getattr(policy, "batch_size", 1))
    if mode not in MODES:
        raise ValueError(f"search.mode must be one of {list(MODES)}, got {mode!r}")
    if completion_order is not None and mode != "async":
        raise ValueError("search.completion_order replays an asynchronous run: it needs search.mode=async")
    if shares_weights and mode != "rounds":
        raise ValueError(
            "search.mode=async trains children while the policy goes on, and weight sharing trains one set of "
            "weights in this process: use search.mode=rounds"
        )
    base.evaluator.start(seed)  # e.g. the shared weights' initial values (a resume then loads the saved ones)
    folder = RunFolder(run_dir) if run_dir is not None else None
    state = folder.start(policy, resume, evaluator_to_keep(base.evaluator)) if folder is not None else SearchState()
    # weight sharing counts epochs, not architectures: its own progress bar
    monitor = Monitor(folder.path if folder else None, state, budget, max_minutes, progress and not shares_weights,
                      hparams, logs_val_accuracy(base), base.recorded_costs)  # fmt: skip
    if runner is None:
        runner = InProcessRunner(base.evaluator)
    if completion_order is not None:
        runner = OrderedRunner(runner, read_completions(completion_order), start=state.completions)
    # with shared weights, best.json is the derivation's, not the best mini-batch score's
    search = Search(env, base, policy, state, folder, monitor, max_consecutive_failures, record_best=not shares_weights)

    env.reset(seed=seed)  # fixes the environment's child seeds; the resets below continue from it

    def time_left() -> bool:
        search.tick()
        return max_minutes is None or state.elapsed < 60 * max_minutes

    # the controller's tensors are tiny: one thread is several times faster, ten times on a busy machine
    # (runners and evaluators give children threads of their own), and the controller's numbers do not depend on
    # the caller's
    with torch_threads(1):
        try:
            if shares_weights:
                search_with_shared_weights(search, time_left, progress)
            elif mode == "async":
                _search_async(search, runner, workers, budget, max_episodes, time_left)
            else:
                _search_rounds(search, runner, workers, budget, max_episodes, time_left)
        finally:
            monitor.close(state)
            if folder is not None and not shares_weights:  # shared-weights scores are no front of trained children
                _write_pareto(folder.path, state, base.recorded_costs)
    return state


def result_lines(state: SearchState, env: gym.Env, run_dir: str | Path | None = None) -> list[str]:
    """What a finished search reports (``nasrl-train`` prints it): the best architecture, or with shared weights
    the derived one, which is a search-phase number to retrain."""
    where = [f"run folder: {run_dir}"] if run_dir is not None else []
    if state.derived:
        score, arch = state.derived[0]
        label = token_env(env).evaluator.score_label
        return [
            f"derived architecture: {arch.describe()}",
            f"tokens: {' '.join(map(str, arch.tokens))}",
            f"shared-weights {label}: {score:.4f} (search phase, not a result: retrain it), "
            f"best of {len(state.derived)} sampled",
            f"controller phase: {state.episode} episodes, {state.distinct} distinct architectures, "
            f"{state.elapsed:.0f} s",
            *([f"retrain with: nasrl-retrain arch={run_dir}"] if run_dir is not None else []),
            *where,
        ]
    best = state.best
    if best is None:  # every child was over the limit: none to report, and no best.json
        return [
            f"no architecture met the limit: all {state.distinct} distinct architectures evaluated were over it "
            f"({state.history[-1]['reason'] if state.history else 'none evaluated'})",
            f"evaluated {state.distinct} distinct architectures in {state.episode} episodes, {state.elapsed:.0f} s",
            *where,
        ]
    perplexity = json.loads(best["metrics"]).get("val_perplexity")
    return [
        f"best architecture: {best['architecture']}",
        f"tokens: {best['tokens']}",
        f"{'validation perplexity' if perplexity else token_env(env).evaluator.score_label}: "
        f"{perplexity or best['val_accuracy']:.4f} "
        f"(reward {best['reward']:.4f}), {best['params']:,} parameters, found at episode {best['episode']}",
        f"evaluated {state.distinct} distinct architectures in {state.episode} episodes, {state.elapsed:.0f} s",
        *where,
    ]


def _search_rounds(
    search: Search, runner: Any, workers: int, budget: int, max_episodes: int, time_left: Callable[[], bool]
) -> None:
    """Rounds: the policy proposes what it can before it needs feedback, the round's children train at once,
    and the results are fed back in the order of the proposals."""
    state, first_round = search.state, True
    rounds_matter = search.base.evaluator.keeps_state
    while state.distinct < budget and state.episode < max_episodes and time_left():
        left = min(budget - state.distinct, max_episodes - state.episode)  # what the round may propose
        size = _round_size(search.policy, workers, left, rounds_matter)
        # judged on the first round only: a later one may be what is left of an update's batch after
        # re-sampled architectures were fed back at once (the LSTM), smaller by design, not by the settings
        if first_round and size < min(workers, left):
            warnings.warn(_idle_workers(workers, size), stacklevel=3)
        first_round = False
        version, first = search.version(), state.proposals
        for i, (reward, info) in enumerate(_play_round(search.env, search.base, search.policy, runner, size)):
            search.feed(reward, info, first + i, version)
        state.proposals = first + size
        search.save()


def _search_async(
    search: Search, runner: Any, workers: int, budget: int, max_episodes: int, time_left: Callable[[], bool]
) -> None:
    """Asynchronous: whenever a worker is free the policy proposes one more architecture, and results are fed
    back in the order they arrive (Zoph & Le's distributed setup; Real et al.'s asynchronous evolution).

    A policy learns from a result with its weights of now, not those that proposed the architecture: REINFORCE
    uses samples of an older policy as if they were its own, without importance weights, as Zoph & Le's
    asynchronous replicas did. How old, in policy updates, is each row's ``staleness``.

    The checkpoint, saved after each result, holds the children in flight; resume submits them again. The order
    in which the runner handed results back goes to ``completions.txt``; a search given it again
    (``completion_order``) is the same search. A child that finished after the last checkpoint is fed first on
    resume, from the cache."""
    env, state = search.base, search.state
    env.defer_training()
    flights: dict[int, tuple[dict[str, Any], int, str]] = {}  # proposal -> (its deferred info, version, cache key)
    waiting: dict[str, list[int]] = {}  # cache key of a child in training -> its proposals, the first submitted it

    def start(reward: float, info: dict[str, Any], proposal: int, version: int) -> None:
        if not info.get("deferred"):  # known at once (cached, over the cost limit): fed now
            search.feed(reward, info, proposal, version)
            return
        ((key, job),) = env.take_deferred().items()
        flights[proposal] = (info, version, key)
        if key not in waiting:  # else the same child is in training already: this proposal waits for its result
            runner.submit(proposal, job)
        waiting.setdefault(key, []).append(proposal)

    for flight in sorted(state.in_flight, key=lambda f: f["proposal"]):  # resumed: the children in flight
        reward, info = play_episode(search.env, None, flight["tokens"])
        start(reward, info, flight["proposal"], flight["version"])
    while True:
        while (
            len(waiting) < workers
            and state.distinct + len(waiting) < budget
            and state.episode + len(flights) < max_episodes
            and time_left()
        ):
            version = search.version()
            start(*search.propose(), version)
        if not waiting:
            break
        done, result = runner.next_result()
        key = flights[done][2]
        env.store_result(key, result)
        state.completions += 1
        if search.folder is not None:
            search.folder.record_completion(done)
        for proposal in waiting.pop(key):  # the job's proposal, then those that waited for it, in order
            deferred, version, _ = flights.pop(proposal)
            search.feed(*env.complete(deferred), proposal, version)
        state.in_flight = [{"proposal": p, "tokens": i["tokens"], "version": v} for p, (i, v, _) in flights.items()]
        search.save()
    search.save()  # results known at once since the last child finished
    env.take_deferred(stop=True)


def _write_pareto(run_dir: Path, state: SearchState, costs: tuple[str, ...]) -> None:
    """pareto.csv and pareto.png from the history so far. A failure here only warns: it must not hide the
    search's own outcome (an interrupt, an error) or make a finished search fail; history.csv is complete."""
    try:
        write_pareto(run_dir, state.history, costs)
    except Exception as exc:
        warnings.warn(f"pareto.csv / pareto.png not written: {type(exc).__name__}: {exc}", stacklevel=2)


def _play_round(env: gym.Env, base: TokenEnv, policy: Policy, runner: Any, size: int) -> list[tuple[float, dict]]:
    """One round: the policy proposes ``size`` architectures, their new children are trained at once
    (``runner``), and each proposal's reward and info come back in order: at once for a child known already
    (cached, over a cost limit), from :meth:`~nasrl.env.childnet.ChildNetEnv.complete` for a trained one."""
    base.defer_training()
    proposals = [play_episode(env, policy) for _ in range(size)]
    base.train_deferred(runner)
    return [base.complete(info) if info.get("deferred") else (reward, info) for reward, info in proposals]


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
