"""From a found architecture to a trained model: retrain with a full recipe, report test accuracy, save.

This is the only code that reads a data set's test split. The search scores children on a validation
split carved from the training data; retraining trains on train + validation and tests once per epoch
(the curve is for reading, the reported number is the last epoch's: nothing is selected on the test
split). Recurrent cells (``rnn_cell`` runs and the standard ``lstm``, ``gru``, ``rnn_tanh``) are trained
as language models with :class:`LMRecipe`, at the hidden size that gives every cell the same number of
parameters, and report test perplexity (and bits per character at character level).

``load_model(path)`` turns a saved ``model.pt`` back into the ``nn.Module`` with its weights; ``model.pt`` holds
plain data only (``torch.load(path, weights_only=True)`` reads it, and loading it runs no code from the file).
:func:`export_model` writes what needs no nasrl to run: ``model_scripted.pt`` (TorchScript) and ``model.onnx``
(with the ``onnx`` extra), both with the input normalisation inside.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from nasrl.conf.schema import LMRecipe, Recipe, corpus_schema, dataset_schema
from nasrl.controller.runfolder import (
    SearchError,
    UnsafeFileError,
    check_plain,
    load_plain,
    read_best,
    read_config,
    read_history,
)
from nasrl.env.evaluators.child_trainer import accuracy_of, train_model
from nasrl.env.evaluators.data import Dataset
from nasrl.env.evaluators.device import resolve_device
from nasrl.env.evaluators.lm import evaluate_language_model, perplexity_metrics, train_language_model
from nasrl.env.evaluators.text import Corpus
from nasrl.env.spaces.families.rnn_cell import STANDARD_CELLS, standard_cell
from nasrl.env.spaces.networks import build_network, count_parameters
from nasrl.env.spaces.rnn import build_language_model, hidden_size_for
from nasrl.env.spaces.space import Architecture, SearchSpace, SpaceError, load_space
from nasrl.env.threads import torch_threads

# 2: plain data (torch.load(weights_only=True) reads it) and the input normalisation; 1: the same without it
MODEL_FORMAT = 2
ONNX_HINT = 'pip install "nasrl-gym[onnx]"'  # the extra that torch.onnx.export needs (onnx, onnxscript)


@dataclass
class Retrained:
    model: nn.Module
    test_accuracy: float
    params: int
    seconds: float
    curve: list[dict[str, float]]  # per epoch: epoch, train_loss, test_accuracy
    threads: int  # torch threads it trained with: the result depends on them
    device: str = "cpu"  # where it trained (the result depends on it too)


@dataclass
class RetrainedLM:
    model: nn.Module
    metrics: dict[str, float]  # test_perplexity (and test_bpc at character level)
    params: int
    hidden_size: int
    seconds: float
    curve: list[dict[str, float]]  # per epoch: epoch, train_loss, test_perplexity
    threads: int
    device: str = "cpu"


class RetrainError(ValueError):
    """An architecture or run that cannot be retrained; the message says what is accepted."""


# --- where the architecture comes from ----------------------------------------------------------------


def resolve_architecture(
    arch: Any, space: Any = None, dataset: dict[str, Any] | None = None
) -> tuple[Architecture, dict[str, Any], str]:
    """Read ``arch`` and return (architecture, load_dataset kwargs, a description of the source).

    ``arch`` is one of: a run folder or its ``best.json``; ``RUN/history.csv:N``, the row of the N-th
    distinct architecture (its ``index`` column); tokens (a list, or a string of integers); or a standard
    recurrent cell (``lstm``, ``gru``, ``rnn_tanh``). The space and data set come from the run's saved
    config unless ``space`` is given; ``dataset`` changes the run's data set (its keys replace the run's,
    e.g. ``{level: char}`` moves a word-level cell to characters). For tokens they default to cnn1d and
    MNIST-1D (``space=rnn_cell``: the tiny-shakespeare corpus), for a standard cell to the corpus.
    """
    run_cfg: Any = None
    if isinstance(arch, str) and arch in STANDARD_CELLS:
        return standard_cell(arch), _corpus_setting(None, dataset), f"standard cell {arch}"
    if isinstance(arch, (list, tuple)) or (isinstance(arch, str) and _looks_like_tokens(arch)):
        tokens = _parse_tokens(arch)
        source = f"tokens {' '.join(map(str, tokens))}"
    elif isinstance(arch, str):
        tokens, run_dir, source = _tokens_from_run(arch)
        run_cfg = _run_config(run_dir)
    else:
        raise RetrainError(f"arch={arch!r}: expected RUN_FOLDER, RUN/best.json, RUN/history.csv:N or tokens")

    if space is None:
        space = run_cfg.env.get("space") if run_cfg is not None else "cnn1d"
    try:
        search_space = load_space(space)
    except SpaceError as exc:
        raise RetrainError(str(exc)) from None
    run_dataset = _run_dataset(run_cfg) if run_cfg is not None else None
    if search_space.family.language_model:
        dataset = _corpus_setting(run_dataset, dataset)
    elif dataset is not None:
        dataset = _checked(dataset_schema(), run_dataset or {}, dataset)
    else:
        dataset = run_dataset or {"name": "mnist1d"}
    _check_tokens(search_space, tokens, source)
    return search_space.decode(tokens), dict(dataset), source


def _corpus_setting(run_dataset: dict[str, Any] | None, given: dict[str, Any] | None) -> dict[str, Any]:
    """``load_corpus`` keyword arguments: the run's (or the defaults) with ``given`` on top, checked."""
    return _checked(corpus_schema(), run_dataset or {}, given or {})


