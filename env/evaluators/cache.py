"""The evaluation cache: every result paid for, keyed by everything that determines it.

SQLite, so a crash mid-write leaves the file readable (a write is one transaction) and several
processes can share one cache file. The key hashes the search space, the evaluator's fingerprint
(data set, training settings), the tokens and the child seed. A second table keeps measured costs that
are worth not measuring again (latencies, ``env/evaluators/cost.py``), under keys of their own.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from nasrl.env.evaluators.base import EvalResult


def cache_key(space: dict[str, Any], fingerprint: dict[str, Any], tokens: tuple[int, ...], seed: int) -> str:
    blob = json.dumps(
        {"space": space, "evaluator": fingerprint, "tokens": list(tokens), "seed": seed}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class EvaluationCache:
    """A persistent map from cache key to :class:`EvalResult`; ``path=None`` keeps it in memory."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = str(path) if path is not None else ":memory:"
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
        if path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, result TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS costs (key TEXT PRIMARY KEY, costs TEXT NOT NULL)")

    def get(self, key: str) -> EvalResult | None:
        row = self._db.execute("SELECT result FROM results WHERE key = ?", (key,)).fetchone()
        return EvalResult(**json.loads(row[0])) if row else None

    def put(self, key: str, result: EvalResult) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO results (key, result) VALUES (?, ?)", (key, json.dumps(result.to_dict()))
        )

    def get_costs(self, key: str) -> dict[str, float] | None:
        """Costs stored under ``key`` by :meth:`put_costs` (None if none are)."""
        row = self._db.execute("SELECT costs FROM costs WHERE key = ?", (key,)).fetchone()
        return dict(json.loads(row[0])) if row else None

    def put_costs(self, key: str, costs: dict[str, float]) -> None:
        self._db.execute("INSERT OR REPLACE INTO costs (key, costs) VALUES (?, ?)", (key, json.dumps(costs)))

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __getstate__(self) -> dict[str, Any]:  # picklable, for process pools: reopen by path
        return {"path": None if self.path == ":memory:" else self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]
