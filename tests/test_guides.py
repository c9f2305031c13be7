"""The guides' code runs as a reader runs it, so a guide cannot rot.

Each page is parsed with Sybil in a fresh folder: a fenced block with a title (```` ```python title="my_pkg/x.py" ````)
is a file the reader writes, and is written there; a ``python`` block without one is run, the page's blocks in
order and in one namespace, with that folder as the working directory and first on ``sys.path`` (as
``python script.py`` run from it). Then every ``nasrl-*`` command of the page's ``bash`` blocks is checked with
the page's files in place: those on ``env=synthetic`` or on a table the page wrote run in this process with
their small budgets, a
``nasrl-benchmark`` on a table the page wrote runs in a real process, and the others compose, their ``_target_``
classes imported, as ``nasrl-train --cfg job`` would.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_module
from sybil import Document, Example, Region, Sybil

from conftest import ROOT, run_script
from nasrl.scripts.app import register_configs, retarget

GUIDES = [
    "writing-a-policy",
    "writing-a-search-space",
    "your-data-or-evaluator",
    "benchmarking-on-nb201",
    "tabular-benchmarks",
]
FENCE = re.compile(r"^```(\w+)(?: title=\"([^\"]+)\")?\n(.*?)^```$", re.M | re.S)
APPS = {"nasrl-train": ("train.py", "config"), "nasrl-benchmark": ("benchmark.py", "benchmark")}


def _write_file(example: Example) -> None:
    title, body = example.parsed
    path = Path.cwd() / title
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)


def _run_python(example: Example) -> None:
    _, body = example.parsed
    code = compile("\n" * (example.line - 1) + body, str(example.path), "exec")  # tracebacks name the page's line
    exec(code, example.namespace)


def blocks(document: Document) -> Any:
    for match in FENCE.finditer(document.text):
        lang, title, body = match.groups()
        if title:
            yield Region(match.start(), match.end(), (title, body), _write_file)
        elif lang == "python":
            yield Region(match.start(3), match.end(), (None, body), _run_python)


def commands(text: str) -> list[list[str]]:
    """The ``nasrl-train`` / ``nasrl-benchmark`` commands of the page's ``bash`` blocks, as argument lists."""
    found = []
    for lang, _, body in FENCE.findall(text):
        if lang != "bash":
            continue
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line.split(" # ")[0])
            while words and "=" in words[0] and not words[0].startswith("-"):  # PYTHONPATH=. and the like
                words = words[1:]
            if words and words[0] in APPS:
                found.append(words)
    return found


@pytest.mark.parametrize("page", GUIDES)
def test_a_guide_runs(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = ROOT / "docs" / "guides" / f"{page}.md"
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    try:
        document = Sybil(parsers=[blocks]).parse(path)
        examples = list(document)
        assert examples, f"{page}.md has no code to run"
        for example in examples:
            example.evaluate()
        for number, words in enumerate(commands(path.read_text())):
            _check_command(words, tmp_path, f"run{number}")
    finally:
        for name in set(sys.modules) - before:  # the page's own modules (my_pkg) do not outlive it
            if name.split(".")[0] in {p.name for p in tmp_path.iterdir()}:
                del sys.modules[name]


def _check_command(words: list[str], folder: Path, run: str) -> None:
    app, *args = [w.replace("$PWD", str(folder)) for w in words]
    script, config = APPS[app]
    table = next((a.split("=", 1)[1] for a in args if a.startswith("env.table=")), None)
    wrote_table = table is not None and (folder / table).is_file()  # a table the page wrote
    if app == "nasrl-train" and ("env=synthetic" in args or wrote_table):
        done = run_script(script, *args, "search.progress=false", f"hydra.run.dir={run}", cwd=folder,
                          env={"PYTHONPATH": str(folder)})  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert (folder / run / "history.csv").is_file()
        return
    if app == "nasrl-benchmark" and wrote_table:
        # a real process: the benchmark's worker processes are spawned, which an in-process run cannot host
        done = run_script(script, *args, f"hydra.run.dir={run}", cwd=folder, env={"PYTHONPATH": str(folder)},
                          in_process=False, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert (folder / run / "summary.md").is_file()
        return
    overrides = [a for a in args if a not in ("-m", "--cfg", "job")]
    register_configs()
    with initialize_config_module("nasrl.conf", version_base="1.3"):
        assert compose(config, overrides=retarget(overrides)) is not None


def _a_run_folder(folder: Path) -> dict[str, Any]:
    """What docs/guides/run-folder.md reads: a run folder at the path it names."""
    done = run_script("train.py", "env=synthetic", "search.budget=3", "search.progress=false",
                      "hydra.run.dir=outputs/mnist1d-lstm-seed0/2026-11-28_12-00-00", cwd=folder)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return {}


def _a_retrained_model(folder: Path) -> dict[str, Any]:
    """What docs/guides/retraining-and-export.md loads: a model retrained at the path it names, and raw inputs."""
    import torch

    done = run_script("retrain.py", "arch=[0,2,0]", "space=mlp", "dataset={name:digits}", "retrain.epochs=1",
                      "hydra.run.dir=outputs/retrain/2026-11-28/23-00-00", cwd=folder)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return {"raw_inputs": 16 * torch.rand(4, 1, 8, 8)}  # digits: (N, *input_shape), pixels valued 0..16


# Pages whose Python reads files a user has (a run folder, a retrained model): made first, at the paths they name.
OTHER_PAGES = {
    "getting-started/install": lambda folder: {},
    "getting-started/concepts": lambda folder: {},
    "guides/run-folder": _a_run_folder,
    "guides/retraining-and-export": _a_retrained_model,
}


def test_every_page_with_python_is_run() -> None:
    pages = {p.relative_to(ROOT / "docs").with_suffix("").as_posix() for p in (ROOT / "docs").rglob("*.md")
             if "```python" in p.read_text()}  # fmt: skip
    run_by_the_guide_test = {f"guides/{g}" for g in GUIDES}
    assert pages - run_by_the_guide_test == set(OTHER_PAGES)


@pytest.mark.parametrize("page", OTHER_PAGES)
def test_the_python_of_a_page_runs(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace = OTHER_PAGES[page](tmp_path)
    for lang, _, body in FENCE.findall((ROOT / "docs" / f"{page}.md").read_text()):
        if lang == "python":
            exec(compile(body, f"docs/{page}.md", "exec"), namespace)
