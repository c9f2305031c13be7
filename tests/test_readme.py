"""Every nasrl-train / nasrl-benchmark / nasrl-retrain command in the README composes: its config groups,
keys and value types are accepted (a dry run through Hydra's compose API, what `--cfg job` prints)."""

from __future__ import annotations

import re
import shlex

import pytest
from hydra import compose, initialize_config_module

from conftest import ROOT
from nasrl.scripts.app import register_configs

APPS = {"nasrl-train": "config", "nasrl-benchmark": "benchmark", "nasrl-retrain": "retrain"}
SHELL_VARIABLES = {"$e": "nasrl.controller.evolution.EvolutionPolicy", "$HOME": "/home/user"}


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                part = part.split(" # ")[0].strip().removeprefix("PYTHONPATH=. ")
                if part.split(" ", 1)[0] in APPS:
                    commands.append(part)
    return commands


COMMANDS = readme_commands()


def test_the_readme_shows_each_command() -> None:
    assert {c.split()[0] for c in COMMANDS} == set(APPS), COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_a_readme_command_composes(command: str) -> None:
    for name, value in SHELL_VARIABLES.items():
        command = command.replace(name, value)
    app, *args = shlex.split(command)
    if "hydra/launcher" in command:
        pytest.skip("needs a Hydra launcher plugin that is not installed here")
    sweep = "-m" in args
    overrides = [a for a in args if a not in ("-m", "--cfg", "job")]
    if sweep:  # a sweep's first job
        overrides = [o if "," not in o or "[" in o else o.split(",")[0] for o in overrides]
    register_configs()
    with initialize_config_module("nasrl.conf", version_base="1.3"):
        cfg = compose(APPS[app], overrides=overrides)
    assert cfg is not None
