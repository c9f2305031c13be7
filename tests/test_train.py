"""scripts/train.py end to end, as a user runs it: run folder files, TensorBoard tags, determinism, resume."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import ROOT, run_script

FAST_CHILD = ["env.evaluator.max_steps=10", "env.evaluator.batch_size=64", "search.progress=false"]

# The documented TensorBoard interface (README, "TensorBoard tags").
SCALAR_TAGS = {
    "search/reward",
    "search/best_reward",
    "search/val_accuracy",
    "search/distinct_architectures",
    "search/archs_per_hour",
    "child/params",
    "child/train_seconds",
    "controller/baseline",
    "controller/advantage",
    "controller/policy_loss",
    "controller/entropy",
    "controller/grad_norm",
}


def train(run_dir: Path, *overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    result = run_script("train.py", f"hydra.run.dir={run_dir}", *FAST_CHILD, *overrides, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def history(run_dir: Path, drop=("seconds", "cached")) -> list[dict]:
    """history.csv rows without the columns of cost: wall-clock seconds, which no two runs share, and
    cached (a resumed round reads what the interrupted one trained from the cache)."""
    with open(run_dir / "history.csv") as fh:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(fh)]


@pytest.mark.slow
def test_a_small_search_writes_the_run_folder_and_documented_tags(tmp_path) -> None:
    run = tmp_path / "run"
    result = train(run, "search.budget=4", "controller.batch_size=2", cwd=tmp_path)
    assert "best architecture:" in result.stdout and f"run folder: {run}" in result.stdout
    for name in ["history.csv", "best.json", "checkpoint.pt", "cache.sqlite", ".hydra/config.yaml"]:
        assert (run / name).exists(), name
    rows = history(run, drop=())
    assert len(rows) >= 4 and len({r["tokens"] for r in rows}) == 4
    assert set(rows[0]) >= {
        "index",
        "episode",
        "tokens",
        "architecture",
        "reward",
        "val_accuracy",
        "params",
        "seconds",
        "reused",
    }
    best = json.loads((run / "best.json").read_text())
    assert best["reward"] == max(float(r["reward"]) for r in rows)
    assert {"architecture", "tokens", "val_accuracy", "params"} <= set(best)

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    tags = acc.Tags()
    assert SCALAR_TAGS <= set(tags["scalars"]), SCALAR_TAGS - set(tags["scalars"])
    assert any(t.startswith("policy/filters/") for t in tags["scalars"])
    assert any(t.startswith("policy/skip/") for t in tags["scalars"])
    assert "search/best_architecture/text_summary" in tags["tensors"]
    steps = [e.step for e in acc.Scalars("search/reward")]
    assert steps == list(range(1, len(rows) + 1))  # one global step: architectures evaluated
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")


@pytest.mark.slow
def test_two_runs_with_one_seed_give_identical_history(tmp_path) -> None:
    train(tmp_path / "a", "search.budget=4", "seed=5", cwd=tmp_path)
    train(tmp_path / "b", "search.budget=4", "seed=5", cwd=tmp_path)
    train(tmp_path / "c", "search.budget=4", "seed=6", cwd=tmp_path)
    assert history(tmp_path / "a") == history(tmp_path / "b")
    assert history(tmp_path / "a") != history(tmp_path / "c")


@pytest.mark.slow
def test_a_run_stopped_after_two_updates_and_resumed_matches_an_uninterrupted_one(tmp_path) -> None:
    common = ["controller.batch_size=2", "seed=3"]
    train(tmp_path / "full", "search.budget=8", *common, cwd=tmp_path)
    train(tmp_path / "part", "search.budget=4", *common, cwd=tmp_path)  # stops after two updates
    config_before = (tmp_path / "part" / ".hydra" / "config.yaml").read_text()
    train(tmp_path / "part", f"resume={tmp_path / 'part'}", "search.budget=8", cwd=tmp_path)
    assert history(tmp_path / "part") == history(tmp_path / "full")
    assert (tmp_path / "part" / ".hydra" / "config.yaml").read_text() == config_before
    rows = history(tmp_path / "part", drop=())
    trained = [r["tokens"] for r in rows if r["reused"] == "0"]
    assert len(trained) == len(set(trained)) == 8  # nothing trained twice


@pytest.mark.slow
def test_sigint_during_a_search_keeps_everything_and_resume_matches(tmp_path) -> None:
    for steps in (60, 300):  # children slow enough that the search is still running when the signal comes
        common = ["controller.batch_size=2", "seed=4", f"env.evaluator.max_steps={steps}"]
        run = tmp_path / f"run{steps}"
        command = [sys.executable, str(ROOT / "scripts" / "train.py"), f"hydra.run.dir={run}", *FAST_CHILD]
        proc = subprocess.Popen(
            [*command, "search.budget=10", *common],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.time() + 120
        while time.time() < deadline:  # wait for two updates (4 episodes with batch_size=2)
            if (run / "history.csv").exists() and len((run / "history.csv").read_text().splitlines()) > 5:
                break
            time.sleep(0.05)
        if proc.poll() is None:
            break
        proc.communicate()  # finished before the signal could be sent: try again with slower children
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert f"resume with: python scripts/train.py resume={run}" in err
    done = len(history(run))
    assert 4 <= done < 10
    train(run, f"resume={run}", "search.budget=10", *common, cwd=tmp_path)
    train(tmp_path / "full", "search.budget=10", *common, cwd=tmp_path)
    assert history(run) == history(tmp_path / "full")


def test_resume_refuses_a_folder_that_is_not_a_run(tmp_path) -> None:
    result = run_script("train.py", f"resume={tmp_path}", *FAST_CHILD, cwd=tmp_path)
    assert result.returncode != 0
    assert "not a nasrl run folder" in result.stderr


def test_a_multirun_sweep_gives_one_run_folder_per_job(tmp_path) -> None:
    result = run_script(
        "train.py",
        "-m",
        "env=synthetic",
        "search.budget=3",
        "search.progress=false",
        "seed=0,1",
        "controller=lstm,random",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for job in ("0", "1", "2", "3"):
        assert (tmp_path / "sweep" / job / "history.csv").exists()
        assert (tmp_path / "sweep" / job / ".hydra" / "config.yaml").exists()
    assert history(tmp_path / "sweep" / "0") != history(tmp_path / "sweep" / "1")
    targets = {(tmp_path / "sweep" / job / ".hydra" / "config.yaml").read_text().split("_target_: ")[1].split()[0]
               for job in ("0", "1", "2", "3")}  # fmt: skip
    assert targets == {"controller.lstm.LSTMPolicy", "controller.random_search.RandomPolicy"}
