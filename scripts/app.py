"""What the commands (``nasrl-train``, ``nasrl-benchmark``, ``nasrl-retrain``) share: the typed configs and
resolvers registered with Hydra, what they print, and :func:`run_app`, which turns any bad setting, whether
Hydra finds it while composing the config or our code finds it before training, into one line
``error: ...`` and exit status 1.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import gymnasium as gym
from hydra.errors import HydraException, InstantiationException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nasrl.controller.runfolder import SearchError


def register_configs() -> None:
    """The typed configs (``conf/schema.py``) and the resolvers the configs use. ``nasrl_run_dir`` and
    ``nasrl_config_subdir``: a resumed run writes into its own folder, and the config of the resuming
    command goes to ``.hydra_resume/<time>`` so the run's ``.hydra/`` stays as it was."""
    from nasrl.conf.schema import register_configs as register_schemas

    register_schemas()
    if not OmegaConf.has_resolver("nasrl_run_dir"):
        OmegaConf.register_new_resolver("nasrl_run_dir", lambda resume, new: new if resume is None else resume)
    if not OmegaConf.has_resolver("nasrl_config_subdir"):
        OmegaConf.register_new_resolver(
            "nasrl_config_subdir", lambda resume, stamp: ".hydra" if resume is None else f".hydra_resume/{stamp}"
        )


def report(text: str, err: bool = False) -> None:
    """Print ``text`` (to stderr with ``err``) and keep it in the run folder's log (``RUN/train.log``; the
    ``nasrl`` logger writes to that file only, see ``hydra.job_logging`` in ``conf/config.yaml``)."""
    print(text, file=sys.stderr if err else sys.stdout)
    logging.getLogger("nasrl").info(text.strip())


# --- bad input: one line, before anything runs ---------------------------------------------------------------


def one_line_error(exc: BaseException) -> str:
    """The message the entry points exit with: ``error: ...`` on one line, naming the key, the value and
    what is accepted where the exception knows them."""
    cause = exc.__cause__ if isinstance(exc, HydraException) and exc.__cause__ is not None else exc
    text = _config_error(exc, cause) if isinstance(cause, OmegaConfBaseException) else str(exc)
    text = text.split("Config search path")[0]  # Hydra's list of where it looked, for a missing group option
    text = text.replace(", set env var HYDRA_FULL_ERROR=1 to see chained exception", "")
    words = text.split()
    if "Available options" in text:  # of a config group: the base_* schemas are not options to pick
        words = [w for w in words if not w.startswith("base_")]
    return "error: " + " ".join(words)


def _config_error(exc: BaseException, cause: OmegaConfBaseException) -> str:
    """An unknown key or a wrong type, found while Hydra merged a command-line override."""
    key = getattr(cause, "full_key", None) or getattr(cause, "key", None)
    message = str(getattr(cause, "msg", "") or cause).split("\n")[0]
    first = str(exc).split("\n")[0]
    override = first.removeprefix("Error merging override ") if first.startswith("Error merging override ") else ""
    if "not in" in message or "is not in struct" in message:
        schema = getattr(cause, "object_type", None)
        names = [f.name for f in dataclasses.fields(schema) if f.name != "_target_"] if schema else []
        accepted = f"; the settings there are {names}" if names else ""
        return f"{key}: unknown setting{accepted}"
    if "could not be converted to" in message:
        wanted = message.rsplit(" ", 1)[-1].lower()
        value = override.split("=", 1)[-1] if override else message.split("'")[1]
        return f"{key} must be {'an' if wanted[0] in 'aeiou' else 'a'} {wanted}, got {value!r}"
    return f"{override}: {message}" if override else message


_full_trace = False  # HYDRA_FULL_ERROR=1 was set by the user: show traces, not one line


@contextmanager
def stops_on_bad_input() -> Iterator[None]:
    """Inside an entry point's job: bad input found by our code (a ``ValueError`` or one of its kinds, a
    search that cannot go on) ends the command with one ``error: ...`` line and exit status 1."""
    try:
        yield
    except (ValueError, SearchError, InstantiationException, OmegaConfBaseException, gym.error.Error) as exc:
        if _full_trace:
            raise
        sys.exit(one_line_error(exc))


def run_app(hydra_main: Callable[[], Any]) -> None:
    """Run a ``@hydra.main`` function as a command. Bad input that Hydra finds while it composes the
    config (an unknown key, a wrong type, a missing group option) ends in one ``error: ...`` line and exit
    status 1, as :func:`stops_on_bad_input` does for what our code finds; ``HYDRA_FULL_ERROR=1`` shows the
    full trace instead. Ctrl-C and SIGTERM raise ``KeyboardInterrupt``, also when the shell started us with
    SIGINT ignored (a background job)."""
    global _full_trace
    full_trace = _full_trace = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing its own multi-line report
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _raise_interrupt)
    try:
        hydra_main()
    except (HydraException, OmegaConfBaseException) as exc:
        if full_trace:
            raise
        sys.exit(one_line_error(exc))
    finally:
        if not full_trace:
            os.environ.pop("HYDRA_FULL_ERROR", None)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
