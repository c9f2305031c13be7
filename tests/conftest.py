"""Shared test helpers: a tiny synthetic space, cnn1d chains, and running the commands and the experiments."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
import random
import runpy
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from nasrl.env.spaces.space import SearchSpace

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"  # not packaged: run from a checkout
_SCRATCH = Path(tempfile.mkdtemp(prefix="nasrl-tests-"))


def pytest_configure(config: pytest.Config) -> None:
    """Tests never touch the user's home folder: MNIST-1D's cache, matplotlib's and anything else that
    writes under HOME go to a scratch folder of this session (inherited by the processes tests start)."""
    os.environ["HOME"] = str(_SCRATCH / "home")
    os.environ["NASRL_DATA"] = str(_SCRATCH / "data")
    os.environ["MPLCONFIGDIR"] = str(_SCRATCH / "matplotlib")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_SCRATCH, ignore_errors=True)


# 10 decisions of 5 choices each: 5**10 (9.7 million) architectures, for controller tests without training.
TOY_SPACE = {
    "name": "toy",
    "network": "mlp",
    "depth": 5,
    "layer": [
        {"name": "units", "choices": [8, 16, 24, 32, 40]},
        {"name": "activation", "choices": ["relu", "tanh", "elu", "gelu", "sigmoid"]},
    ],
}
TOY_TARGET = [3, 1, 4, 1, 0, 2, 4, 3, 2, 0]


def chain_cnn1d_tokens(space: SearchSpace, layers: list[dict]) -> list[int]:
    """Tokens of a plain chain (layer i fed by layer i-1) of the cnn1d space with the given layer values."""
    tokens = [space.depths.index(len(layers))]
    for i, layer in enumerate(layers):
        tokens += [1 if j == i - 1 else 0 for j in range(i)]
        for d in space.layer_decisions:
            tokens.append(list(d.choices).index(layer[d.name]))
    return tokens


def run_script(
    script: str, *overrides: str, cwd: Path, timeout: float = 600, env: dict | None = None, in_process: bool = True
) -> subprocess.CompletedProcess:
    """Run the command of ``scripts/<script>`` (``nasrl-train`` for train.py) with ``overrides`` in ``cwd``, as
    a user would; return a CompletedProcess. In this process by default (the same code as the console
    script, without paying seconds of imports per call); ``in_process=False`` starts a real process, for
    what only a process shows (exit codes of the interpreter, signals, a fresh import)."""
    if not in_process:
        return _subprocess(ROOT / "scripts" / script, overrides, cwd, timeout, env)
    module = importlib.import_module(f"nasrl.scripts.{script.removesuffix('.py')}")
    return _in_process(module.main, f"nasrl-{script.removesuffix('.py')}", overrides, cwd, env)


def run_experiment(
    script: str, *args: str, cwd: Path, timeout: float = 600, env: dict | None = None, in_process: bool = True
) -> subprocess.CompletedProcess:
    """Run ``experiments/<script>`` with ``args`` in ``cwd`` as ``python experiments/<script>`` runs it (as
    ``__main__``, its folder first on ``sys.path``, where one experiment finds another); in this process unless
    ``in_process`` is False, as :func:`run_script`."""
    path = EXPERIMENTS / script
    if not in_process:
        return _subprocess(path, args, cwd, timeout, env)
    saved_path = list(sys.path)
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        return _in_process(lambda: runpy.run_path(str(path), run_name="__main__"), str(path), args, cwd, env)
    finally:
        sys.path[:] = saved_path


def load_experiment(script: str) -> ModuleType:
    """The module of ``experiments/<script>`` (not a package: it is loaded from its path, under its file name,
    and registered in ``sys.modules`` as a module is, for its dataclasses and for pickling)."""
    name = script.removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / script)
    assert spec is not None and spec.loader is not None, f"no experiment {script} in {EXPERIMENTS}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _subprocess(
    path: Path, args: tuple[str, ...], cwd: Path, timeout: float, env: dict | None
) -> subprocess.CompletedProcess:
    full_env = {"HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run([sys.executable, str(path), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **full_env})  # fmt: skip


def _in_process(
    main: Callable[[], object], argv0: str, args: tuple[str, ...], cwd: Path, env: dict | None
) -> subprocess.CompletedProcess:
    full_env = {"HYDRA_FULL_ERROR": "0", **(env or {})}
    out, err = io.StringIO(), io.StringIO()
    saved = (sys.argv, os.getcwd(), dict(os.environ), list(sys.path))
    sys.argv = [argv0, *args]
    os.environ.update(full_env)
    sys.path[:0] = [p for p in full_env.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.chdir(cwd)
    code: int = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                if isinstance(exc.code, str):  # sys.exit("error: ..."): the interpreter would print it
                    print(exc.code, file=sys.stderr)
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv, cwd_before, environ, sys.path[:] = saved[0], saved[1], saved[2], saved[3]
        os.chdir(cwd_before)
        os.environ.clear()
        os.environ.update(environ)
    return subprocess.CompletedProcess(sys.argv, code, out.getvalue(), err.getvalue())


@pytest.fixture
def toy_space() -> dict:
    return dict(TOY_SPACE)


def write_small_corpus(path: Path, lines: int = 200) -> Path:
    """A small made-up play in the plain-text format of the char-rnn corpus (a speaker's line, then the speech,
    then a blank line), for the tests that read a corpus: the real one is data, kept outside the repository."""
    rng = random.Random(0)
    speakers = ["First Citizen", "Second Citizen", "MENENIUS", "MARCIUS"]
    words = "the a of and to my your this that is not be we you what good lord speak hear now come".split()
    text = []
    for i in range(lines // 3):
        text.append(f"{speakers[i % len(speakers)]}:")
        text.append(" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))).capitalize() + ".")
        text.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(text))
    return path


def play(env: Any, tokens: list[int]) -> tuple[float, dict]:
    """One episode of ``tokens`` from ``reset(seed=0)``: the last step's reward and info (the episode must end)."""
    env.reset(seed=0)
    for token in tokens:
        _, reward, done, _, info = env.step(token)
    assert done
    return float(reward), info
