"""A synthetic evaluator with a known optimum, for tests and checks: no training."""

from __future__ import annotations

from typing import Any

from nasrl.env.evaluators.base import EvalResult, Evaluator
from nasrl.env.spaces.space import Architecture


class TokenMatchEvaluator(Evaluator):
    """A synthetic score with a known optimum, for tests and checks: the fraction of positions whose token
    equals ``target`` (sequences of another length lose the missing positions). No training."""

    def __init__(self, target: list[int] | tuple[int, ...]) -> None:
        self.target = tuple(int(t) for t in target)

    def fingerprint(self) -> dict[str, Any]:
        return {"evaluator": type(self).__name__, "target": list(self.target)}

    def evaluate(self, arch: Architecture, seed: int, **round_options: Any) -> EvalResult:
        hits = sum(a == b for a, b in zip(arch.tokens, self.target))
        return EvalResult(hits / max(len(self.target), len(arch.tokens)))
