"""The search loop: a policy designs architectures through the environment until the budget is spent.

Reads top to bottom: restore (if resuming), then per round: the policy proposes as many architectures
as it can before it needs feedback (``policy.proposals_per_round()``: M for REINFORCE with batch size
M), their children are trained at once (``runner``: in this process, worker processes or Ray), and the
results are fed back in the order of the proposals, each episode played through ``env.step``. The round
does not depend on the number of workers, so a seed gives the same search whatever that number is. Every
caller (``nasrl-train``, ``nasrl-benchmark``, the tests) goes through this one path, except a search with
shared weights, whose schedule is ENAS's (``controller/weight_sharing.py``). ``search.mode=async`` drops the
rounds: a new architecture whenever a worker frees up, results fed back as they arrive (:func:`_search_async`).

Files: ``controller/runfolder.py``; TensorBoard and the progress bar: ``controller/monitor.py``; at the end
(also of an interrupted or stopped search), ``pareto.csv`` and ``pareto.png``: ``controller/pareto.py``.
An interruption loses at most the round in flight, and the children it finished are in the evaluation
cache, so the resumed round trains only what was not finished.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym

from nasrl.controller.monitor import Monitor, logs_val_accuracy
from nasrl.controller.pareto import write_pareto
from nasrl.controller.policy import Policy
from nasrl.controller.runfolder import RunFolder, SearchError, SearchState, evaluator_to_keep, read_completions
from nasrl.env.childnet import TokenEnv, token_env
from nasrl.env.runners.clock import OrderedRunner
from nasrl.env.runners.local import InProcessRunner
from nasrl.env.threads import torch_threads

__all__ = ["SearchError", "SearchState", "play_episode", "run_search"]


MODES = ("rounds", "async")


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
    """
    base = token_env(env)
    _check(budget, max_episodes, max_consecutive_failures, max_minutes, getattr(policy, "batch_size", 1))
    if base.evaluator.shares_weights:
        raise ValueError(
            "the environment's evaluator shares weights: its search is run_weight_sharing_search "
            "(controller/weight_sharing.py), which nasrl-train runs for it"
        )
    if mode not in MODES:
        raise ValueError(f"search.mode must be one of {list(MODES)}, got {mode!r}")
    if completion_order is not None and mode != "async":
        raise ValueError("search.completion_order replays an asynchronous run: it needs search.mode=async")
    folder = RunFolder(run_dir) if run_dir is not None else None
    state = folder.start(policy, resume, evaluator_to_keep(base.evaluator)) if folder is not None else SearchState()
    monitor = Monitor(folder.path if folder else None, state, budget, max_minutes, progress, hparams,
                      logs_val_accuracy(base))  # fmt: skip
    if runner is None:
        runner = InProcessRunner(base.evaluator)
    if completion_order is not None:
        runner = OrderedRunner(runner, read_completions(completion_order), start=state.completions)
    search = _Search(env, base, policy, state, folder, monitor, max_consecutive_failures)

    env.reset(seed=seed)  # fixes the environment's child seeds; the resets below continue from it

    def time_left() -> bool:
        search.tick()
        return max_minutes is None or state.elapsed < 60 * max_minutes

    # the controller's tensors are tiny: one thread is several times faster, ten times on a busy machine
    # (runners give children threads of their own), and the controller's numbers do not depend on the caller's
    with torch_threads(1):
        try:
            if mode == "async":
                _search_async(search, runner, workers, budget, max_episodes, time_left)
            else:
                _search_rounds(search, runner, workers, budget, max_episodes, time_left)
        finally:
            monitor.close(state)
            if folder is not None:
                _write_pareto(folder.path, state)
    return state


