"""The run folder: the one module that writes and reads its files.

A search's Hydra run folder holds ``.hydra/config.yaml`` (the composed config), ``history.csv`` (a row per
episode, appended as it ends), ``best.json`` (rewritten when it changes), ``checkpoint.pt`` (policy,
random states and the loop's state, rewritten atomically after every round and once before the first)
and ``cache.sqlite`` (every child result, ``env/evaluators/cache.py``). ``retrain``, the resume of ``nasrl-train``
and the result scripts read runs through the functions at the end of this module, which also read folders
written before the package was called ``nasrl`` (see :func:`read_config`).

A run folder may come from someone else, so ``checkpoint.pt`` holds plain data only (tensors, dicts, lists,
numbers, strings) and is read with ``torch.load(weights_only=True)``, which runs no code from the file
(:func:`load_plain`). Files that need Python's full unpickler (checkpoints of version 1, or crafted ones) are
refused unless ``NASRL_TRUST_PICKLES=1`` is set, because loading such a file runs any code its pickle holds.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import io
import json
import os
import pickle
import random
import re
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from nasrl.controller.policy import Policy
from nasrl.env.evaluators.base import Evaluator

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
    "metrics",  # JSON of extra numbers the evaluator reported (e.g. NAS-Bench-201 accuracies, torch threads)
    "stopped",  # 1: early stopping ended this child's training: its val_accuracy and reward are partial
    "proposal",  # number of the proposal, in the order the policy made them (rows are in the order results came)
    "staleness",  # policy updates between this proposal and its result (0 in a sequential search)
]
# 2: plain data only, read with torch.load(weights_only=True); 1 held numpy's random state as pickled arrays
CHECKPOINT_VERSION = 2
# The opt-in, an environment variable, to read files that only Python's full unpickler reads (old or crafted):
# loading such a file runs any code its pickle holds, so it is off unless set to 1.
TRUST_PICKLES = "NASRL_TRUST_PICKLES"
# info keys that have a column of their own, or that are not numbers to keep in ``metrics``
_NOT_METRICS = {"architecture", "tokens", "arch", "val_accuracy", "params", "train_seconds", "failed", "reason"}
_NOT_METRICS |= {"reused", "cached", "deferred", "child_seed", "stopped", "proposal", "staleness"}


class SearchError(RuntimeError):
    """A search that cannot go on (too many failed children, an unusable checkpoint or run folder)."""


class UnsafeFileError(SearchError):
    """A file that only Python's full unpickler reads, refused because loading it could run code
    (set ``NASRL_TRUST_PICKLES=1`` to read it anyway, see :func:`load_plain`)."""


@dataclass
class SearchState:
    """Everything the loop itself accumulates; saved in the checkpoint."""

    episode: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed: float = 0.0  # wall seconds over all sessions of the run
    consecutive_failures: int = 0
    proposals: int = 0  # architectures the policy proposed (fed back or in flight)
    # the asynchronous search's children in flight when saved: {"proposal", "tokens", "version"}, resubmitted on resume
    in_flight: list[dict[str, Any]] = field(default_factory=list)
    completions: int = 0  # children the asynchronous search's runner has handed back (lines of completions.txt)
    # tokens -> the row that first evaluated them; derived from history, not saved
    _first: dict[str, dict[str, Any]] = field(init=False, repr=False, compare=False)
    # weight sharing's derivation, best first: (shared-weights score, architecture); written to derived.csv and
    # best.json, not saved in the checkpoint (a resumed search derives again)
    derived: list[tuple[float, Any]] = field(init=False, repr=False, compare=False, default_factory=list)

    def __post_init__(self) -> None:
        self._first = {}
        for row in self.history:
            row.setdefault("stopped", 0)  # a checkpoint written before the column existed
            row.setdefault("proposal", row["episode"])
            row.setdefault("staleness", 0)
            row.setdefault("over_limit", int(bool(json.loads(row["metrics"] or "{}").get("over_limit", 0))))
            self._first.setdefault(row["tokens"], row)

    def saved(self) -> dict[str, Any]:
        """What the checkpoint keeps (everything but the derived lookup)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}

    @property
    def distinct(self) -> int:
        """Distinct architectures evaluated (what ``search.budget`` counts)."""
        return len(self._first)

    @property
    def best(self) -> dict[str, Any] | None:
        """The row with the highest reward, preferring children that did not fail; never a child over a
        constraint's limit (None while every child so far was), so that the reported architecture meets it."""
        within = [r for r in self.history if not r["over_limit"]]
        rows = [r for r in within if not r["failed"]] or within
        return max(rows, key=lambda r: r["reward"]) if rows else None

    def add(
        self, reward: float, info: dict[str, Any], proposal: int | None = None, staleness: int = 0
    ) -> dict[str, Any]:
        """Record the episode that just ended (its last step's reward and info) and return its history row.
        ``proposal``: its number among the policy's proposals (default: the episode's)."""
        tokens = " ".join(str(t) for t in info["tokens"])
        first = self._first.get(tokens)
        row = {
            "index": first["index"] if first else self.distinct,
            "episode": self.episode,
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
            "metrics": json.dumps(
                {k: v for k, v in info.items() if k not in _NOT_METRICS and isinstance(v, (int, float))}
            ),
            "stopped": int(bool(info.get("stopped", 0))),
            "proposal": self.episode if proposal is None else proposal,
            "staleness": staleness,
            "arch": info.get("arch"),
            "over_limit": int(bool(info.get("over_limit", 0))),  # also in metrics; here so best() need not parse it
        }
        self.history.append(row)
        self._first.setdefault(tokens, row)
        self.episode += 1
        self.consecutive_failures = self.consecutive_failures + 1 if row["failed"] and not row["reused"] else 0
        return row


