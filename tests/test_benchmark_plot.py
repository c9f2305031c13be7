"""The benchmark's curves.png reads where strategies differ; run folders are named after what ran."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from matplotlib.backends.backend_agg import FigureCanvasAgg

from conftest import run_script
from nasrl.scripts.app import register_configs
from nasrl.scripts.benchmark import plot_curves

COLUMN = "valid_acc_200ep"
PUBLISHED = {  # the NAS-Bench-201 numbers of conf/benchmark.yaml: 91.09 and 91.19 lie close together
    COLUMN: {
        "random search": [90.93, 0.36],
        "REINFORCE": [91.09, 0.37],
        "REA (regularized evolution)": [91.19, None],
        "optimum of the table": [91.61, None],
    }
}
SEED_OFFSETS = np.array([-0.3, -0.1, 0.1, 0.3])  # std 0.2582 (ddof 1), so the 95% interval of the mean is
HALF_WIDTH = 3.1824 * 0.2582 / 2  # t(0.975, 3) x std / sqrt(4) = 0.4108


def rising(final: float, budget: int = 50) -> dict[str, np.ndarray]:
    """Four seeds of a best-so-far curve whose mean is ``final - 2 / k`` after k evaluations."""
    mean = final - 2 / np.arange(1, budget + 1)
    return {COLUMN: mean[None, :] + SEED_OFFSETS[:, None]}


def test_curves_zoom_on_where_strategies_differ_and_name_the_band(tmp_path) -> None:
    path = tmp_path / "curves.png"
    fig = plot_curves(path, {"lstm": rising(91.0), "random": rising(90.0)}, COLUMN, PUBLISHED)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    accuracy, regret = fig.axes
    # from just below the lowest mean after 10% of the budget (random's, after 6: 90 - 2/6) to just above the
    # optimum, the highest line: 2 points, not the 63-95 of an automatic axis
    low, high = accuracy.get_ylim()
    assert 89.4 < low < 90 - 2 / 6 and 91.61 < high < 91.8
    # the band is the t interval of the mean over the 4 seeds: 90.96 ± 0.4108 at the last evaluation
    band = accuracy.collections[0].get_paths()[0].vertices
    at_end = band[band[:, 0] == 50, 1]
    assert at_end.min() == pytest.approx(90.96 - HALF_WIDTH, abs=1e-3)
    assert at_end.max() == pytest.approx(90.96 + HALF_WIDTH, abs=1e-3)
    assert fig.texts[0].get_text() == "mean ± 95% confidence interval of the mean over n=4 seeds"
    assert [t.get_text() for t in accuracy.get_legend().get_texts()] == ["lstm (n=4)", "random (n=4)"]
    # the published labels do not overlap once drawn (91.09 and 91.19 would without being pushed apart)
    renderer = FigureCanvasAgg(fig).get_renderer()  # closed by plot_curves: draw it once more to measure
    boxes = [t.get_window_extent(renderer) for t in accuracy.texts]
    assert len(boxes) == 4
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    assert "91.19 REA (regularized evolution)" in [t.get_text() for t in accuracy.texts]
    # regret to the table's optimum on a log axis: 91.61 - 90.96 after the whole budget
    assert regret.get_yscale() == "log"
    assert regret.lines[0].get_ydata()[-1] == pytest.approx(0.65)


def test_curves_without_an_optimum_have_one_panel_and_say_so_for_one_seed(tmp_path) -> None:
    one_seed = {COLUMN: rising(90.5)[COLUMN][:1]}
    fig = plot_curves(tmp_path / "curves.png", {"random": one_seed}, COLUMN, {})
    assert len(fig.axes) == 1 and fig.texts[0].get_text().endswith("over n=1 seeds")
    low, high = fig.axes[0].get_ylim()
    assert low < 90.2 - 2 / 6 and high < 90.5  # one seed's curve (offset -0.3), no band
    with pytest.raises(ValueError, match=r"zoom_after must be a share of the budget in \[0, 1\), got 1.5"):
        plot_curves(tmp_path / "bad.png", {"random": one_seed}, COLUMN, {}, zoom_after=1.5)


def test_a_run_folder_is_named_after_env_controller_and_seed(tmp_path) -> None:
    settings = ["env=synthetic", "controller=random", "search.budget=2", "search.progress=false", "seed=3"]
    result = run_script("train.py", *settings, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (named,) = (tmp_path / "outputs").iterdir()
    assert named.name == "synthetic-random-seed3"
    (run,) = named.iterdir()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", run.name)
    assert (run / "history.csv").exists() and (run / ".hydra" / "config.yaml").exists()


def test_the_composed_run_folders_name_what_runs() -> None:
    from test_configs import composed

    stamp = r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d"
    assert re.fullmatch(rf"outputs/mnist1d-lstm-seed5/{stamp}", composed("seed=5").hydra.run.dir)
    register_configs()
    with initialize_config_module("nasrl.conf", version_base="1.3"):
        bench = compose("benchmark", return_hydra_config=True)
    assert re.fullmatch(rf"outputs/benchmark-nb201/{stamp}", bench.hydra.run.dir)
