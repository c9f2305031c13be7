"""Faults and bad input: one-line errors before any training, failures recorded, kills survived."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_script
from nasrl.controller.runfolder import atomic_write
from nasrl.controller.search import SearchError
from nasrl.env import ChildNetEnv, ChildTrainer, Evaluator, load_space

SYNTH = ["env=synthetic", "search.progress=false"]


def refused(tmp_path: Path, *overrides: str) -> str:
    """Run nasrl-train, expect exit status 1 with one line ``error: ...``; return it."""
    result = run_script("train.py", f"hydra.run.dir={tmp_path / 'run'}", *overrides, cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert not (tmp_path / "run" / "history.csv").exists()  # stopped before any episode
    return lines[0]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["controller=lstmm"], "Could not find 'controller/lstmm'"),
        (["search.budget=0"], "search.budget must be a positive integer, got 0"),
        (["controller.lr=-1"], "controller lr must be positive, got -1"),
        (["search.budget=3", "controller.batch_size=5"], "controller.batch_size=5 is larger than search.budget=3"),
        (["env.space=cnn3d"], "unknown search space 'cnn3d'"),
        (["controller._target_=nowhere.Policy"], "nowhere.Policy"),
        (["env._target_=gymnasium.make", "+env.id=nasrl/Nope-v0"], "Nope"),
        (["search.workers=0"], "search.workers must be a positive integer, got 0"),
        (["search.backend=slurm"], "search.backend must be one of ['local', 'ray'], got 'slurm'"),
        # wrong types and unknown keys, found by the typed configs while Hydra composes
        (["controller.batch_size=2.5"], "controller.batch_size must be an integer, got '2.5'"),
        (["controller.lr=abc"], "controller.lr must be a float, got 'abc'"),
        (["env=mnist1d", "env.evaluator.epochs=true"], "env.evaluator.epochs must be an integer, got 'true'"),
        (["search.budjet=5"], "search.budjet: unknown setting; the settings there are ['budget', 'max_episodes'"),
        (["controller=evolution", "controller.batch_size=2.5"], "controller.batch_size must be an integer"),
        (["space=mlp"], "space: unknown setting; the settings there are ['controller', 'env', 'seed'"),
        (["env.evaluator=foo"], "env.evaluator must be a mapping with a _target_"),  # its field is Any, to be replaced
    ],
)
def test_bad_settings_stop_before_training_with_one_line(tmp_path, overrides, expected) -> None:
    err = refused(tmp_path, *SYNTH, *overrides)
    assert expected in err, err[-2000:]


def test_the_console_script_refuses_an_unknown_key_in_one_line_on_stderr(tmp_path) -> None:
    nasrl_train = Path(sys.executable).parent / "nasrl-train"
    result = subprocess.run([str(nasrl_train), "search.budjet=5"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: search.budjet: unknown setting; the settings there are ['budget', 'max_episodes', "
        "'max_consecutive_failures', 'max_minutes', 'progress', 'workers', 'backend', 'max_retries', 'ray', 'mode', "
        "'completion_order']"
    ]
    assert not list(tmp_path.iterdir())  # nothing ran: not even a run folder


def test_a_malformed_space_file_is_refused_naming_the_file(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("network: cnn1d\ndepth: 2\nlayer:\n  - {name: filters, choices: []}\n")
    err = refused(tmp_path, *SYNTH, f"env.space={bad}")
    assert str(bad) in err and "'layer[0].choices'" in err


def test_a_missing_data_folder_is_refused_before_training(tmp_path) -> None:
    err = refused(tmp_path, "env=mnist", f"env.evaluator.dataset.root={tmp_path}", "search.progress=false")
    assert "train-images-idx3-ubyte" in err and str(tmp_path / "MNIST" / "raw") in err


def small_run(tmp_path: Path, name: str, *overrides: str) -> Path:
    run = tmp_path / name
    result = run_script("train.py", f"hydra.run.dir={run}", *SYNTH, *overrides, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    return run


def test_resume_refuses_corrupt_and_truncated_checkpoints(tmp_path) -> None:
    run = small_run(tmp_path, "run", "search.budget=3")
    checkpoint = run / "checkpoint.pt"
    data = checkpoint.read_bytes()
    for broken in (data[: len(data) // 2], b"garbage" * 10):
        checkpoint.write_bytes(broken)
        result = run_script("train.py", f"resume={run}", "search.budget=6", cwd=tmp_path)
        assert result.returncode != 0 and "corrupt or truncated" in result.stderr, result.stderr[-1500:]
    assert len(list(csv.DictReader(open(run / "history.csv")))) == 3  # nothing restarted or lost


def test_resume_refuses_a_checkpoint_from_another_search_space(tmp_path) -> None:
    run = small_run(tmp_path, "run", "search.budget=3")
    config = run / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("space: cnn1d", "space: mlp"))
    result = run_script("train.py", f"resume={run}", "search.budget=6", cwd=tmp_path)
    assert result.returncode != 0 and "a different search space?" in result.stderr, result.stderr[-1500:]


def test_resume_refuses_changed_settings_other_than_search(tmp_path) -> None:
    run = small_run(tmp_path, "run", "search.budget=3")
    result = run_script("train.py", f"resume={run}", "controller.lr=0.1", cwd=tmp_path)
    assert result.returncode != 0 and "only search.* settings and env.cache can change" in result.stderr


def test_exploding_weights_are_a_recorded_failure() -> None:
    # one step with an infinite learning rate: the loss was finite when computed, the weights are not after
    trainer = ChildTrainer("digits", max_steps=1, optimizer="sgd", lr=float("inf"), schedule="constant")
    result = trainer.evaluate(load_space("mlp").decode([0, 0, 0]), seed=0)
    assert result.failed and "weights became non-finite" in result.reason


def test_many_failures_in_a_row_stop_the_search_naming_the_reasons(tmp_path) -> None:
    from nasrl.controller.policy import TokenSpec
    from nasrl.controller.random_search import RandomPolicy
    from nasrl.controller.search import run_search

    class Broken(Evaluator):
        def fingerprint(self) -> dict:
            return {"evaluator": "Broken"}

        def evaluate(self, arch, seed):
            raise RuntimeError(f"broken child {arch.tokens[0]}")

    env = ChildNetEnv(space="mlp", evaluator=Broken())
    with pytest.raises(SearchError, match=r"5 children failed in a row.*broken child"):
        run_search(
            env,
            RandomPolicy(TokenSpec.from_env(env)),
            budget=50,
            max_episodes=50,
            run_dir=tmp_path,
            max_consecutive_failures=5,
        )
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert len(rows) == 5 and all(r["failed"] == "1" and "broken child" in r["reason"] for r in rows)


def history(run: Path) -> list[dict]:
    with open(run / "history.csv") as fh:
        return [{k: v for k, v in row.items() if k not in ("seconds", "cached")} for row in csv.DictReader(fh)]


# Forks nasrl-train's main() on request (one JSON list of overrides a line) from an interpreter that imported it
# once and ran nothing else (no torch thread pool to inherit): each fork is a real process that SIGKILL ends,
# without paying seconds of imports per process. Prints the pid of each fork, then its wait status once it ended.
FORK_SERVER = """
import json, os, sys
from nasrl.scripts import train
# imported on first use by every search: once here, not in each fork
import matplotlib.pyplot, torch.utils.tensorboard, nasrl.controller.pareto, nasrl.env.evaluators.cost
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        sys.argv = ["nasrl-train", *json.loads(line)]
        try:
            train.main()
        finally:
            os._exit(0)
    print(pid, flush=True)
    print(os.waitpid(pid, 0)[1], flush=True)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_sigkill_at_any_moment_leaves_files_that_resume_to_the_same_result(tmp_path) -> None:
    common = ["search.budget=60", "controller.batch_size=3", "seed=2"]
    run = tmp_path / "run"

    def rows() -> int:
        return (run / "history.csv").read_bytes().count(b"\n") - 1 if (run / "history.csv").exists() else 0

    server = subprocess.Popen([sys.executable, "-c", FORK_SERVER], cwd=tmp_path, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    assert server.stdin is not None and server.stdout is not None
    try:
        for extra in (0.0, 0.004, 0.008):  # kill at varied moments of the write cycle
            resume = [f"resume={run}"] if (run / "checkpoint.pt").exists() else []
            server.stdin.write(json.dumps([f"hydra.run.dir={run}", *SYNTH, *common, *resume]) + "\n")
            server.stdin.flush()
            pid = int(server.stdout.readline() or "-1")
            assert pid > 0, "the fork server ended (its error is in the captured stderr)"
            # wait for progress past at least one checkpoint (a round is 3 episodes): start-up takes a while on
            # a busy machine, so a fixed delay could kill every attempt before the search began
            start_rows, deadline = rows(), time.monotonic() + 120
            while rows() <= start_rows + 3 and alive(pid) and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(extra)
            with contextlib.suppress(ProcessLookupError):  # it ended already: its status says so
                os.kill(pid, signal.SIGKILL)
            status = int(server.stdout.readline())
            killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
            assert killed, "the search ended before it could be killed"
    finally:
        with contextlib.suppress(ProcessLookupError):  # the server and a fork still running, if the test failed
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    assert (run / "checkpoint.pt").exists() and rows() < 60
    resume = [f"resume={run}"]
    result = run_script("train.py", f"hydra.run.dir={run}", *resume, *SYNTH, *common, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    full = small_run(tmp_path, "full", *common)
    assert history(run) == history(full)


def test_an_interrupt_during_a_file_write_is_raised_once_the_file_is_complete(tmp_path) -> None:
    # Ctrl-C inside torch.save used to surface as torch's own RuntimeError from its half-written zip
    # (a stack trace and exit 1 instead of the resume hint); now the write finishes first.
    def write(fh) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)  # an interrupt that is not held lands here
        fh.write(b"complete")

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "file", write)
    assert (tmp_path / "file").read_bytes() == b"complete"
    assert [p.name for p in tmp_path.iterdir()] == ["file"]  # no temporary file left behind