def evaluator_to_keep(evaluator: Evaluator) -> Evaluator | None:
    """``evaluator`` if a resume needs its state in the checkpoint (``keeps_state``, e.g. early stopping's
    completed curves), else None: a search whose evaluator keeps nothing writes the checkpoint it always wrote,
    and older checkpoints stay resumable."""
    return evaluator if evaluator.keeps_state else None


class RunFolder:
    """Writes a search's files; every write leaves a complete file, whenever the process is killed."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.history = self.path / "history.csv"
        self.checkpoint = self.path / "checkpoint.pt"
        self.completions = self.path / "completions.txt"

    def start(self, policy: Policy, resume: bool, evaluator: Evaluator | None = None) -> SearchState:
        """The state to continue from: the checkpoint's (``resume``; restores ``policy``, the random states and,
        given, a weight-sharing ``evaluator``) or a new one. Either way the files then agree with the state,
        and a checkpoint exists, so a search interrupted before its first child finished can be resumed too."""
        self.path.mkdir(parents=True, exist_ok=True)
        resuming = resume and self.checkpoint.exists()
        state = load_checkpoint(self.checkpoint, policy, evaluator) if resuming else SearchState()
        atomic_write(self.history, lambda fh: fh.write(_csv([_HEADER, *state.history]).encode()))
        if self.completions.exists():  # completions after the checkpoint belong to children that resume redoes
            kept = self.completions.read_text().splitlines()[: state.completions]
            atomic_write(self.completions, lambda fh: fh.write("".join(f"{line}\n" for line in kept).encode()))
        self.save(policy, state, evaluator)
        return state

    def record_completion(self, proposal: int) -> None:
        """Append the proposal whose child the asynchronous search's runner just handed back to
        ``completions.txt``: the order that reproduces the search (``search.completion_order``)."""
        with open(self.completions, "a") as fh:
            fh.write(f"{proposal}\n")
            fh.flush()
            os.fsync(fh.fileno())

    def record(self, row: dict[str, Any], best: dict[str, Any] | None) -> None:
        """Append an episode's row; rewrite ``best.json`` when this row is the best (``best=None``: never,
        for a search whose result is chosen otherwise, see :meth:`write_best`)."""
        with open(self.history, "a") as fh:
            fh.write(_csv([row]))
            fh.flush()
            os.fsync(fh.fileno())
        if best is row:
            payload = {k: best[k] for k in ("architecture", "reward", "val_accuracy", "params", "episode", "index")}
            payload |= {"tokens": [int(t) for t in best["tokens"].split()], "metrics": json.loads(best["metrics"])}
            payload["arch"] = best.get("arch")
            self.write_best(payload)

    def write_best(self, payload: dict[str, Any]) -> None:
        """Rewrite ``best.json`` (what ``nasrl-retrain RUN`` retrains): ``tokens`` and the readable fields."""
        atomic_write(self.path / "best.json", lambda fh: fh.write(json.dumps(payload, indent=2).encode()))

    def save(self, policy: Policy, state: SearchState, evaluator: Evaluator | None = None) -> None:
        """Rewrite the checkpoint: policy, the loop's state, every random state and, given, the state of a
        weight-sharing ``evaluator`` (its shared weights, optimizer and data order) or of one that stops children
        early (the completed children's curves)."""
        payload = {
            "version": CHECKPOINT_VERSION,
            "spec": policy.spec.__dict__,
            "policy": policy.state_dict(),
            "state": state.saved(),
            "rng": _random_states(),
        }
        if evaluator is not None:
            payload["evaluator"] = evaluator.state_dict()
        check_plain(payload, "the checkpoint")
        atomic_write(self.checkpoint, lambda fh: torch.save(payload, fh))


_HEADER = dict(zip(HISTORY_COLUMNS, HISTORY_COLUMNS))


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _random_states() -> dict[str, Any]:
    """Python's, numpy's and torch's global random states as plain data (lists where the libraries give
    tuples and arrays): what ``torch.load(weights_only=True)`` reads back."""
    version, internal, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    assert isinstance(numpy_state, dict)  # legacy=False: a dict, even for the legacy global generator
    return {
        "python": [version, list(internal), gauss],
        "numpy": numpy_state | {"state": {k: np.asarray(v).tolist() for k, v in numpy_state["state"].items()}},
        "torch": torch.get_rng_state(),
    }


def _restore_random_states(rng: dict[str, Any], version: int) -> None:
    """Put back what :func:`_random_states` saved (or, ``version`` 1, the libraries' own tuples)."""
    if version == 1:
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
    else:
        py_version, internal, gauss = rng["python"]
        random.setstate((py_version, tuple(internal), gauss))
        numpy_state = rng["numpy"]
        key = np.asarray(numpy_state["state"]["key"], dtype=np.uint32)
        np.random.set_state(numpy_state | {"state": {"key": key, "pos": int(numpy_state["state"]["pos"])}})
    torch.set_rng_state(rng["torch"])


def load_checkpoint(path: Path, policy: Policy, evaluator: Evaluator | None = None) -> SearchState:
    """Restore ``policy``, the random states and, given, a weight-sharing ``evaluator`` from ``path``; return
    the loop's state. Refuses anything unusable, naming what is wrong; a checkpoint that needs the full
    unpickler (version 1, or crafted) only with ``NASRL_TRUST_PICKLES=1`` (see :func:`load_plain`)."""
    try:
        payload = load_plain(path, "checkpoint")
    except UnsafeFileError as exc:
        raise UnsafeFileError(f"cannot resume: {exc}") from None
    except Exception as exc:
        raise SearchError(f"cannot resume: {path} is corrupt or truncated ({type(exc).__name__}: {exc})") from None
    version = payload.get("version") if isinstance(payload, dict) else None
    if version not in (1, CHECKPOINT_VERSION):
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
    if evaluator is not None:
        if "evaluator" not in payload:
            raise SearchError(
                f"cannot resume: {path} has no evaluator state (shared weights, early stopping's curves): it was "
                "written by a search whose evaluator kept none"
            )
        try:
            evaluator.load_state_dict(payload["evaluator"])
        except Exception as exc:
            raise SearchError(
                f"cannot resume: the checkpoint's evaluator state does not fit the configured evaluator "
                f"({type(exc).__name__}: {str(exc).splitlines()[0]})"
            ) from None
    _restore_random_states(payload["rng"], version)
    return SearchState(**payload["state"])


# what torch.load(weights_only=True) reads without being told of more types
_PLAIN_LEAVES = (str, int, float, bool, complex, bytes, type(None), torch.dtype, torch.device)
_PLAIN_CONTAINERS = (dict, list, tuple, set, torch.Size)


def check_plain(data: Any, what: str, where: str = "") -> None:
    """Refuse, naming where, anything in ``data`` that ``torch.load(weights_only=True)`` would not read back
    (a numpy array, a dataclass, a generator...): found when a file is written, not when it is read."""
    kind = type(data)
    if isinstance(data, torch.Tensor) or kind in _PLAIN_LEAVES:
        return
    if kind in (dict, collections.OrderedDict):
        for key, value in data.items():
            check_plain(key, what, f"{where}[{key!r}] (a key)")
            check_plain(value, what, f"{where}.{key}" if isinstance(key, str) else f"{where}[{key!r}]")
        return
    if kind in _PLAIN_CONTAINERS:
        for i, value in enumerate(data):
            check_plain(value, what, f"{where}[{i}]")
        return
    raise SearchError(
        f"{what} cannot hold {kind.__module__}.{kind.__qualname__} (at {where.lstrip('.') or 'the top'}): it holds "
        "tensors, dicts, lists, tuples, str, int, float, bool and None only, so that torch.load(weights_only=True) "
        "reads it; convert it to those in state_dict() and back in load_state_dict()"
    )


def load_plain(path: str | Path, what: str = "file") -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU: tensors and plain data, and no code from the file runs.

    A file that only Python's full unpickler reads (written by an older nasrl, or crafted to run code when
    loaded) raises :class:`UnsafeFileError` in one line naming the file, the risk and the opt-in: with the
    environment variable ``NASRL_TRUST_PICKLES=1`` it is read with ``weights_only=False``, which runs any code
    its pickle holds, so set it only for files whose origin you trust. Other errors (a missing, truncated or
    corrupt file) are torch's own, for the caller to word."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # a Python object that is not plain data (torch names its "GLOBAL"); anything else is a broken file
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found is None:
            raise
        if os.environ.get(TRUST_PICKLES) == "1":
            return torch.load(path, map_location="cpu", weights_only=False)
        raise UnsafeFileError(
            f"{path}: this {what} needs Python's full unpickler (it holds {found.group(1)}): it was written by an "
            "older nasrl, or crafted, and loading it runs any code its pickle holds; if you trust where it came "
            f"from, set {TRUST_PICKLES}=1 to read it anyway"
        ) from None


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
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
def _interrupts_held() -> Iterator[None]:
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


