"""An evaluator that tests can hold at a known moment: signal tests wait on its files, never on delays.

Each child first writes ``$NASRL_TEST_GATE/started-N`` (N counts children from 0), then, while the file
``$NASRL_TEST_GATE/hold-N`` exists, waits until it is removed; then it scores like TokenMatchEvaluator. A
test creates ``hold-N``, waits for ``started-N`` to appear and knows the search is training child N.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from nasrl.env import EvalResult, TokenMatchEvaluator
from nasrl.env.spaces.space import Architecture


class GatedEvaluator(TokenMatchEvaluator):
    def evaluate(self, arch: Architecture, seed: int) -> EvalResult:
        gate = Path(os.environ["NASRL_TEST_GATE"])
        number = len(list(gate.glob("started-*")))
        (gate / f"started-{number}").touch()
        while (gate / f"hold-{number}").exists():
            time.sleep(0.01)  # polling the file the test removes; the test never waits on a delay
        return super().evaluate(arch, seed)


def wait_for(path: Path, process, timeout: float = 120) -> None:
    """Wait until ``path`` exists (the event), failing early if ``process`` ended first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the search ended before {path.name}: {process.communicate()}"
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.01)
