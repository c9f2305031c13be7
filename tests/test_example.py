"""examples/reinforce_minimal.py runs as a user would run it: it searches, reports, and a seed reproduces it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

EXAMPLE = ROOT / "examples" / "reinforce_minimal.py"


def run_example(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The example in a fresh process (HOME and NASRL_DATA are the test session's scratch, see conftest)."""
    return subprocess.run([sys.executable, str(EXAMPLE), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_example_searches_and_a_seed_reproduces_the_run(tmp_path: Path) -> None:
    args = ("--episodes", "6", "--batch-size", "3", "--seed", "3")  # two controller updates
    first = run_example(tmp_path, *args)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    episodes = [line for line in lines if line.startswith("episode")]
    assert [int(line.split()[1]) for line in episodes] == [1, 2, 3, 4, 5, 6], first.stdout
    sampled = set()
    for line in episodes:  # a reward and a decoded architecture on every line
        match = re.fullmatch(r"episode +\d+  reward [01]\.\d{4}  (0:\[units=\d+ activation=\w+\]\(in\).*)", line)
        assert match, line
        sampled.add(match.group(1))
    best = re.fullmatch(r"best architecture: (0:\[.+)  val_accuracy ([01]\.\d{4})", lines[-1])
    assert best, first.stdout
    assert float(best.group(2)) > 0.5, lines[-1]  # chance is 0.1 on the 10 digits
    assert best.group(1) in sampled

    second = run_example(tmp_path, *args)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
