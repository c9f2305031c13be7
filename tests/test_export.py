"""Export that stands alone: nasrl-retrain's model_scripted.pt (and model.onnx) give the trained model's
predictions on raw inputs, in a Python where nasrl cannot be imported."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_script
from nasrl.env.evaluators.data import _digits, data_root, load_dataset
from nasrl.env.spaces.networks import build_network
from nasrl.env.spaces.space import load_space
from nasrl.scripts import retraining
from nasrl.scripts.retraining import load_model

# Run with `python -I` (no PYTHONPATH, no user site, the script's folder not on sys.path) from a temporary folder:
# nasrl is still installed (editable) in this interpreter, so it is blocked by name before anything else runs.
WITHOUT_NASRL = """
import sys
sys.modules["nasrl"] = None
try:
    import nasrl  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("nasrl could be imported")
import importlib.util
from pathlib import Path

import torch

onnx_runtime = importlib.util.find_spec("onnxruntime") is not None
for folder in map(Path, sys.argv[1:]):
    raw = torch.load(folder / "raw.pt", weights_only=True)
    scripted = torch.jit.load(str(folder / "model_scripted.pt"))
    torch.save(scripted(raw).detach(), folder / "scripted_logits.pt")
    if onnx_runtime and (folder / "model.onnx").exists():
        import onnxruntime

        session = onnxruntime.InferenceSession(str(folder / "model.onnx"))
        (logits,) = session.run(["logits"], {"inputs": raw.numpy()})
        torch.save(torch.from_numpy(logits), folder / "onnx_logits.pt")
assert not [m for m in sys.modules if m.startswith("nasrl") and sys.modules[m] is not None]
print("ran without nasrl")
"""


ONNX_EXTRA = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript"))


def deep_tokens(space_name: str, seed: int) -> list[int]:
    """Valid tokens of ``space_name``: its deepest networks (skip connections, padding, pooling: what a trace must
    get right), the other decisions drawn with ``seed``."""
    space = load_space(space_name)
    rng = np.random.default_rng(seed)
    tokens: list[int] = []
    while (decision := space.next_decision(tokens)) is not None:
        n = space.num_choices(decision)
        tokens.append(n - 1 if not tokens and space.variable_depth else int(rng.integers(n)))
    return tokens


@pytest.mark.slow
def test_the_exported_models_give_the_trained_models_predictions_without_nasrl(tmp_path) -> None:
    data = load_dataset(name="digits")
    _, _, raw_test, _ = _digits(data_root())  # the test images as the data set gives them, before normalisation
    raw = torch.from_numpy(raw_test)
    folders, printed = [], {}
    for space in ("cnn1d", "cnn2d", "mlp"):
        out = tmp_path / f"retrain-{space}"  # not a folder named as the space: load_space would read it as a path
        tokens = deep_tokens(space, seed=1)
        result = run_script(
            "retrain.py", f"hydra.run.dir={out}", f"arch={tokens}", f"space={space}", "dataset={name:digits}",
            "retrain.epochs=1", cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"{out / 'model_scripted.pt'}  (TorchScript, normalisation inside" in result.stdout
        printed[out] = result.stdout
        assert json.loads((out / "result.json").read_text())["tokens"] == tokens
        model = load_model(out / "model.pt")  # the trained model, on inputs normalised by the data pipeline
        with torch.no_grad():
            expected = model(data.x_test)
            assert torch.allclose(load_model(out / "model.pt", raw_inputs=True)(raw), expected, atol=1e-5)
        torch.save(expected, out / "expected.pt")
        torch.save(raw, out / "raw.pt")
        folders.append(out)

    isolated = subprocess.run(
        [sys.executable, "-I", "-c", WITHOUT_NASRL, *map(str, folders)], cwd=tmp_path, capture_output=True,
        text=True, timeout=300, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )  # fmt: skip
    assert isolated.returncode == 0 and "ran without nasrl" in isolated.stdout, isolated.stderr[-3000:]
    for out in folders:
        expected = torch.load(out / "expected.pt", weights_only=True)
        logits = torch.load(out / "scripted_logits.pt", weights_only=True)
        assert torch.equal(logits.argmax(1), expected.argmax(1)), out.name
        torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
        if not ONNX_EXTRA:  # the extra is optional: without it, one line says so
            assert not (out / "model.onnx").exists() and "model.onnx: skipped: " in printed[out]
        elif importlib.util.find_spec("onnxruntime") is not None:
            onnx_logits = torch.load(out / "onnx_logits.pt", weights_only=True)
            assert torch.equal(onnx_logits.argmax(1), expected.argmax(1)), out.name
            torch.testing.assert_close(onnx_logits, expected, rtol=1e-4, atol=1e-4)
        else:
            import onnx

            onnx.checker.check_model(onnx.load(str(out / "model.onnx")), full_check=True)


def test_model_pt_is_plain_data_with_the_normalisation(tmp_path) -> None:
    data = load_dataset(name="digits")
    arch = load_space("mlp").decode(deep_tokens("mlp", seed=0))
    model = build_network(arch, data.input_shape, data.num_classes).eval()
    retraining.save_model(tmp_path / "model.pt", model, arch, data, source="test")
    saved = torch.load(tmp_path / "model.pt", weights_only=True)  # no unpickling of anything but plain data
    assert saved["format"] == retraining.MODEL_FORMAT == 2
    assert abs(float(data.x_train.mean())) < 1e-4  # the training split's own statistics
    assert saved["normalization"]["mean"].shape == saved["normalization"]["std"].shape == (1, 1, 1)
    _, _, raw_test, _ = _digits(data_root())
    normalised = (torch.from_numpy(raw_test) - saved["normalization"]["mean"]) / saved["normalization"]["std"]
    assert torch.allclose(normalised, data.x_test)

    del saved["normalization"]  # as nasrl wrote it before format 2: plain data too, so it loads with no opt-in
    torch.save(saved | {"format": 1}, tmp_path / "old.pt")
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "old.pt")(data.x_test), model(data.x_test))
    with pytest.raises(retraining.RetrainError, match="holds no input normalisation"):
        load_model(tmp_path / "old.pt", raw_inputs=True)


def test_onnx_is_skipped_in_one_line_without_the_extra(tmp_path, monkeypatch) -> None:
    real = importlib.util.find_spec
    hidden = ("onnx", "onnxscript")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in hidden else real(name, *a))
    data = load_dataset(name="digits")
    arch = load_space("mlp").decode(deep_tokens("mlp", seed=0))
    model = build_network(arch, data.input_shape, data.num_classes).eval()
    lines = retraining.export_model(tmp_path, model, data)
    assert lines[1] == 'model.onnx: skipped: onnx and onnxscript not installed (pip install "nasrl-gym[onnx]")'
    assert (tmp_path / "model_scripted.pt").exists() and not (tmp_path / "model.onnx").exists()


def test_raw_inputs_need_a_classifier_with_its_normalisation(tmp_path) -> None:
    data = load_dataset(name="digits")
    arch = load_space("mlp").decode(deep_tokens("mlp", seed=0))
    model = build_network(arch, data.input_shape, data.num_classes).eval()
    data.mean = data.std = None  # a Dataset built by hand: its normalisation is unknown
    retraining.save_model(tmp_path / "model.pt", model, arch, data)
    with pytest.raises(retraining.RetrainError, match="holds no input normalisation"):
        load_model(tmp_path / "model.pt", raw_inputs=True)
    assert retraining.export_model(Path(tmp_path), model, data) == [
        "model_scripted.pt, model.onnx: not written: the data set's normalisation is not known"
    ]
