"""Every nasrl-train / nasrl-benchmark / nasrl-retrain command in the README and in the documentation site
(``docs/**/*.md``) composes: its config groups, keys and value types are accepted (a dry run through Hydra's
compose API, what `--cfg job` prints, with a ``_target_`` of the command line replaced as the command does).
Every ``nasrl-data`` command names a data set that the command knows."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from conftest import ROOT
from nasrl.scripts.app import register_configs, retarget
from nasrl.scripts.data import DATASETS

APPS = {"nasrl-train": "config", "nasrl-benchmark": "benchmark", "nasrl-retrain": "retrain"}
SHELL_VARIABLES = {
    "$e": "nasrl.controller.evolution.EvolutionPolicy",
    "$HOME": "/home/user",
    "$PWD": "/home/user/work",
    "$NASRL_DATA": "/home/user/.cache/nasrl",
    "$T": "/data/nb201/cifar10.csv",
}
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# the data sets of nasrl-data (the issue's): checked against the command's own list where it is installed


def page_commands(path: Path, apps: set[str]) -> list[str]:
    """The commands of ``apps`` in the ``bash`` blocks of ``path``, one per line or per ``&&`` part."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = part.split(" # ")[0].strip().split(" ")
                while words and "=" in words[0] and not words[0].startswith("-"):  # PYTHONPATH=. and the like
                    words = words[1:]
                if words and words[0] in apps:
                    commands.append(" ".join(words))
    return commands


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


COMMANDS = [(_name(p), c) for p in PAGES for c in page_commands(p, set(APPS))]
DATA_COMMANDS = [(_name(p), c) for p in PAGES for c in page_commands(p, {"nasrl-data"})]


def test_the_readme_shows_each_command() -> None:
    readme = [c for page, c in COMMANDS if page == "README.md"]
    assert {c.split()[0] for c in readme} == set(APPS), readme
    assert any(page.startswith("docs/") for page, _ in COMMANDS)


@pytest.mark.parametrize(("page", "command"), COMMANDS)
def test_a_documented_command_composes(page: str, command: str) -> None:
    for name, value in sorted(SHELL_VARIABLES.items(), key=lambda item: -len(item[0])):
        command = command.replace(name, value)
    # the results pages' placeholders: S for a seed (0, 1, 2), one capital letter for a number (beta=B)
    command = re.sub(r"(seed=)S(\+\d+)?\b", r"\g<1>0", command)
    command = re.sub(r"(=)[A-Z](\+\d+)?\b(?![./])", r"\g<1>1", command)
    app, *args = shlex.split(command)
    if "hydra/launcher" in command:
        pytest.skip("needs a Hydra launcher plugin that is not installed here")
    if "hydra.searchpath" in command or "my_pkg." in command or "my_families." in command:
        pytest.skip("uses files a guide writes: tests/test_guides.py runs it with them")
    sweep = "-m" in args
    overrides = [a for a in args if a not in ("-m", "--cfg", "job", "--version")]
    if sweep:  # a sweep's first job
        overrides = [o if "," not in o or "[" in o else o.split(",")[0] for o in overrides]
    register_configs()
    with initialize_config_module("nasrl.conf", version_base="1.3"):
        cfg = compose(APPS[app], overrides=retarget(overrides))
    assert cfg is not None


@pytest.mark.parametrize(("page", "command"), DATA_COMMANDS)
def test_a_documented_data_command_names_a_data_set(page: str, command: str) -> None:
    words = shlex.split(command)[1:]
    names = [w for i, w in enumerate(words) if not w.startswith("-") and (i == 0 or not words[i - 1].startswith("--"))]
    known = set(DATASETS)
    assert set(names) <= known, f"{page}: {command} names {names}; nasrl-data knows {sorted(known)}"
