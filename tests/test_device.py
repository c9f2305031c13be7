"""The ``device`` setting of everything that trains: refused in one line where it cannot be used, the CPU
results and cache keys of before on the CPU, and (class :class:`TestOnCuda`, marker ``cuda``) training,
mixed precision, retraining and one GPU per worker process where torch sees CUDA."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import re
import time

import numpy as np
import pytest
import torch

from conftest import run_script
from nasrl.conf.schema import LMRecipe, Recipe
from nasrl.env import EvalResult, Evaluator
from nasrl.env.evaluators.child_trainer import ChildTrainer, accuracy_of
from nasrl.env.evaluators.data import Dataset, load_dataset
from nasrl.env.evaluators.device import resolve_device, worker_device
from nasrl.env.evaluators.lm import LanguageModelTrainer
from nasrl.env.evaluators.text import load_corpus
from nasrl.env.runners import local as parallel_module
from nasrl.env.runners import make_runner
from nasrl.env.runners.local import ProcessRunner
from nasrl.env.spaces.sampling import random_tokens
from nasrl.env.spaces.space import Architecture, load_space
from nasrl.scripts.retraining import export_model, load_model, retrain, retrain_language_model, save_model

HAS_CUDA = torch.cuda.is_available()
NO_CUDA = "device='cuda', but this torch"
NOT_A_DEVICE = "is not a device; accepted are ['auto', 'cpu', 'cuda', 'cuda:N']"


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def an_arch(space: str = "mlp", seed: int = 1) -> Architecture:
    search_space = load_space(space)
    return search_space.decode(random_tokens(search_space, np.random.default_rng(seed)))


def write_text(path) -> str:
    """A small word-level corpus (its 5% test split is long enough for a language-model test)."""
    words = "the cat sat on the mat and a dog ate the bone while every cat likes a warm red mat".split()
    path.write_text("".join(" ".join(words[(i + j) % len(words)] for j in range(12)) + "\n" for i in range(400)))
    return str(path)


@pytest.fixture
def no_cuda(monkeypatch) -> None:
    """This machine as one without CUDA, whatever it has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def fake_cuda(monkeypatch) -> None:
    """A machine that says it has CUDA: enough to build (not to run) a trainer with ``device=cuda``, whose
    data go to the GPU only when it first trains."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


# --- refused in one line -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "cuda:-1", "tpu", "", "cpu:0"])
def test_a_string_that_is_not_a_device_is_refused_with_the_accepted_ones(name) -> None:
    with pytest.raises(ValueError, match=re.escape(NOT_A_DEVICE)) as info:
        resolve_device(name)
    assert "\n" not in str(info.value)


def test_cuda_without_cuda_is_refused_by_every_trainer_before_it_reads_data(tmp_path, no_cuda) -> None:
    for name in ("cuda", "cuda:0", "CUDA"):
        with pytest.raises(ValueError, match="sees no CUDA GPU; accepted here are 'auto' and 'cpu'"):
            resolve_device(name)
    missing = {"name": "cifar10", "root": str(tmp_path)}  # a data set that is not there: never read
    with pytest.raises(ValueError, match=NO_CUDA):
        ChildTrainer(missing, device="cuda")
    with pytest.raises(ValueError, match=NO_CUDA):
        LanguageModelTrainer({"path": str(tmp_path / "nowhere.txt")}, device="cuda")
    with pytest.raises(ValueError, match="retrain.device='cuda', but this torch"):
        Recipe(device="cuda")
    with pytest.raises(ValueError, match="lm.device='cuda:1', but this torch"):
        LMRecipe(device="cuda:1")
    with pytest.raises(ValueError, match=re.escape(f"retrain.device='gpu' {NOT_A_DEVICE}")):
        Recipe(device="gpu")
    assert Recipe().device == "auto" and resolve_device("auto") == torch.device("cpu")


def test_the_commands_refuse_cuda_without_cuda_in_one_line(tmp_path, no_cuda) -> None:
    for script, bad, expected in (
        ("train.py", ["env.evaluator.device=cuda", "search.budget=1"], NO_CUDA),
        ("train.py", ["env=lm", "env.evaluator.device=cuda:x"], f"device='cuda:x' {NOT_A_DEVICE}"),
        ("retrain.py", ["arch=[0,0,0,0,0]", "retrain.device=cuda"], "retrain.device='cuda', but this torch"),
    ):
        out = tmp_path / script
        result = run_script(script, f"hydra.run.dir={out}", *bad, cwd=tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert lines[-1].startswith("error: ") and expected in lines[-1]
        assert not (out / "history.csv").exists() and not (out / "model.pt").exists()


def test_ray_gpus_per_child_must_fit_the_device_of_the_children(digits, fake_cuda) -> None:
    # checked before Ray is imported: these need no Ray
    cases = [
        (ChildTrainer(digits), {"gpus_per_child": 1}, "search.ray.gpus_per_child=1, but children train on cpu"),
        (ChildTrainer(digits, device="cuda"), {}, "children train on cuda, but search.ray.gpus_per_child=0"),
        (ChildTrainer(digits), {"gpus_per_child": -1}, "gpus_per_child must be a number >= 0"),
    ]
    for trainer, ray, expected in cases:
        with pytest.raises(ValueError, match=expected):
            make_runner(trainer, backend="ray", ray=ray)


# --- the CPU gives what it gave before -------------------------------------------------------------------


def test_cpu_and_auto_give_the_default_result_and_cache_key(digits, tmp_path, no_cuda) -> None:
    arch = an_arch()
    default = ChildTrainer(digits, max_steps=5)
    expected = default.evaluate(arch, seed=3)
    assert not expected.failed and "device" not in default.fingerprint()
    for settings in ({"device": "cpu"}, {"device": "auto"}, {"device": "cpu", "amp": True}):  # amp: CPU ignores it
        trainer = ChildTrainer(digits, max_steps=5, **settings)
        assert trainer.evaluate(arch, seed=3).val_accuracy == expected.val_accuracy, settings
        assert trainer.fingerprint() == default.fingerprint(), settings
    corpus = load_corpus(write_text(tmp_path / "t.txt"))
    lm = {"hidden_size": 8, "max_steps": 3, "batch_size": 2, "bptt": 5, "val_tokens": 60}
    lm_arch = load_space("rnn_cell_small").decode([0] * 9)
    before = LanguageModelTrainer(corpus, **lm)
    after = LanguageModelTrainer(corpus, **lm, device="auto")
    assert before.evaluate(lm_arch, 2).score == after.evaluate(lm_arch, 2).score
    assert before.fingerprint() == after.fingerprint() and "device" not in after.fingerprint()


def test_a_gpu_names_itself_in_the_cache_key(digits, fake_cuda, tmp_path) -> None:
    cpu = ChildTrainer(digits).fingerprint()
    assert ChildTrainer(digits, device="cuda").fingerprint() == {**cpu, "device": "cuda"}
    assert ChildTrainer(digits, device="auto", amp=True).fingerprint() == {**cpu, "device": "cuda", "amp": True}
    corpus = load_corpus(write_text(tmp_path / "t.txt"))
    assert LanguageModelTrainer(corpus, device="cuda").fingerprint() == {
        **LanguageModelTrainer(corpus).fingerprint(),
        "device": "cuda",
    }


def test_a_pickled_trainer_leaves_its_copy_of_the_data_behind(digits) -> None:
    trainer = ChildTrainer(digits, max_steps=2)
    first = trainer.evaluate(an_arch(), seed=0)
    assert trainer._on_device is not None  # the copy (on the CPU: the data set's own tensors)
    copy = pickle.loads(pickle.dumps(trainer))
    assert copy._on_device is None and copy.device == torch.device("cpu")
    assert copy.evaluate(an_arch(), seed=0).val_accuracy == first.val_accuracy


# --- one GPU per worker process ------------------------------------------------------------------------------


def test_worker_i_takes_gpu_i_mod_the_gpus_unless_one_is_named() -> None:
    cuda = torch.device("cuda")
    assert [worker_device(cuda, i, count=2).index for i in range(5)] == [0, 1, 0, 1, 0]
    assert worker_device(torch.device("cuda:1"), 4, count=2) == torch.device("cuda:1")  # named: every worker
    assert worker_device(torch.device("cpu"), 3, count=2) == torch.device("cpu")


class WorkerReport(Evaluator):
    """Reports the number of the worker process it ran in, that process and its device's GPU index (-1:
    none); sleeps so that a round's jobs spread over the workers. Module level: spawned workers import it."""

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device

    def fingerprint(self) -> dict:
        return {"evaluator": "WorkerReport"}

    def evaluate(self, arch: Architecture, seed: int) -> EvalResult:
        time.sleep(0.5)
        device = self.device
        gpu = -1 if device is None or device.index is None else device.index
        if gpu >= 0:
            torch.ones(1, device=device).sum().item()  # it can really use that GPU
            assert torch.cuda.current_device() == gpu
        worker = parallel_module._worker_index
        metrics = {"worker": float(-1 if worker is None else worker), "pid": float(os.getpid()), "gpu": float(gpu)}
        return EvalResult(1.0, metrics=metrics)


