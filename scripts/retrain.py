"""Retrain a found architecture with a full recipe and report its test accuracy (``nasrl-retrain``;
``python scripts/retrain.py`` is the same command).

    nasrl-retrain arch=RUN_FOLDER/best.json            # the best of a search
    nasrl-retrain arch=RUN_FOLDER/history.csv:7        # the 8th distinct architecture
    nasrl-retrain arch='[3,5,1,0,1]' space=cnn1d        # tokens
    nasrl-retrain arch=RUN_FOLDER retrain.epochs=1      # a quick check

Writes into its run folder (outputs/retrain/DATE/TIME): model.pt (weights and architecture; load it with
``nasrl.env.retrain.load_model``), result.json, curve.csv, and TensorBoard events under tb/ (``retrain/*`` tags).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from nasrl.conf.schema import dataset_schema
from nasrl.controller.build import register_configs, report, run_app, seed_everything, stops_on_bad_input
from nasrl.env.data import load_dataset
from nasrl.env.retrain import Recipe, resolve_architecture, retrain, save_model


@hydra.main(config_path="pkg://nasrl.conf", config_name="retrain", version_base="1.3")
def run(cfg: DictConfig) -> None:
    with stops_on_bad_input():
        _run(cfg)


def _run(cfg: DictConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    arch_setting = OmegaConf.to_container(cfg.arch) if OmegaConf.is_list(cfg.arch) else cfg.arch
    dataset_setting = None
    if cfg.dataset is not None:  # checked against load_dataset's keys and types
        dataset_setting = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(dataset_schema()), cfg.dataset))
    recipe = OmegaConf.to_object(cfg.retrain)  # a Recipe: its range checks run here
    assert isinstance(recipe, Recipe)
    arch, dataset, source = resolve_architecture(arch_setting, cfg.space, dataset_setting)
    data = load_dataset(**dataset)
    seed_everything(cfg.seed)
    report(
        f"retraining {arch.describe()}\n  from {source}, on {data.name} ({len(data.y_train) + len(data.y_val)} "
        f"train+val examples, {len(data.y_test)} test), {recipe.epochs} epochs"
    )

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out / "tb"))

    def log(epoch: int, loss: float, acc: float) -> None:
        writer.add_scalar("retrain/train_loss", loss, epoch)
        writer.add_scalar("retrain/test_accuracy", acc, epoch)

    try:
        result = retrain(arch, data, recipe, seed=cfg.seed, log=log)
    finally:
        writer.close()
    save_model(out / "model.pt", result.model, arch, data, source=source, seed=cfg.seed)
    summary = {
        "test_accuracy": result.test_accuracy,
        "params": result.params,
        "seconds": round(result.seconds, 2),
        "architecture": arch.describe(),
        "tokens": list(arch.tokens),
        "source": source,
        "dataset": dataset,
        "seed": cfg.seed,
        "torch_threads": result.threads,  # the result depends on it (the order of floating-point sums)
        "recipe": OmegaConf.to_container(cfg.retrain),
    }
    (out / "result.json").write_text(json.dumps(summary, indent=2))
    with open(out / "curve.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["epoch", "train_loss", "test_accuracy"])
        w.writeheader()
        w.writerows(result.curve)
    report(
        f"test accuracy: {result.test_accuracy:.4f} ({len(data.y_test)} examples), {result.params:,} parameters, "
        f"{result.seconds:.0f} s, {result.threads} torch thread(s)"
    )
    report(f"model: {out / 'model.pt'}  (nasrl.env.retrain.load_model(path) returns the nn.Module)")


def main() -> None:
    """The console script ``nasrl-retrain``."""
    register_configs()
    run_app(run)


if __name__ == "__main__":
    main()
