"""The search loop: a policy designs architectures through the environment until the budget is spent.

Reads top to bottom: restore (if resuming), then per round: the policy proposes as many architectures
as it can before it needs feedback (``policy.proposals_per_round()``: M for REINFORCE with batch size
M), their children are trained at once (``runner``: in this process, worker processes or Ray), and the
results are fed back in the order of the proposals, each episode played through ``env.step``. The round
does not depend on the number of workers, so a seed gives the same search whatever that number is.

Every episode is appended to ``history.csv``; the checkpoint is rewritten atomically after every round.
An interruption loses at most the round in flight, and the children it finished are in the evaluation
cache, so the resumed round trains only what was not finished.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import random
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from controller.policy import Policy

HISTORY_COLUMNS = [
    "index",  # number of the distinct architecture (a reused row repeats the first one's index)
    "episode",
    "tokens",
    "architecture",
    "reward",
    "val_accuracy",
    "params",
    "seconds",  # child training seconds spent for this episode (0 when reused or cached)
    "reused",  # 1: sampled before in this run, its recorded result was reused without training
    "cached",  # 1: the result came from the evaluation cache (another run, or a resumed round): not trained now
    "failed",
    "reason",
    "metrics",  # JSON of extra numbers the evaluator reported (e.g. NAS-Bench-201 accuracies)
]
CHECKPOINT_VERSION = 1


class SearchError(RuntimeError):
    """A search that cannot go on (too many failed children, an unusable checkpoint)."""


@dataclass
class SearchState:
    """Everything the loop itself accumulates; saved in the checkpoint."""

    episode: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed: float = 0.0  # wall seconds over all sessions of this run
    consecutive_failures: int = 0

    @property
    def distinct(self) -> int:
        return sum(1 for row in self.history if not row["reused"])

    @property
    def best(self) -> dict[str, Any] | None:
        rows = [r for r in self.history if not r["failed"]] or self.history
        return max(rows, key=lambda r: r["reward"]) if rows else None


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

    With ``run_dir``, writes ``history.csv``, ``best.json``, ``checkpoint.pt`` and TensorBoard events
    under ``tb/``; with ``resume``, continues from the checkpoint there. ``runner`` (``env/parallel.py``)
    trains a round's children, up to ``workers`` at once; an environment without ``defer_training``
    trains each child in its last step, one round being one episode.
    """
    for key, value in (
        ("budget", budget),
        ("max_episodes", max_episodes),
        ("max_consecutive_failures", max_consecutive_failures),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"search.{key} must be a positive integer, got {value!r}")
    if max_minutes is not None and (
        isinstance(max_minutes, bool) or not isinstance(max_minutes, (int, float)) or max_minutes <= 0
    ):
        raise ValueError(f"search.max_minutes must be a positive number or null, got {max_minutes!r}")
    batch = getattr(policy, "batch_size", 1)
    if batch > budget:
        raise ValueError(
            f"controller.batch_size={batch} is larger than search.budget={budget}: "
            "the controller would never be updated; accepted is a batch_size <= the budget"
        )
    run_dir = Path(run_dir) if run_dir is not None else None
    state = SearchState()
    if resume:
        if run_dir is None:
            raise ValueError("resume needs a run folder")
        state = load_checkpoint(run_dir / "checkpoint.pt", policy)
        _write_history(run_dir / "history.csv", state.history)  # drop rows newer than the checkpoint
    elif run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_history(run_dir / "history.csv", [])
    writer = _tensorboard(run_dir, state.episode) if run_dir is not None else None
    seen = {row["tokens"]: row for row in state.history}
    bar = _progress_bar(budget, state.distinct) if progress else None

    env.reset(seed=seed)  # fixes the environment's child seeds; the resets below continue from it
    parallel = hasattr(env.unwrapped, "defer_training")
    session_start, elapsed_before = time.monotonic(), state.elapsed
    warned_idle = False
    try:
        while state.distinct < budget and state.episode < max_episodes:
            if max_minutes is not None and state.elapsed >= 60 * max_minutes:
                break
            left = min(budget - state.distinct, max_episodes - state.episode)  # architectures the round may propose
            size = _round_size(policy, workers, left, parallel)
            if size < min(workers, left) and not warned_idle:
                warned_idle = True
                warnings.warn(
                    f"search.workers={workers}, but the controller proposes {size} architecture(s) at a time, "
                    f"so {workers - size} worker(s) idle: set controller.batch_size={workers} or more "
                    "(the LSTM's architectures per update, evolution's mutants per round)",
                    stacklevel=2,
                )
            # a lone episode with no runner gains nothing from deferring: its last step trains the child
            deferred = parallel and (size > 1 or runner is not None)
            if deferred:  # propose the round, train its new children at once, then replay it for the rewards
                env.unwrapped.defer_training()
                proposals = [_play(env, policy)[1]["tokens"] for _ in range(size)]
                env.unwrapped.train_deferred(runner)
                played = [_play(env, None, tokens) for tokens in proposals]
            else:
                played = [_play(env, policy)]
            for reward, info in played:
                row = _history_row(state, seen, reward, info)
                state.history.append(row)
                state.episode += 1
                state.elapsed = elapsed_before + time.monotonic() - session_start
                seen.setdefault(row["tokens"], row)
                state.consecutive_failures = (
                    state.consecutive_failures + 1 if row["failed"] and not row["reused"] else 0
                )
                metrics = policy.end_episode(float(reward), info)
                if run_dir is not None:
                    _append_history(run_dir / "history.csv", row)
                    _write_best(run_dir / "best.json", state.best)
                if writer is not None:
                    _log_episode(writer, state, row, metrics, policy)
                if bar is not None:
                    _update_bar(bar, state, max_minutes)
                if state.consecutive_failures >= max_consecutive_failures:
                    reasons = [r["reason"] for r in state.history[-3:]]
                    raise SearchError(
                        f"{state.consecutive_failures} children failed in a row "
                        f"(search.max_consecutive_failures={max_consecutive_failures}); last reasons: {reasons}"
                    )
            if run_dir is not None:
                save_checkpoint(run_dir / "checkpoint.pt", policy, state)
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            if state.best is not None and hparams is not None:
                _log_hparams(writer, hparams, state)
            writer.close()
    return state


