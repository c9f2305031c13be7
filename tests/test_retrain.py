"""scripts/retrain.py: a found architecture retrained, tested, saved, and loaded back in one line."""

from __future__ import annotations

import json
import re

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_train import train

from conftest import run_experiment, run_script
from nasrl.env.evaluators.child_trainer import accuracy_of
from nasrl.env.evaluators.data import load_dataset
from nasrl.scripts.retraining import RetrainError, load_model, resolve_architecture


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search")
    train(tmp / "run", "search.budget=2", "seed=1", cwd=tmp)
    return tmp / "run"


def retrain(tmp_path, *overrides: str):
    result = run_script("retrain.py", f"hydra.run.dir={tmp_path / 'out'}", "retrain.epochs=1", *overrides, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp_path / "out", result.stdout


@pytest.mark.slow
def test_retraining_best_json_writes_the_files_and_the_model_reproduces_its_accuracy(tmp_path, search_run) -> None:
    out, stdout = retrain(tmp_path, f"arch={search_run / 'best.json'}")
    result = json.loads((out / "result.json").read_text())
    best = json.loads((search_run / "best.json").read_text())
    assert result["tokens"] == best["tokens"]
    assert {"test_accuracy", "params", "seconds", "architecture", "recipe"} <= set(result)
    assert f"test accuracy: {result['test_accuracy']:.4f}" in stdout

    model = load_model(out / "model.pt")  # the one line a user needs
    data = load_dataset(**result["dataset"])
    assert accuracy_of(model, data.x_test, data.y_test) == result["test_accuracy"]
    assert sum(p.numel() for p in model.parameters()) == result["params"] == best["params"]

    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    assert {"retrain/train_loss", "retrain/test_accuracy"} <= set(acc.Tags()["scalars"])
    assert acc.Scalars("retrain/test_accuracy")[-1].value == pytest.approx(result["test_accuracy"])
    assert (out / "curve.csv").read_text().startswith("epoch,train_loss,test_accuracy")


@pytest.mark.slow
def test_retest_gives_the_reported_accuracy_again_and_one_on_fresh_examples(tmp_path, search_run) -> None:
    out, _ = retrain(tmp_path, f"arch={search_run / 'best.json'}")
    result = json.loads((out / "result.json").read_text())
    printed = run_experiment("retest.py", str(out), "--test-examples", "200", "--test-seed", "3", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    row = printed.stdout.splitlines()[-1].split()
    assert (
        row[0] == str(out) and "(nasrl-retrain reported" not in printed.stdout
    )  # the saved model, the reported accuracy
    assert row[2] == f"{100 * result['test_accuracy']:.1f}%"
    fresh_data = load_dataset(**(result["dataset"] | {"test_examples": 200, "test_seed": 3}))
    fresh = accuracy_of(load_model(out / "model.pt"), fresh_data.x_test, fresh_data.y_test)
    assert row[3] == f"{100 * fresh:.2f}" and "fresh (200)" in printed.stdout
    twice = run_experiment("retest.py", str(out), str(out), "--test-examples", "200", "--test-seed", "3", cwd=tmp_path)
    spread = twice.stdout.splitlines()[-1]  # several runs: their mean and the standard deviation between them
    assert spread.startswith("mean ± std of the 2") and f"{100 * fresh:.2f} ± 0.00%" in spread, twice.stdout
    assert f"{100 * result['test_accuracy']:.2f} ± 0.00%" in spread

    not_a_run = run_experiment("retest.py", str(search_run), cwd=tmp_path)
    assert not_a_run.returncode == 1 and "not a nasrl-retrain run folder (it needs model.pt" in not_a_run.stderr
    seed_42 = run_experiment("retest.py", str(out), "--test-seed", "42", cwd=tmp_path)
    assert seed_42.returncode == 2 and "test_seed must be an integer other than 42" in seed_42.stderr


@pytest.mark.slow
def test_an_architecture_from_a_history_row_or_tokens(tmp_path, search_run) -> None:
    out, _ = retrain(tmp_path, f"arch={search_run / 'history.csv'}:1", "seed=2")
    result = json.loads((out / "result.json").read_text())
    row_tokens = (search_run / "history.csv").read_text().splitlines()[2].split(",")[2]
    assert result["tokens"] == [int(t) for t in row_tokens.split()]
    for given in (result["tokens"], ",".join(map(str, result["tokens"])), f"[{' '.join(map(str, result['tokens']))}]"):
        arch, dataset, _ = resolve_architecture(given)  # tokens: cnn1d on MNIST-1D unless told otherwise
        assert list(arch.tokens) == result["tokens"] and dataset == {"name": "mnist1d"}


@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        ("nowhere/best.json", "does not exist; expected RUN_FOLDER, RUN/best.json, RUN/history.csv:N or tokens"),
        ("[1,2]", "2 tokens end before space 'cnn1d' is complete"),
        ("[9,0,0,0,0]", "token 9 at position 0 ('depth') must be in 0..5"),
        ("[0,0,0,0,0,0,0]", "7 tokens, but space 'cnn1d' ends after 5"),
        ("nowhere/history.csv", "does not exist"),
    ],
)
def test_a_bad_architecture_is_refused_with_what_is_accepted(arch, expected) -> None:
    with pytest.raises(RetrainError, match=re.escape(expected)):
        resolve_architecture(arch)


def test_retrain_refuses_bad_input_in_one_line(tmp_path) -> None:
    for bad, expected in (("arch=[1,2]", "2 tokens end before"), ("retrain.epochs=0", "retrain.epochs must be")):
        args = [bad] if bad.startswith("arch") else ["arch=[0,0,0,0,0]", bad]
        result = run_script("retrain.py", f"hydra.run.dir={tmp_path / 'out'}", *args, cwd=tmp_path)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert expected in result.stderr.strip().splitlines()[-1]
        assert not (tmp_path / "out" / "model.pt").exists()