def run_reports(device: torch.device | None, workers: int = 2, jobs: int = 4) -> list[dict[str, float]]:
    runner = ProcessRunner(WorkerReport(device), workers=workers)
    try:
        results = runner.run([(an_arch(seed=i), i) for i in range(jobs)])
    finally:
        runner.close()
    assert not any(r.failed for r in results), [r.reason for r in results]
    return [r.metrics for r in results]


def test_the_worker_initializer_numbers_the_workers_and_gives_each_its_gpu(monkeypatch) -> None:
    # in this process, on a pretend machine with two GPUs (spawning real workers costs seconds of imports:
    # TestOnCuda does it where there are GPUs)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    chosen: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    for name in ("_worker_evaluator", "_worker_index"):
        monkeypatch.setattr(parallel_module, name, None)  # restored after the test
    counter = multiprocessing.get_context("spawn").Value("i", 0)
    threads = torch.get_num_threads()
    try:
        for worker in range(3):
            evaluator = WorkerReport(torch.device("cuda"))
            parallel_module._init_worker(evaluator, threads, counter)
            assert parallel_module._worker_index == worker and evaluator.device == torch.device("cuda", worker % 2)
        assert [d.index for d in chosen] == [0, 1, 0]
        cpu = WorkerReport()
        parallel_module._init_worker(cpu, threads, counter)
        assert parallel_module._worker_index == 3 and cpu.device is None and len(chosen) == 3
    finally:
        torch.set_num_threads(threads)