# --- readers ------------------------------------------------------------------------------------------------

# Settings a resumed run may change; everything else comes from the run's saved config.
RESUMABLE_OVERRIDES = ("search.", "env.cache", "resume", "hydra.")
_OLD_PACKAGES = ("env.", "controller.")  # import names before 0.2, when the package was not called nasrl


def read_history(run: str | Path) -> list[dict[str, str]]:
    """The rows of ``run/history.csv`` (or of the CSV file ``run``) as strings, in order."""
    path = Path(run)
    with open(path if path.suffix == ".csv" else path / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def read_completions(path: str | Path) -> list[int]:
    """The completion order of an asynchronous run: proposal numbers from ``completions.txt`` (``path`` is
    the file or its run folder)."""
    path = Path(path)
    path = path / "completions.txt" if path.is_dir() else path
    if not path.exists():
        raise SearchError(
            f"search.completion_order={path}: no such file (an asynchronous run folder has completions.txt)"
        )
    return [int(line) for line in path.read_text().split()]


def read_best(path: str | Path) -> dict[str, Any]:
    """A run's ``best.json`` (``path`` is the file or its run folder)."""
    path = Path(path)
    return json.loads((path / "best.json" if path.is_dir() else path).read_text())


def read_config(run: str | Path) -> DictConfig:
    """``run/.hydra/config.yaml``, brought up to date: ``_target_: env.X`` / ``controller.X`` (runs written
    before the package was called ``nasrl``) become ``nasrl.env.X`` / ``nasrl.controller.X``, and the old
    top-level ``cache.path`` becomes ``env.cache``."""
    path = Path(run) / ".hydra" / "config.yaml"
    if not path.exists():
        raise SearchError(f"{run}: not a nasrl run folder (expected .hydra/config.yaml in it)")
    cfg = OmegaConf.load(path)
    assert isinstance(cfg, DictConfig)

    def migrate(node: Any) -> None:
        if isinstance(node, DictConfig):
            target = node.get("_target_")
            if isinstance(target, str) and target.startswith(_OLD_PACKAGES):
                node._target_ = "nasrl." + target
            for key in node:
                migrate(node._get_node(key))

    migrate(cfg)
    if "cache" in cfg:
        old_path = cfg.cache.get("path")
        if old_path is not None and "env" in cfg and cfg.env.get("cache") is None:
            cfg.env.cache = old_path
        del cfg["cache"]
    controller = cfg.get("controller")
    if isinstance(controller, DictConfig) and "reward_transform" in controller:
        if controller.reward_transform != "identity":
            raise SearchError(
                f"{run} transformed rewards in the controller (controller.reward_transform="
                f"{controller.reward_transform}), which nasrl now does in the environment only "
                "(env.reward_transform); that run cannot be resumed by this version"
            )
        del controller["reward_transform"]
    return cfg


def resume_config(run: str | Path, overrides: list[str]) -> DictConfig:
    """The saved config of ``run``, with this command's ``search.*`` / ``env.cache`` overrides applied; any
    other changed setting is refused (a resumed run must be the same search)."""
    run_dir = Path(run)
    old = read_config(run_dir)
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    choices = OmegaConf.load(hydra_file).hydra.runtime.choices if hydra_file.exists() else {}
    last = {o.lstrip("+~").split("=", 1)[0]: o for o in overrides if "=" in o}  # the last one of a key wins
    refused = []
    for key, o in last.items():
        if key.startswith(RESUMABLE_OVERRIDES):
            continue
        value = o.split("=", 1)[1]
        if key in choices:  # a config group choice such as env=synthetic
            if str(choices[key]) != value:
                refused.append(o)
            continue
        new_value = OmegaConf.select(OmegaConf.from_dotlist([o.lstrip("+~")]), key)
        if OmegaConf.select(old, key, default=None) != new_value:
            refused.append(o)
    if refused:
        raise SearchError(
            "resume continues a run with its saved config; only search.* settings and env.cache can change, "
            f"got {refused}"
        )
    changed = [o for k, o in last.items() if k.startswith(("search.", "env.cache"))]
    merged = OmegaConf.merge(old, OmegaConf.from_dotlist(changed))
    assert isinstance(merged, DictConfig)
    merged.resume = str(run_dir)
    return merged


def read_elapsed_minutes(run: str | Path) -> float:
    """Wall-clock minutes the search of ``run`` spent over all its sessions (what search.max_minutes caps)."""
    return float(load_plain(Path(run) / "checkpoint.pt", "checkpoint")["state"]["elapsed"]) / 60
