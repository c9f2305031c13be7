"""What the commands (``nasrl-train``, ``nasrl-benchmark``, ``nasrl-retrain``) share: the typed configs and
resolvers registered with Hydra, what they print, and :func:`run_app`, which turns any bad setting, whether
Hydra finds it while composing the config or our code finds it before training, into one line
``error: ...`` and exit status 1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
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
        return _unknown_setting(key, schema)
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


# --- a _target_ of the user's: its own constructor is the schema --------------------------------------------


def retarget(overrides: list[str]) -> list[str]:
    """The command line with each ``PATH._target_=CLASS`` made a replacement of the node at ``PATH`` (any node
    built from a ``_target_``: ``env.evaluator``, ``controller``, ``env``) by the schema of CLASS's own
    constructor (``conf/schema.py`` ``store_target``): none of the old class's settings stay, every
    ``PATH.KEY=VALUE`` is checked against CLASS's keywords and types, and ``+PATH.KEY=VALUE`` (the old way)
    needs no ``+``. Two defaults entries are added for each such node, and the override of ``_target_`` stays
    (a sweep over classes, ``PATH._target_=A,B``, becomes a sweep over the second entry alone, and can take no
    ``PATH.KEY`` settings): the run's ``.hydra/overrides.yaml`` composes the same config again.
    ``+PATH._target_`` (adding a node that was not there) is left as it is, and so are flags (``--cfg job``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from nasrl.conf.schema import TARGET_GROUP, UNSET_GROUP

    parser = OverridesParser.create()
    parsed: dict[str, Any] = {}
    for item in overrides:
        if "=" in item and not item.startswith("-"):
            with contextlib.suppress(HydraException):  # a malformed override: Hydra reports it, as without us
                parsed[item] = parser.parse_override(item)
    replayed = {o.package for o in parsed.values() if o.key_or_group == TARGET_GROUP and o.package is not None}
    schemas: dict[str, type] = {}
    entries: list[tuple[float, str]] = []  # by depth: a node is replaced before the nodes inside it
    first = 0  # the entries go where the first _target_ was: argparse takes overrides as one run of arguments
    for index, item in enumerate(overrides):
        override = parsed.get(item)
        if override is None:
            continue
        if override.key_or_group == TARGET_GROUP and override.package is not None:  # replayed: register it
            for target in _values(override):
                schemas[override.package] = _store(override.package, target)
            continue
        if not _sets_target(override):
            continue
        path = override.key_or_group.removesuffix("._target_")
        for target in _values(override):  # each of a sweep's classes is stored; the last one checks +PATH.KEY
            schemas[path] = _store(path, target)
        if path not in replayed:
            first = index if not entries else first
            parent, _, last = path.rpartition(".")
            entries.append((path.count("."), f"+{UNSET_GROUP}@{parent or '_global_'}={last}"))
            entries.append((path.count(".") + 0.5, f"+{TARGET_GROUP}@{path}={item.split('=', 1)[1]}"))
    if not schemas:
        return overrides
    # a sweep over classes is a sweep over the target@PATH entry alone (two swept items would make a product)
    swept = [item for item in overrides if item in parsed and _sets_target(parsed[item], swept=True)]
    for item in swept:  # Hydra composes a multirun's own config without the swept entry: the node is null then
        path = parsed[item].key_or_group.removesuffix("._target_")
        settings = [o for o in overrides if o.lstrip("+").startswith(path + ".") and o not in swept]
        if settings:
            raise _TargetError(
                f"{item}: a sweep over classes takes no settings of theirs ({', '.join(settings)}); sweep over "
                "YAML files of your own instead (hydra.searchpath, docs/guides/writing-a-policy.md)"
            )
    rewritten = [_added_key(item, parsed.get(item), schemas) for item in overrides if item not in swept]
    return rewritten[:first] + [entry for _, entry in sorted(entries)] + rewritten[first:]


def _sets_target(override: Any, swept: bool = False) -> bool:
    """``PATH._target_=CLASS`` (with ``swept``: ``PATH._target_=A,B``), not ``+PATH._target_`` or ``~...``."""
    plain = not (override.package or override.is_add() or override.is_force_add() or override.is_delete())
    return plain and override.key_or_group.endswith("._target_") and (override.is_sweep_override() or not swept)


def _values(override: Any) -> list[str]:
    """The class names of an override: one, or each of a sweep's."""
    return [str(v) for v in override.sweep_string_iterator()] if override.is_sweep_override() else [override.value()]


def _store(path: str, target: str) -> type:
    """``store_target``; what it refuses ends the command in one line, as a bad override does."""
    from nasrl.conf.schema import store_target

    try:
        return store_target(path, target)
    except ValueError as exc:
        raise _TargetError(str(exc)) from None


def _added_key(item: str, override: Any, schemas: dict[str, type]) -> str:
    """``+PATH.KEY=VALUE`` under a replaced node: without ``+`` when CLASS takes KEY (its node has it now);
    refused in one line when it does not (the class would not take it)."""
    if override is None or not override.is_add():
        return item
    key = override.key_or_group
    for path, schema in schemas.items():
        if key.startswith(path + "."):
            name = key.removeprefix(path + ".").split(".")[0]
            if name not in _settings(schema):
                raise _TargetError(_unknown_setting(f"{path}.{name}", schema))
            return item.removeprefix("+") if "." not in key.removeprefix(path + ".") else item
    return item


def _settings(schema: Any) -> list[str]:
    """The settings of a node's schema (its class's keywords); none for a node without one (a user's YAML)."""
    fields = dataclasses.fields(schema) if dataclasses.is_dataclass(schema) else ()
    return [f.name for f in fields if f.name != "_target_"]


def _unknown_setting(key: Any, schema: Any) -> str:
    """The one line for a key the node at its path does not have, naming the settings it has."""
    names = _settings(schema)
    return f"{key}: unknown setting" + (f"; the settings there are {names}" if names else "")


class _TargetError(ValueError):
    """A ``_target_`` of the command line that does not import, or a setting its class does not take."""


def package_version() -> str:
    """The installed distribution's version (``setup.cfg``), or ``unknown`` when run from a bare checkout."""
    try:
        return importlib.metadata.version("nasrl-gym")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def run_app(hydra_main: Callable[[], Any]) -> None:
    """Run a ``@hydra.main`` function as a command. Bad input that Hydra finds while it composes the
    config (an unknown key, a wrong type, a missing group option) ends in one ``error: ...`` line and exit
    status 1, as :func:`stops_on_bad_input` does for what our code finds; ``HYDRA_FULL_ERROR=1`` shows the
    full trace instead. Ctrl-C and SIGTERM raise ``KeyboardInterrupt``, also when the shell started us with
    SIGINT ignored (a background job). ``--version`` alone prints the command's name and nasrl's version."""
    global _full_trace
    if sys.argv[1:] == ["--version"]:  # ours, not Hydra's own --version (which names Hydra's)
        print(f"{Path(sys.argv[0]).name} {package_version()}")
        return
    full_trace = _full_trace = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing its own multi-line report
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _raise_interrupt)
    try:
        sys.argv[1:] = retarget(sys.argv[1:])
        hydra_main()
    except (HydraException, OmegaConfBaseException, _TargetError) as exc:
        if full_trace:
            raise
        sys.exit(one_line_error(exc))
    finally:
        if not full_trace:
            os.environ.pop("HYDRA_FULL_ERROR", None)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