def _round_size(policy: Policy, workers: int, left: int, parallel: bool) -> int:
    """How many architectures to propose before feeding results back; never depends on how the children
    are trained, except for a policy whose proposals ignore the results (``proposals_per_round() is None``)."""
    if not parallel:
        return 1
    size = policy.proposals_per_round()
    if size is None:  # several children per worker, so that a slow child does not leave the others idle
        size = 4 * workers
    return max(1, min(size, left))


def _play(env: gym.Env, policy: Policy | None, tokens: list[int] | None = None) -> tuple[float, dict[str, Any]]:
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


def _update_bar(bar: Any, state: SearchState, max_minutes: float | None) -> None:
    bar.n = state.distinct
    best = state.best
    postfix = {"best": f"{best['reward']:.4f}" if best else "-", "episodes": state.episode}
    if max_minutes is not None:  # the bar's own estimate knows nothing of the time cap
        postfix["time_cap_left"] = f"{max(0.0, max_minutes - state.elapsed / 60):.1f}min"
    bar.set_postfix(postfix)


def _history_row(state: SearchState, seen: dict[str, dict], reward: float, info: dict[str, Any]) -> dict[str, Any]:
    tokens = " ".join(str(t) for t in info["tokens"])
    first = seen.get(tokens)
    known = {
        "architecture",
        "tokens",
        "arch",
        "val_accuracy",
        "params",
        "train_seconds",
        "failed",
        "reason",
        "reused",
        "cached",
        "deferred",
        "child_seed",
    }
    return {
        "index": first["index"] if first else state.distinct,
        "episode": state.episode,
        "tokens": tokens,
        "architecture": info.get("architecture", tokens),
        "reward": float(reward),
        "val_accuracy": float(info.get("val_accuracy", reward)),
        "params": int(info.get("params", 0)),
        "seconds": 0.0 if first or info.get("cached") else float(info.get("train_seconds", 0.0)),
        "reused": int(first is not None),
        "cached": int(bool(info.get("cached", False))),
        "failed": int(bool(info.get("failed", False))),
        "reason": str(info.get("reason", "")),
        "metrics": json.dumps({k: v for k, v in info.items() if k not in known and isinstance(v, (int, float))}),
        "arch": info.get("arch"),
    }


# --- files -------------------------------------------------------------------------------------------


