"""Episodes and their bookkeeping, shared by every schedule of the search (``controller/search.py``: rounds and
the asynchronous mode; ``controller/weight_sharing.py``: ENAS's phases).

:func:`play_episode` plays one architecture through ``env.step``; :class:`Search` proposes episodes, feeds each
result to the history, the policy, the run folder and TensorBoard, and saves the checkpoint.
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym

from nasrl.controller.monitor import Monitor
from nasrl.controller.policy import Policy
from nasrl.controller.runfolder import RunFolder, SearchError, SearchState, evaluator_to_keep
from nasrl.env.childnet import TokenEnv


class Search:
    """What every schedule of the search shares: proposing an episode, feeding its result back (history, policy,
    run folder, TensorBoard), saving the checkpoint, and the wall clock over all sessions. ``env`` is played
    through Gymnasium's API (wrappers included); ``base`` is its ``TokenEnv``."""

    def __init__(self, env: gym.Env, base: TokenEnv, policy: Policy, state: SearchState, folder: RunFolder | None,
                 monitor: Monitor, max_failures: int, record_best: bool = True) -> None:  # fmt: skip
        self.env, self.base, self.policy, self.state = env, base, policy, state
        self.folder, self.monitor, self.max_failures = folder, monitor, max_failures
        self.record_best = record_best  # False: best.json is chosen otherwise (weight sharing's derivation)
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
        best = state.best  # None while every child was over a constraint's limit
        if self.folder is not None:
            self.folder.record(row, best if self.record_best else None)
        self.monitor.episode(state, row, best, metrics, self.policy)
        if state.consecutive_failures >= self.max_failures:
            reasons = [r["reason"] for r in state.history[-3:]]
            raise SearchError(
                f"{state.consecutive_failures} children failed in a row "
                f"(search.max_consecutive_failures={self.max_failures}); last reasons: {reasons}"
            )

    def save(self) -> None:
        if self.folder is not None:
            # early stopping's curves or the shared weights, if the evaluator keeps state
            self.folder.save(self.policy, self.state, evaluator_to_keep(self.base.evaluator))


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
