"""Files from others are data, not code: checkpoints and model files are read with torch.load(weights_only=True);
a file whose pickle would run code is refused in one line, and old files are read only behind NASRL_TRUST_PICKLES."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import history, train_synthetic

from conftest import run_experiment, run_script
from nasrl.controller.runfolder import CHECKPOINT_VERSION, SearchError, UnsafeFileError, check_plain, load_plain
from nasrl.scripts.retraining import load_model

SEARCH = ["env=synthetic", "seed=2", "controller.batch_size=2"]
REFUSED = ["needs Python's full unpickler", "loading it runs any code its pickle holds", "NASRL_TRUST_PICKLES=1"]


class RunsCode:
    """What a crafted file holds: unpickling it runs a shell command (here: one that creates ``marker``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def craft(path: Path, marker: Path, **fields) -> None:
    torch.save({**fields, "payload": RunsCode(marker)}, path)


def assert_refused_in_one_line(stderr: str, path: Path) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert lines[0].startswith("error: ") and str(path) in lines[0] and "posix.system" in lines[0]
    assert all(part in lines[0] for part in REFUSED), lines[0]


@pytest.fixture(scope="module")
def searches(tmp_path_factory):
    """An uninterrupted synthetic search of 6 architectures, and the same search stopped after 4."""
    tmp = tmp_path_factory.mktemp("searches")
    train_synthetic(tmp / "full", *SEARCH, "search.budget=6")
    train_synthetic(tmp / "part", *SEARCH, "search.budget=4")
    return tmp


def copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_a_crafted_checkpoint_is_refused_in_one_line_and_runs_nothing(tmp_path, searches) -> None:
    run = copy_run(searches / "part", tmp_path / "run")
    marker = tmp_path / "MARKER"
    craft(run / "checkpoint.pt", marker, version=CHECKPOINT_VERSION)
    result = run_script("train.py", f"resume={run}", "search.budget=6", cwd=tmp_path)
    assert result.returncode == 1
    assert_refused_in_one_line(result.stderr, run / "checkpoint.pt")
    assert result.stderr.startswith("error: cannot resume: ")
    assert not marker.exists()
    with pytest.raises(UnsafeFileError):  # the result scripts' reader too
        load_plain(run / "checkpoint.pt", "checkpoint")
    assert not marker.exists()


def test_a_crafted_model_file_is_refused_in_one_line_and_runs_nothing(tmp_path) -> None:
    marker = tmp_path / "MARKER"
    craft(tmp_path / "model.pt", marker, format=2)
    with pytest.raises(UnsafeFileError) as refused:
        load_model(tmp_path / "model.pt")
    assert "\n" not in str(refused.value) and all(part in str(refused.value) for part in REFUSED)
    (tmp_path / "result.json").write_text('{"dataset": {"name": "mnist1d"}, "test_accuracy": 0.5, "params": 1}')
    printed = run_experiment("retest.py", str(tmp_path), cwd=tmp_path)  # what reads model.pt besides load_model
    assert printed.returncode == 1
    assert_refused_in_one_line(printed.stderr, tmp_path / "model.pt")
    assert not marker.exists()


def as_version_1(checkpoint: Path) -> None:
    """Rewrite ``checkpoint`` as nasrl wrote it before version 2: the libraries' own random states, numpy's
    with its array (which only the full unpickler reads)."""
    payload = torch.load(checkpoint, weights_only=True)
    version, internal, gauss = payload["rng"]["python"]
    numpy = payload["rng"]["numpy"]
    key = np.asarray(numpy["state"]["key"], dtype=np.uint32)
    payload["rng"]["python"] = (version, tuple(internal), gauss)
    payload["rng"]["numpy"] = ("MT19937", key, numpy["state"]["pos"], numpy["has_gauss"], numpy["gauss"])
    payload["version"] = 1
    torch.save(payload, checkpoint)


def test_a_version_1_checkpoint_resumes_only_with_the_opt_in_and_then_exactly(tmp_path, searches) -> None:
    run = copy_run(searches / "part", tmp_path / "run")
    as_version_1(run / "checkpoint.pt")
    refused = run_script("train.py", f"resume={run}", "search.budget=6", cwd=tmp_path)
    assert refused.returncode == 1
    assert "numpy" in refused.stderr and all(part in refused.stderr for part in REFUSED)
    assert len(refused.stderr.strip().splitlines()) == 1
    resumed = run_script("train.py", f"resume={run}", "search.budget=6", cwd=tmp_path, env={"NASRL_TRUST_PICKLES": "1"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert history(run) == history(searches / "full")  # resume equals an uninterrupted run
    assert torch.load(run / "checkpoint.pt", weights_only=True)["version"] == CHECKPOINT_VERSION == 2  # rewritten


def test_a_resumed_search_equals_an_uninterrupted_one_through_plain_checkpoints(tmp_path, searches) -> None:
    run = copy_run(searches / "part", tmp_path / "run")
    torch.load(run / "checkpoint.pt", weights_only=True)  # what resume reads: plain data
    train_synthetic(run, f"resume={run}", "search.budget=6")
    assert history(run) == history(searches / "full")


def test_state_that_would_need_the_full_unpickler_is_refused_when_saved_naming_where() -> None:
    with pytest.raises(SearchError, match=r"the checkpoint cannot hold numpy\.ndarray \(at policy\.rng\[1\]\)"):
        check_plain({"policy": {"rng": [1, np.zeros(3)]}, "step": 3}, "the checkpoint")
    check_plain({"weights": torch.zeros(2), "names": ("a", "b"), "seen": {(1, 2): 0.5}, "none": None}, "it")
