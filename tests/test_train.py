"""scripts/train.py end to end, as a user runs it: run folder files, TensorBoard tags, determinism, resume."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from gated import wait_for
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import ROOT, run_script

FAST_CHILD = ["env.evaluator.max_steps=10", "env.evaluator.batch_size=64", "search.progress=false"]

# The documented TensorBoard interface (docs/guides/tensorboard.md).
SCALAR_TAGS = {
    "search/reward",
    "search/best_reward",
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


def train_synthetic(run_dir: Path, *overrides: str) -> None:
    """A search whose reward needs no training (env=synthetic), in ``run_dir``'s parent folder."""
    result = run_script("train.py", f"hydra.run.dir={run_dir}", "search.progress=false", *overrides, cwd=run_dir.parent)
    assert result.returncode == 0, result.stderr[-3000:]


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
    assert "search/val_accuracy" not in tags["scalars"]  # the reward itself, under the identity transform
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


# a new _target_ gets none of the settings of the node it replaces (docs/guides/configuration.md, "A class of your own")
GATED = [
    "env=synthetic",
    "env.evaluator._target_=gated.GatedEvaluator",
    "env.evaluator.target=[2,3,1,0,0,1,4,1,1,0,0,1,5,2,0,3]",
    "search.progress=false",
]


def start_gated_search(run: Path, gate: Path, *overrides: str, hold: int) -> subprocess.Popen:
    """nasrl-train in a real process (signals need one) with SIGINT ignored, as a shell's background job
    starts it; its child number ``hold`` waits until the test lets it go (``tests/gated.py``)."""
    gate.mkdir()
    (gate / f"hold-{hold}").touch()
    command = [str(Path(sys.executable).parent / "nasrl-train"), f"hydra.run.dir={run}", *GATED, *overrides]
    env = {**os.environ, "NASRL_TEST_GATE": str(gate), "PYTHONPATH": str(ROOT / "tests")}
    ignore_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731
    return subprocess.Popen(command, cwd=run.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=ignore_sigint)  # fmt: skip


def gated_run(run: Path, *overrides: str) -> None:
    """The same search, uninterrupted (nothing held)."""
    run.parent.joinpath(f"{run.name}-gate").mkdir(exist_ok=True)
    env = {"NASRL_TEST_GATE": str(run.parent / f"{run.name}-gate"), "PYTHONPATH": str(ROOT / "tests")}
    result = run_script("train.py", f"hydra.run.dir={run}", *GATED, *overrides, cwd=run.parent, env=env)
    assert result.returncode == 0, result.stderr[-3000:]


SIGINT_SEARCH = ["controller.batch_size=2", "seed=4", "search.budget=10"]


@pytest.fixture(scope="module")
def uninterrupted_sigint_search(tmp_path_factory) -> list[dict]:
    """history.csv of the search that the SIGINT tests interrupt, run once without interruption for both."""
    run = tmp_path_factory.mktemp("uninterrupted") / "full"
    gated_run(run, *SIGINT_SEARCH)
    return history(run)


@pytest.mark.parametrize("hold", [0, 5])  # before the first child finishes; mid-search, after two updates
def test_sigint_keeps_everything_and_the_printed_command_resumes_to_the_same_result(
    tmp_path, hold, uninterrupted_sigint_search
) -> None:
    common = SIGINT_SEARCH
    run, gate = tmp_path / "run", tmp_path / "gate"
    proc = start_gated_search(run, gate, *common, hold=hold)
    wait_for(gate / f"started-{hold}", proc)  # the search is training child number `hold`
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    command = f"nasrl-train resume={run}"
    assert f"resume with: {command}" in err
    assert len(history(run)) == (hold // 2) * 2  # the finished rounds of 2, nothing of the one in flight
    (gate / f"hold-{hold}").unlink()
    gated_run(run, *command.split()[1:])
    assert history(run) == uninterrupted_sigint_search
    assert (run / "checkpoint.pt").exists()


def test_sigterm_stops_as_cleanly_as_ctrl_c(tmp_path) -> None:
    run, gate = tmp_path / "run", tmp_path / "gate"
    proc = start_gated_search(run, gate, "search.budget=4", hold=2)
    wait_for(gate / "started-2", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and f"resume with: nasrl-train resume={run}" in err, err[-2000:]
    assert len(history(run)) == 2  # LSTM batch 1: two rounds finished


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
    # each job's folder: its number, then what ran (the last override varies fastest)
    jobs = ("0-synthetic-lstm-seed0", "1-synthetic-random-seed0", "2-synthetic-lstm-seed1", "3-synthetic-random-seed1")
    for job in jobs:
        assert (tmp_path / "sweep" / job / "history.csv").exists()
        assert (tmp_path / "sweep" / job / ".hydra" / "config.yaml").exists()
    assert history(tmp_path / "sweep" / jobs[0]) != history(tmp_path / "sweep" / jobs[1])
    targets = {(tmp_path / "sweep" / job / ".hydra" / "config.yaml").read_text().split("_target_: ")[1].split()[0]
               for job in jobs}  # fmt: skip
    assert targets == {"nasrl.controller.lstm.LSTMPolicy", "nasrl.controller.random_search.RandomPolicy"}


def test_one_seed_gives_one_history_through_every_entry_point(tmp_path) -> None:
    """nasrl-train, nasrl-benchmark's searches and run_search called directly share one loop path."""
    from test_configs import composed

    from nasrl.controller.build import build_env, build_policy, seed_everything
    from nasrl.controller.search import run_search
    from nasrl.scripts.benchmark import search_once

    sequential = {"workers": 1, "mode": "rounds", "durations": "flops"}  # one child after another, no clock

    overrides = ["env=synthetic", "controller.batch_size=2", "seed=7"]
    train_synthetic(tmp_path / "cli", *overrides, "search.budget=12")
    cli = history(tmp_path / "cli")

    cfg = composed(*overrides)
    seed_everything(7)
    env = build_env(cfg.env)
    state = run_search(env, build_policy(cfg.controller, env, 7), budget=12, max_episodes=800, seed=7)
    direct = [{k: str(v) for k, v in row.items() if k in cli[0]} for row in state.history]
    assert direct == cli

    env_cfg, controller_cfg = (OmegaConf.to_container(c, resolve=True) for c in (cfg.env, cfg.controller))
    _, _, rewards, _, _ = search_once(("lstm", controller_cfg, env_cfg, 7, 12, 800, sequential))
    assert rewards == [float(r["reward"]) for r in cli if r["reused"] == "0"]


def test_a_run_written_before_the_nasrl_package_name_still_resumes(tmp_path) -> None:
    common = ["env=synthetic", "seed=2", "controller.batch_size=2"]
    train_synthetic(tmp_path / "full", *common, "search.budget=6")
    old = tmp_path / "old"
    train_synthetic(old, *common, "search.budget=4")
    config = old / ".hydra" / "config.yaml"  # as the code before commit f308264's successor wrote it
    text = config.read_text().replace("_target_: nasrl.", "_target_: ")
    text = text.replace("  replay_weight: 1.0\n", "  replay_weight: 1.0\n  reward_transform: identity\n")
    config.write_text(text + "cache:\n  path: null\n")
    assert "_target_: env.childnet.ChildNetEnv" in config.read_text()
    train_synthetic(old, f"resume={old}", "search.budget=6")
    assert history(old) == history(tmp_path / "full")