def _checked(schema: type, *settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` merged in order onto ``schema``'s defaults; a wrong key or type stops here."""
    return OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(schema), *settings))  # type: ignore[return-value]


def _looks_like_tokens(text: str) -> bool:
    return re.fullmatch(r"\[?\s*-?\d+([\s,]+-?\d+)*\s*\]?", text.strip()) is not None


def _parse_tokens(arch: Any) -> list[int]:
    parts = arch if isinstance(arch, (list, tuple)) else arch.replace(",", " ").strip("[] ").split()
    try:
        return [int(t) for t in parts]
    except (TypeError, ValueError):
        raise RetrainError(f"arch={arch!r}: tokens must be integers, e.g. arch='[0,3,2,0,1]'") from None


def _tokens_from_run(text: str) -> tuple[list[int], Path, str]:
    row_index: int | None = None
    if ".csv:" in text:
        text, _, row = text.rpartition(":")
        try:
            row_index = int(row)
        except ValueError:
            raise RetrainError(
                f"arch=...history.csv:{row}: the row must be an architecture index (an integer)"
            ) from None
    path = Path(text).expanduser()
    if path.is_dir():
        path = path / "best.json"
    if not path.exists():
        raise RetrainError(
            f"arch={text}: {path} does not exist; expected RUN_FOLDER, RUN/best.json, RUN/history.csv:N or tokens"
        )
    if path.suffix == ".json":
        try:
            tokens = [int(t) for t in read_best(path)["tokens"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise RetrainError(f"{path} is not a nasrl best.json ({type(exc).__name__}: {exc})") from None
        return tokens, path.parent, str(path)
    if path.suffix == ".csv":
        if row_index is None:
            raise RetrainError(f"arch={text}: name a row, e.g. {text}:0 (the index column of history.csv)")
        rows = [r for r in read_history(path) if r.get("index") == str(row_index)]
        if not rows:
            raise RetrainError(f"{path} has no architecture with index {row_index}")
        return [int(t) for t in rows[0]["tokens"].split()], path.parent, f"{path}:{row_index}"
    raise RetrainError(f"arch={text}: expected RUN_FOLDER, RUN/best.json, RUN/history.csv:N or tokens")


def _run_config(run_dir: Path) -> Any:
    try:
        return read_config(run_dir)
    except SearchError:
        raise RetrainError(
            f"{run_dir} has no .hydra/config.yaml, so its space and data set are unknown; "
            "give them with space=NAME dataset={name:DATASET}"
        ) from None


def _run_dataset(run_cfg: Any) -> dict[str, Any]:
    evaluator = run_cfg.env.get("evaluator")
    if evaluator is None or "dataset" not in evaluator:
        raise RetrainError(
            f"the run's environment ({run_cfg.env.get('_target_')}) does not train children on a data set "
            "(a lookup table?), so there is nothing to retrain; retrain runs of nasrl.env.ChildNetEnv"
        )
    return OmegaConf.to_container(evaluator.dataset, resolve=True)  # type: ignore[return-value]


def _check_tokens(space: SearchSpace, tokens: list[int], source: str) -> None:
    done: list[int] = []
    for t in tokens:
        decision = space.next_decision(done)
        if decision is None:
            raise RetrainError(f"{source}: {len(tokens)} tokens, but space '{space.name}' ends after {len(done)}")
        n = space.num_choices(decision)
        if not 0 <= t < n or t not in space.allowed(done):
            name = space.decision_types[decision.type_index].name
            valid = f"0..{n - 1}" if len(space.allowed(done)) == n else f"{list(space.allowed(done))} (constraints)"
            raise RetrainError(f"{source}: token {t} at position {len(done)} ('{name}') must be in {valid}")
        done.append(t)
    if space.next_decision(done) is not None:
        raise RetrainError(f"{source}: {len(tokens)} tokens end before space '{space.name}' is complete")


# --- training, saving, loading ----------------------------------------------------------------------------


def retrain(arch: Architecture, data: Dataset, recipe: Recipe, seed: int = 0, log: Any = None) -> Retrained:
    """Train ``arch`` on train + validation with ``recipe``; test after every epoch.

    ``log(epoch, train_loss, test_accuracy)`` is called after each epoch (e.g. to write TensorBoard). Trains
    and tests on ``recipe.device``, the data copied there once; the model comes back on that device.
    """
    threads = recipe.num_threads or torch.get_num_threads()
    with torch_threads(threads):
        return _retrain(arch, data, recipe, seed, log, threads)


def _retrain(arch: Architecture, data: Dataset, recipe: Recipe, seed: int, log: Any, threads: int) -> Retrained:
    device = resolve_device(recipe.device)
    x = torch.cat([data.x_train, data.x_val]).to(device)
    y = torch.cat([data.y_train, data.y_val]).to(device)
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)
    start = time.perf_counter()
    curve: list[dict[str, float]] = []

    def on_epoch(epoch: int, loss: float) -> None:
        acc = accuracy_of(model, x_test, y_test)
        curve.append({"epoch": epoch, "train_loss": loss, "test_accuracy": acc})
        if log is not None:
            log(epoch, loss, acc)

    torch.manual_seed(seed)
    model = build_network(arch, data.input_shape, data.num_classes).to(device)  # weights drawn on the CPU
    steps = recipe.epochs * -(-len(y) // recipe.batch_size)
    failure = train_model(
        model,
        x,
        y,
        steps=steps,
        batch_size=recipe.batch_size,
        optimizer=recipe.optimizer,
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
        schedule=recipe.schedule,
        seed=seed,
        label_smoothing=recipe.label_smoothing,
        on_epoch=on_epoch,
        amp=recipe.amp,
    )
    if failure:
        raise RetrainError(f"training diverged: {failure}; try a lower retrain.lr")
    model.eval()
    seconds = time.perf_counter() - start
    params = count_parameters(model)
    return Retrained(model, curve[-1]["test_accuracy"], params, seconds, curve, threads, str(device))


def retrain_language_model(
    arch: Architecture, corpus: Corpus, recipe: LMRecipe, seed: int = 0, log: Any = None
) -> RetrainedLM:
    """Train the language model of ``arch`` on train + validation with ``recipe``; test after every epoch.

    ``log(epoch, train_loss, metrics)`` is called after each epoch. Trains and tests on ``recipe.device``."""
    threads = recipe.num_threads or torch.get_num_threads()
    device = resolve_device(recipe.device)
    hidden = recipe.hidden_size
    if recipe.params is not None:
        hidden = hidden_size_for(arch, corpus.vocab_size, recipe.params, recipe.num_layers)
    tokens = torch.cat([corpus.train, corpus.val]).to(device)
    test = corpus.test.to(device)
    steps = recipe.epochs * ((len(tokens) // recipe.batch_size - 1) // recipe.bptt)
    curve: list[dict[str, float]] = []
    start = time.perf_counter()

    def on_epoch(epoch: int, train_loss: float) -> None:
        loss = evaluate_language_model(model, test, bptt=recipe.bptt)[0]
        metrics = perplexity_metrics(loss, corpus.level, "test")
        curve.append({"epoch": epoch, "train_loss": train_loss, **metrics})
        if log is not None:
            log(epoch, train_loss, metrics)

    with torch_threads(threads):
        torch.manual_seed(seed)
        model = build_language_model(arch, corpus.vocab_size, hidden, recipe.num_layers, recipe.dropout).to(device)
        failure = train_language_model(
            model, tokens, steps=steps, batch_size=recipe.batch_size, bptt=recipe.bptt, optimizer=recipe.optimizer,
            lr=recipe.lr, grad_clip=recipe.grad_clip, seed=seed, on_epoch=on_epoch,
        )  # fmt: skip
    if failure:
        raise RetrainError(f"training diverged: {failure}; try a lower lm.lr")
    model.eval()
    metrics = {k: v for k, v in curve[-1].items() if k.startswith("test_")}
    params = count_parameters(model)
    return RetrainedLM(model, metrics, params, hidden, time.perf_counter() - start, curve, threads, str(device))


def save_model(path: str | Path, model: nn.Module, arch: Architecture, data: Dataset | Corpus, **extra: Any) -> None:
    """Save weights with everything needed to rebuild the network (see :func:`load_model`), as CPU tensors
    wherever the model trained, so that a machine without a GPU loads them. A classifier's file also holds
    the input normalisation of ``data`` (``normalization``: ``mean`` and ``std`` per channel). ``extra``: more
    plain data to keep (str, numbers, lists, dicts)."""
    if isinstance(data, Corpus):  # a language model: its vocabulary and sizes
        shape: dict[str, Any] = {"vocab": data.vocab, "hidden_size": model.hidden_size, "num_layers": model.num_layers}
    else:
        shape = {"input_shape": list(data.input_shape), "num_classes": data.num_classes}
        if data.mean is not None and data.std is not None:
            shape["normalization"] = {"mean": data.mean.cpu(), "std": data.std.cpu()}
    state = {"format": MODEL_FORMAT, "arch": arch.to_dict(), **shape, "dataset": data.name}
    weights = {name: tensor.cpu() for name, tensor in model.state_dict().items()}  # the CPU's own: no copy
    payload = {**state, "state_dict": weights, **extra}
    check_plain(payload, "model.pt")
    torch.save(payload, path)


def load_model(path: str | Path, raw_inputs: bool = False) -> nn.Module:
    """The trained ``nn.Module`` saved at ``path`` (a retrain run's ``model.pt``), in eval mode.

    It expects inputs normalised as :func:`nasrl.env.evaluators.data.load_dataset` returns them; with
    ``raw_inputs`` it is wrapped in :class:`Normalized`, which takes them as the data set gives them and
    normalises them with the statistics saved in the file. A language model takes token ids of the
    vocabulary saved with it (``torch.load(path, weights_only=True)["vocab"]``).

    The file is read with ``torch.load(weights_only=True)``; one that needs Python's full unpickler (crafted,
    or from a nasrl that pickled more) is refused in one line unless ``NASRL_TRUST_PICKLES=1`` is set
    (:func:`nasrl.controller.runfolder.load_plain`).
    """
    try:
        saved = load_plain(path, "model file")
    except UnsafeFileError:
        raise
    except Exception as exc:
        raise RetrainError(f"{path}: not a readable model file ({type(exc).__name__}: {exc})") from None
    if not isinstance(saved, dict) or saved.get("format") not in (1, MODEL_FORMAT):
        raise RetrainError(f"{path} is not a model saved by nasrl-retrain (format {MODEL_FORMAT})")
    arch = Architecture.from_dict(saved["arch"])
    model: nn.Module
    if arch.family.language_model:
        if raw_inputs:
            raise RetrainError(f"{path} is a language model: it takes token ids, there is no normalisation to add")
        model = build_language_model(arch, len(saved["vocab"]), saved["hidden_size"], saved["num_layers"])
    else:
        model = build_network(arch, saved["input_shape"], saved["num_classes"])
    model.load_state_dict(saved["state_dict"])
    model.eval()
    if not raw_inputs:
        return model
    if "normalization" not in saved:
        raise RetrainError(
            f"{path} holds no input normalisation (an older nasrl saved it, or its data set was built by hand): "
            "normalise the inputs yourself and load it without raw_inputs"
        )
    return Normalized(model, saved["normalization"]["mean"], saved["normalization"]["std"]).eval()


# --- export: files that run without nasrl -----------------------------------------------------------------


class Normalized(nn.Module):
    """``model`` behind the input normalisation of its data set, ``(x - mean) / std`` per channel: it takes
    inputs as the data set gives them (see :class:`~nasrl.env.evaluators.data.Dataset`)."""

    mean: torch.Tensor  # buffers: saved with the module, moved with it
    std: torch.Tensor

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean.detach().clone().float())
        self.register_buffer("std", std.detach().clone().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def export_model(out: str | Path, model: nn.Module, data: Dataset) -> list[str]:
    """Write, into the folder ``out``, ``model`` with the input normalisation of ``data`` inside, for raw inputs
    (float32, shaped (N, *data.input_shape), as the data set gives them), in forms that need no nasrl:

    - ``model_scripted.pt``: TorchScript, ``torch.jit.load(path)(raw_inputs)`` gives the logits;
    - ``model.onnx`` (input ``inputs``, output ``logits``, any batch size) where the ``onnx`` extra is
      installed (``pip install "nasrl-gym[onnx]"``).

    Returns one line per file, written or skipped with the reason, for the command to print. An export that
    fails is reported, not raised: the trained model is already in ``model.pt``."""
    out = Path(out)
    if data.mean is None or data.std is None:
        return ["model_scripted.pt, model.onnx: not written: the data set's normalisation is not known"]
    wrapped = Normalized(copy.deepcopy(model).cpu(), data.mean.cpu(), data.std.cpu()).eval()
    example = torch.zeros(2, *data.input_shape)
    # a different batch size and values: the check that the trace holds for inputs other than the example
    noise = torch.randn(3, *data.input_shape, generator=torch.Generator().manual_seed(0))
    check = noise * data.std.cpu() + data.mean.cpu()
    lines = [_export_torchscript(out / "model_scripted.pt", wrapped, example, check)]
    lines.append(_export_onnx(out / "model.onnx", wrapped, example))
    return lines


def _export_torchscript(path: Path, wrapped: nn.Module, example: torch.Tensor, check: torch.Tensor) -> str:
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # torch 2.13 deprecates torch.jit; its TracerWarnings are about the spatial sizes the networks read
            # from their input, fixed by the data set (only the batch size varies, checked below)
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(wrapped, example)
            expected, got = wrapped(check), traced(check)
        if not torch.allclose(expected, got, rtol=1e-4, atol=1e-5):
            return f"{path.name}: not written: its trace does not reproduce the model on a batch of {len(check)}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced.save(str(path))
    except Exception as exc:
        return f"{path.name}: not written: TorchScript could not trace the model ({type(exc).__name__}: {exc})"
    return f"{path}  (TorchScript, normalisation inside: torch.jit.load(path)(raw_inputs) gives the logits)"


def _export_onnx(path: Path, wrapped: nn.Module, example: torch.Tensor) -> str:
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        return f"{path.name}: skipped: {' and '.join(missing)} not installed ({ONNX_HINT})"
    # the exporter logs its passes, and warns of torchvision's operators, which no nasrl network uses
    quiet = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(None):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapped,
                (example,),
                str(path),
                dynamo=True,
                external_data=False,  # one file: the weights inside
                verbose=False,
                input_names=["inputs"],
                output_names=["logits"],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
            )
    except Exception as exc:
        return f"{path.name}: not written: torch.onnx.export failed ({type(exc).__name__}: {str(exc).splitlines()[0]})"
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
    return f"{path}  (ONNX, normalisation inside: input 'inputs', output 'logits')"
