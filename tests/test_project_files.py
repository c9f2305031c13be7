"""The files people expect of a project: the version each command prints, the licence, the citation and the
changelog, all naming the version in setup.cfg."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

VERSION = configparser.ConfigParser()
VERSION.read(ROOT / "setup.cfg")
VERSION = VERSION["metadata"]["version"]
COMMANDS = ["nasrl-train", "nasrl-benchmark", "nasrl-retrain", "nasrl-data"]


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_prints_the_package_version(command: str) -> None:
    script = Path(sys.executable).parent / command
    if not script.exists():
        pytest.skip(f"{command} is not installed in this environment")
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{command} {VERSION}"


def test_the_licence_is_mit_and_setup_cfg_says_so() -> None:
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "license = MIT" in (ROOT / "setup.cfg").read_text()


def test_the_citation_file_names_this_version() -> None:
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0"
    assert citation["version"] == VERSION
    assert citation["title"] and citation["authors"] and citation["license"] == "MIT"


def test_the_changelog_has_a_section_for_this_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(VERSION)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, flags=re.M), VERSION
