"""Shared test helpers: a tiny synthetic space, random valid token sequences, and running the commands."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from nasrl.env.spaces.space import SearchSpace

ROOT = Path(__file__).resolve().parent.parent
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


def random_tokens(space: SearchSpace, rng: np.random.Generator) -> list[int]:
    """A uniformly drawn valid token sequence of ``space``."""
    tokens: list[int] = []
    while (d := space.next_decision(tokens)) is not None:
        tokens.append(int(rng.integers(space.num_choices(d))))
    return tokens


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
    full_env = {"HYDRA_FULL_ERROR": "0", **(env or {})}
    if not in_process:
        args = [sys.executable, str(ROOT / "scripts" / script), *overrides]
        return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **full_env})  # fmt: skip
    module = importlib.import_module(f"nasrl.scripts.{script.removesuffix('.py')}")
    out, err = io.StringIO(), io.StringIO()
    saved = (sys.argv, os.getcwd(), dict(os.environ), list(sys.path))
    sys.argv = [f"nasrl-{script.removesuffix('.py')}", *overrides]
    os.environ.update(full_env)
    sys.path[:0] = [p for p in full_env.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.chdir(cwd)
    code: int = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                module.main()
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