# --- on a GPU ------------------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="torch sees no CUDA GPU")
class TestOnCuda:
    def test_a_child_trains_on_the_gpu_and_keeps_its_data_there(self, digits) -> None:
        trainer = ChildTrainer(digits, max_steps=30, device="cuda")
        result = trainer.evaluate(an_arch("cnn1d"), seed=0)
        assert not result.failed and result.val_accuracy > 0.2, result  # chance is 0.1
        assert trainer._on_device is not None and all(t.is_cuda for t in trainer._on_device[1])
        assert trainer.fingerprint()["device"] == "cuda"
        assert trainer.evaluate(an_arch("cnn1d"), seed=0).val_accuracy == pytest.approx(result.val_accuracy, abs=0.05)
        assert pickle.loads(pickle.dumps(trainer))._on_device is None  # no GPU tensors in the pickle

    def test_mixed_precision_trains_a_child(self, digits) -> None:
        trainer = ChildTrainer(digits, max_steps=30, device="cuda", amp=True)
        result = trainer.evaluate(an_arch("cnn1d"), seed=0)
        assert not result.failed and result.val_accuracy > 0.2, result
        assert trainer.fingerprint()["amp"] is True

    def test_a_language_model_child_trains_on_the_gpu(self, tmp_path) -> None:
        corpus = load_corpus(write_text(tmp_path / "t.txt"))
        trainer = LanguageModelTrainer(corpus, hidden_size=16, max_steps=20, batch_size=4, bptt=8, device="cuda")
        for cell in ([0] * 9, [1, 2, 0, 1, 0, 3, 1, 2, 0]):
            result = trainer.evaluate(load_space("rnn_cell_small").decode(cell), seed=0)
            assert not result.failed and result.score is not None and result.score > 0, result

    def test_retraining_on_the_gpu_saves_a_model_that_loads_on_the_cpu(self, digits, tmp_path) -> None:
        arch = an_arch("cnn1d")
        result = retrain(arch, digits, Recipe(epochs=2, device="cuda", amp=True), seed=0)
        assert result.device.startswith("cuda") and next(result.model.parameters()).is_cuda
        save_model(tmp_path / "model.pt", result.model, arch, digits)
        saved = torch.load(tmp_path / "model.pt", weights_only=True)
        assert all(not t.is_cuda for t in saved["state_dict"].values())
        model = load_model(tmp_path / "model.pt")
        assert accuracy_of(model, digits.x_test, digits.y_test) == pytest.approx(result.test_accuracy, abs=0.02)
        lines = export_model(tmp_path, result.model, digits)  # a CPU copy of the model on the GPU is exported
        assert "TorchScript" in lines[0] and next(result.model.parameters()).is_cuda
        scripted = torch.jit.load(str(tmp_path / "model_scripted.pt"))
        raw = digits.x_test * digits.std + digits.mean  # the inputs before normalisation
        with torch.no_grad():
            torch.testing.assert_close(scripted(raw), model(digits.x_test), rtol=1e-4, atol=1e-4)

    def test_a_language_model_retrains_on_the_gpu(self, tmp_path) -> None:
        corpus = load_corpus(write_text(tmp_path / "t.txt"))
        recipe = LMRecipe(epochs=1, params=None, hidden_size=16, batch_size=4, bptt=8, device="cuda")
        result = retrain_language_model(load_space("rnn_cell_small").decode([0] * 9), corpus, recipe)
        assert result.device.startswith("cuda") and result.metrics["test_perplexity"] > 1

    def test_each_worker_process_trains_on_gpu_worker_mod_gpus(self) -> None:
        count = torch.cuda.device_count()
        reports = run_reports(torch.device("cuda"))
        number_of = {r["pid"]: r["worker"] for r in reports}  # each process has its own number
        assert len(number_of) == len(set(number_of.values())) and set(number_of.values()) <= {0.0, 1.0}
        for report in reports:
            assert report["gpu"] == report["worker"] % count, report
        assert {r["gpu"] for r in run_reports(torch.device("cuda:0"))} == {0.0}  # a named GPU: all of them

    @pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
    def test_two_workers_train_on_two_gpus(self) -> None:
        reports = run_reports(torch.device("cuda"))
        gpu_of = {r["pid"]: r["gpu"] for r in reports}
        assert len(gpu_of) == 2 and len(set(gpu_of.values())) == 2, reports

    def test_ray_children_ask_for_a_share_of_a_gpu(self, digits) -> None:
        pytest.importorskip("ray")
        runner = make_runner(
            ChildTrainer(digits, max_steps=10, device="cuda"),
            backend="ray",
            ray={"num_cpus": 2, "gpus_per_child": 0.5},
        )
        try:
            results = runner.run([(an_arch("cnn1d", seed=i), i) for i in range(2)])
        finally:
            runner.close()
        assert not any(r.failed for r in results), [r.reason for r in results]