def _atomic_write(path: Path, write: Any) -> None:
    """Write through a temporary file and rename, so a kill at any moment leaves the old or the new file.
    Ctrl-C or SIGTERM during the write takes effect once it is done (see :func:`_interrupts_held`)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with _interrupts_held():
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


@contextlib.contextmanager
def _interrupts_held() -> Any:
    """Hold SIGINT and SIGTERM until the block ends, then deliver them. An interrupt raised inside a
    library's writer (torch.save's zip file) would otherwise be replaced by that writer's own error on
    the way out: a stack trace instead of a clean stop with the resume hint."""
    if threading.current_thread() is not threading.main_thread():
        yield  # Python runs signal handlers in the main thread only
        return
    received: list[int] = []
    held = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not None]  # None: set outside Python
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if received:
            signal.raise_signal(received[0])  # now handled as usual (KeyboardInterrupt)


def _write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    def write(fh: Any) -> None:
        text = _csv_lines([dict(zip(HISTORY_COLUMNS, HISTORY_COLUMNS))] + rows)
        fh.write(text.encode())

    _atomic_write(path, write)


def _csv_lines(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writerows(rows)
    return buf.getvalue()


def _append_history(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(_csv_lines([row]))
        fh.flush()
        os.fsync(fh.fileno())


def _write_best(path: Path, best: dict[str, Any] | None) -> None:
    if best is None:
        return
    payload = {
        "architecture": best["architecture"],
        "tokens": [int(t) for t in best["tokens"].split()],
        "reward": best["reward"],
        "val_accuracy": best["val_accuracy"],
        "params": best["params"],
        "episode": best["episode"],
        "index": best["index"],
        "metrics": json.loads(best["metrics"]),
        "arch": best.get("arch"),
    }
    _atomic_write(path, lambda fh: fh.write(json.dumps(payload, indent=2).encode()))


def save_checkpoint(path: Path, policy: Policy, state: SearchState) -> None:
    payload = {
        "version": CHECKPOINT_VERSION,
        "spec": policy.spec.__dict__,
        "policy": policy.state_dict(),
        "state": state.__dict__,
        "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
    }
    _atomic_write(path, lambda fh: torch.save(payload, fh))


def load_checkpoint(path: Path, policy: Policy) -> SearchState:
    """Restore ``policy`` and the RNGs from ``path``; return the loop's state. Refuses anything unusable."""
    if not path.exists():
        raise SearchError(f"cannot resume: {path} does not exist (is {path.parent} a nasrl run folder?)")
    try:
        payload = torch.load(path, weights_only=False)
    except Exception as exc:
        raise SearchError(f"cannot resume: {path} is corrupt or truncated ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("version") != CHECKPOINT_VERSION:
        raise SearchError(f"cannot resume: {path} is not a nasrl checkpoint of version {CHECKPOINT_VERSION}")
    if payload["spec"] != policy.spec.__dict__:
        saved = payload["spec"]
        raise SearchError(
            f"cannot resume: {path} was made for an environment with decisions {list(saved['decision_names'])} "
            f"and K={saved['num_actions']}; the configured one has {list(policy.spec.decision_names)} and "
            f"K={policy.spec.num_actions} (a different search space?)"
        )
    try:
        policy.load_state_dict(payload["policy"])
    except Exception as exc:
        raise SearchError(
            f"cannot resume: the checkpoint's policy does not fit the configured one "
            f"(a different controller or search space, or an older nasrl?): {type(exc).__name__}: {exc}"
        ) from None
    random.setstate(payload["rng"]["python"])
    np.random.set_state(payload["rng"]["numpy"])
    torch.set_rng_state(payload["rng"]["torch"])
    return SearchState(**payload["state"])


# --- monitoring --------------------------------------------------------------------------------------


def _tensorboard(run_dir: Path, start_step: int) -> Any:
    from torch.utils.tensorboard import SummaryWriter

    # purge_step drops events logged after the checkpoint by an interrupted session.
    return SummaryWriter(str(run_dir / "tb"), purge_step=start_step if start_step > 0 else None)


def _log_episode(
    writer: Any, state: SearchState, row: dict[str, Any], metrics: dict[str, float], policy: Policy
) -> None:
    step = state.episode
    best = state.best
    writer.add_scalar("search/reward", row["reward"], step)
    writer.add_scalar("search/best_reward", best["reward"], step)
    writer.add_scalar("search/val_accuracy", row["val_accuracy"], step)
    writer.add_scalar("search/distinct_architectures", state.distinct, step)
    writer.add_scalar("search/archs_per_hour", state.distinct / max(state.elapsed, 1e-9) * 3600, step)
    writer.add_scalar("child/params", row["params"], step)
    writer.add_scalar("child/train_seconds", row["seconds"], step)
    if best["episode"] == row["episode"]:
        writer.add_text("search/best_architecture", f"{best['architecture']} (reward {best['reward']:.4f})", step)
    for name, value in metrics.items():
        writer.add_scalar(f"controller/{name}", value, step)
    if metrics:
        for decision, probs in policy.choice_probabilities().items():
            labels = policy.spec.choice_labels[policy.spec.decision_names.index(decision)]
            for label, p in zip(labels, probs):
                writer.add_scalar(f"policy/{decision}/{label}", p, step)


def _log_hparams(writer: Any, hparams: dict[str, Any], state: SearchState) -> None:
    clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}
    best = state.best
    writer.add_hparams(
        clean,
        {"hparam/best_reward": best["reward"], "hparam/best_val_accuracy": best["val_accuracy"]},
        run_name=".",
        global_step=state.episode,
    )


def _progress_bar(budget: int, done: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=budget, initial=done, desc="architectures", unit="arch", dynamic_ncols=True, mininterval=1.0)