class _Search:
    """What both loops share: feeding a result back (history, policy, run folder, TensorBoard) and saving.
    ``env`` is played through Gymnasium's API (wrappers included); ``base`` is its ``TokenEnv``."""

    def __init__(self, env: gym.Env, base: TokenEnv, policy: Policy, state: SearchState, folder: RunFolder | None,
                 monitor: Monitor, max_failures: int) -> None:  # fmt: skip
        self.env, self.base, self.policy, self.state = env, base, policy, state
        self.keep = evaluator_to_keep(base.evaluator)  # early stopping's curves, if on
        self.folder, self.monitor, self.max_failures = folder, monitor, max_failures
        self._session_start, self._elapsed_before = time.monotonic(), state.elapsed

    def tick(self) -> None:
        """Bring ``state.elapsed`` (wall seconds over all sessions) up to now."""
        self.state.elapsed = self._elapsed_before + time.monotonic() - self._session_start

    def version(self) -> int:
        """How far the policy has learned: its updates (``policy.updates``, e.g. the LSTM's REINFORCE steps),
        or, for a policy that does not count them, the results it was fed (evolution's population changes
        with each). A result's staleness is the version when it is fed minus the version when it was proposed."""
        updates = getattr(self.policy, "updates", None)  # a policy that does not subclass Policy may lack it
        return int(updates) if updates is not None else self.state.episode

    def propose(self, tokens: list[int] | None = None) -> tuple[float, dict[str, Any], int]:
        """Play one episode (the policy acts, or ``tokens`` are replayed); returns reward, info and its
        proposal number."""
        reward, info = play_episode(self.env, self.policy if tokens is None else None, tokens)
        self.state.proposals += 1
        return reward, info, self.state.proposals - 1

    def feed(self, reward: float, info: dict[str, Any], proposal: int, version: int) -> None:
        """Record an episode's result and feed it to the policy."""
        state = self.state
        row = state.add(reward, info, proposal=proposal, staleness=self.version() - version)
        self.tick()
        metrics = self.policy.end_episode(reward, info)
        best = state.best
        assert best is not None
        if self.folder is not None:
            self.folder.record(row, best)
        self.monitor.episode(state, row, best, metrics, self.policy)
        if state.consecutive_failures >= self.max_failures:
            reasons = [r["reason"] for r in state.history[-3:]]
            raise SearchError(
                f"{state.consecutive_failures} children failed in a row "
                f"(search.max_consecutive_failures={self.max_failures}); last reasons: {reasons}"
            )

    def save(self) -> None:
        if self.folder is not None:
            self.folder.save(self.policy, self.state, self.keep)


def _search_rounds(
    search: _Search, runner: Any, workers: int, budget: int, max_episodes: int, time_left: Callable[[], bool]
) -> None:
    """Rounds: the policy proposes what it can before it needs feedback, the round's children train at once,
    and the results are fed back in the order of the proposals."""
    state, first_round = search.state, True
    rounds_matter = search.keep is not None
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
    search: _Search, runner: Any, workers: int, budget: int, max_episodes: int, time_left: Callable[[], bool]
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
    flights: dict[int, tuple[list[int], int, str]] = {}  # proposal -> (tokens, version when proposed, cache key)
    waiting: dict[str, list[int]] = {}  # cache key of a child in training -> its proposals, the first submitted it

    def start(reward: float, info: dict[str, Any], proposal: int, version: int) -> None:
        if not info.get("deferred"):  # known at once (cached, over the cost limit): fed now
            search.feed(reward, info, proposal, version)
            return
        ((key, job),) = env.take_deferred().items()
        flights[proposal] = (info["tokens"], version, key)
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
            tokens, version, _ = flights.pop(proposal)
            reward, info = play_episode(search.env, None, tokens)
            search.feed(reward, info, proposal, version)
        state.in_flight = [{"proposal": p, "tokens": t, "version": v} for p, (t, v, _) in flights.items()]
        search.save()
    search.save()  # results known at once since the last child finished
    env.take_deferred(stop=True)


def _write_pareto(run_dir: Path, state: SearchState) -> None:
    """pareto.csv and pareto.png from the history so far. A failure here only warns: it must not hide the
    search's own outcome (an interrupt, an error) or make a finished search fail; history.csv is complete."""
    try:
        write_pareto(run_dir, state.history)
    except Exception as exc:
        warnings.warn(f"pareto.csv / pareto.png not written: {type(exc).__name__}: {exc}", stacklevel=2)


def _play_round(env: gym.Env, base: TokenEnv, policy: Policy, runner: Any, size: int) -> list[tuple[float, dict]]:
    """One round: the policy proposes ``size`` architectures, their new children are trained at once
    (``runner``), and the proposals are replayed through ``env.step`` for their rewards, in order."""
    base.defer_training()
    proposals = [play_episode(env, policy)[1]["tokens"] for _ in range(size)]
    base.train_deferred(runner)
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
