"""Retrain a found architecture with a full recipe and report its test accuracy (``nasrl-retrain``;
``python scripts/retrain.py`` is the same command).

    nasrl-retrain arch=RUN_FOLDER/best.json            # the best of a search
    nasrl-retrain arch=RUN_FOLDER/history.csv:7        # the 8th distinct architecture
    nasrl-retrain arch='[0,3,2,0,1]' space=cnn1d        # tokens (cnn1d: one layer, 48 filters of width 7)
    nasrl-retrain arch=RUN_FOLDER retrain.epochs=1      # a quick check
    nasrl-retrain arch=LM_RUN dataset={level:char}      # a word-level cell moved to characters (lm.* recipe)
    nasrl-retrain arch=lstm                             # a standard cell (lstm, gru, rnn_tanh) on the corpus

Writes into its run folder (outputs/retrain/DATE/TIME): model.pt (weights, architecture and input normalisation,
plain data that ``torch.load(weights_only=True)`` reads; load it with ``nasrl.scripts.retraining.load_model``),
result.json, curve.csv, and TensorBoard events under tb/ (``retrain/*`` tags: train_loss, and test_accuracy, or
test_perplexity and test_bpc for language models). A classifier is also exported with its input normalisation
inside, to run without nasrl: model_scripted.pt (TorchScript: ``torch.jit.load(path)(raw_inputs)``) and, where the
``onnx`` extra is installed (``pip install "nasrl-gym[onnx]"``), model.onnx. A language model is not exported (see
:data:`LM_NOT_EXPORTED`).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from nasrl.conf.schema import LMRecipe, Recipe
from nasrl.controller.build import seed_everything
from nasrl.env.evaluators.data import load_dataset
from nasrl.env.evaluators.text import load_corpus
from nasrl.scripts.app import register_configs, report, run_app, stops_on_bad_input
from nasrl.scripts.retraining import export_model, resolve_architecture, retrain, retrain_language_model, save_model

# why: the cells step through time in Python (and ENAS's clips its state only when it grows), which a trace would
# freeze to one sequence length and one branch; the Python module from load_model runs any length
LM_NOT_EXPORTED = (
    "model_scripted.pt, model.onnx: not written for a language model (its cell steps through time in Python, which "
    "a trace would freeze to one sequence length); load model.pt with nasrl.scripts.retraining.load_model"
)


@hydra.main(config_path="pkg://nasrl.conf", config_name="retrain", version_base="1.3")
def run(cfg: DictConfig) -> None:
    with stops_on_bad_input():
        _run(cfg)


def _run(cfg: DictConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    arch_setting = OmegaConf.to_container(cfg.arch) if OmegaConf.is_list(cfg.arch) else cfg.arch
    dataset_setting = None if cfg.dataset is None else OmegaConf.to_container(cfg.dataset, resolve=True)
    arch, dataset, source = resolve_architecture(arch_setting, cfg.space, dataset_setting)  # type: ignore[arg-type]
    seed_everything(cfg.seed)

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out / "tb"))
    try:
        if arch.family.language_model:
            summary = _language_model(cfg, arch, dataset, source, out, writer)
        else:
            summary = _classifier(cfg, arch, dataset, source, out, writer)
    finally:
        writer.close()
    summary |= {"architecture": arch.describe() or arch.network, "tokens": list(arch.tokens), "source": source,
                "dataset": dataset, "seed": cfg.seed}  # fmt: skip
    (out / "result.json").write_text(json.dumps(summary, indent=2))
    report(f"model: {out / 'model.pt'}  (nasrl.scripts.retraining.load_model(path) returns the nn.Module)")


def _classifier(cfg: DictConfig, arch: Any, dataset: dict, source: str, out: Path, writer: Any) -> dict[str, Any]:
    recipe = OmegaConf.to_object(cfg.retrain)  # a Recipe: its range checks run here
    assert isinstance(recipe, Recipe)
    data = load_dataset(**dataset)
    report(
        f"retraining {arch.describe()}\n  from {source}, on {data.name} ({len(data.y_train) + len(data.y_val)} "
        f"train+val examples, {len(data.y_test)} test), {recipe.epochs} epochs"
    )

    def log(epoch: int, loss: float, acc: float) -> None:
        writer.add_scalar("retrain/train_loss", loss, epoch)
        writer.add_scalar("retrain/test_accuracy", acc, epoch)

    result = retrain(arch, data, recipe, seed=cfg.seed, log=log)
    save_model(out / "model.pt", result.model, arch, data, source=source, seed=cfg.seed)
    for line in export_model(out, result.model, data):
        report(line)
    _write_curve(out, result.curve)
    report(
        f"test accuracy: {result.test_accuracy:.4f} ({len(data.y_test)} examples), {result.params:,} parameters, "
        f"{result.seconds:.0f} s, {result.threads} torch thread(s)"
    )
    return {
        "test_accuracy": result.test_accuracy,
        "params": result.params,
        "seconds": round(result.seconds, 2),
        "torch_threads": result.threads,  # the result depends on it (the order of floating-point sums)
        "recipe": OmegaConf.to_container(cfg.retrain),
    }


def _language_model(cfg: DictConfig, arch: Any, dataset: dict, source: str, out: Path, writer: Any) -> dict[str, Any]:
    recipe = OmegaConf.to_object(cfg.lm)  # an LMRecipe: its range checks run here
    assert isinstance(recipe, LMRecipe)
    corpus = load_corpus(**dataset)
    report(
        f"retraining {arch.describe() or arch.network} as a {corpus.level}-level language model\n  from {source}, "
        f"on {corpus.name} ({len(corpus.train) + len(corpus.val):,} train+val tokens, {len(corpus.test):,} test, "
        f"vocabulary {corpus.vocab_size:,}), {recipe.epochs} epochs"
    )

    def log(epoch: int, loss: float, metrics: dict[str, float]) -> None:
        writer.add_scalar("retrain/train_loss", loss, epoch)
        for name, value in metrics.items():
            writer.add_scalar(f"retrain/{name}", value, epoch)

    result = retrain_language_model(arch, corpus, recipe, seed=cfg.seed, log=log)
    save_model(out / "model.pt", result.model, arch, corpus, source=source, seed=cfg.seed)
    report(LM_NOT_EXPORTED)
    _write_curve(out, result.curve)
    scores = ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in result.metrics.items())
    report(
        f"{scores} ({len(corpus.test):,} tokens), {result.params:,} parameters (hidden size {result.hidden_size}), "
        f"{result.seconds:.0f} s, {result.threads} torch thread(s)"
    )
    return {
        **result.metrics,
        "params": result.params,
        "hidden_size": result.hidden_size,
        "level": corpus.level,
        "seconds": round(result.seconds, 2),
        "torch_threads": result.threads,
        "recipe": OmegaConf.to_container(cfg.lm),
    }


def _write_curve(out: Path, curve: list[dict[str, float]]) -> None:
    with open(out / "curve.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(curve[0]))
        w.writeheader()
        w.writerows(curve)


def main() -> None:
    """The console script ``nasrl-retrain``."""
    register_configs()
    run_app(run)


if __name__ == "__main__":
    main()
