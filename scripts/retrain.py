"""Retrain a found architecture with a full recipe and report its test accuracy.

    python scripts/retrain.py arch=RUN_FOLDER/best.json            # the best of a search
    python scripts/retrain.py arch=RUN_FOLDER/history.csv:7        # the 8th distinct architecture
    python scripts/retrain.py arch='[3,5,1,0,1]' space=cnn1d        # tokens
    python scripts/retrain.py arch=RUN_FOLDER retrain.epochs=1      # a quick check

Writes into its run folder (outputs/retrain/DATE/TIME): model.pt (weights and architecture; load it with
``env.retrain.load_model``), result.json, curve.csv, and TensorBoard events under tb/ (``retrain/*`` tags).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from controller.build import one_line_error, seed_everything
from env.data import load_dataset
from env.retrain import Recipe, resolve_architecture, retrain, save_model


@hydra.main(config_path="../conf", config_name="retrain", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except (ValueError, TypeError) as exc:  # bad arch, space, data set or recipe: one line
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        sys.exit(one_line_error(exc))


def run(cfg: DictConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    arch_setting = OmegaConf.to_container(cfg.arch) if OmegaConf.is_list(cfg.arch) else cfg.arch
    dataset_setting = OmegaConf.to_container(cfg.dataset) if cfg.dataset is not None else None
    recipe = Recipe(**OmegaConf.to_container(cfg.retrain))  # type: ignore[arg-type]
    arch, dataset, source = resolve_architecture(arch_setting, cfg.space, dataset_setting)
    data = load_dataset(**dataset)
    seed_everything(cfg.seed)
    print(
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
        "recipe": OmegaConf.to_container(cfg.retrain),
    }
    (out / "result.json").write_text(json.dumps(summary, indent=2))
    with open(out / "curve.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["epoch", "train_loss", "test_accuracy"])
        w.writeheader()
        w.writerows(result.curve)
    print(
        f"test accuracy: {result.test_accuracy:.4f} ({len(data.y_test)} examples), {result.params:,} parameters, "
        f"{result.seconds:.0f} s"
    )
    print(f"model: {out / 'model.pt'}  (env.retrain.load_model(path) returns the nn.Module)")


if __name__ == "__main__":
    main()
