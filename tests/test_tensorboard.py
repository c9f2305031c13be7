"""The TensorBoard first screen (controller/monitor.py): read back from the event files of tiny runs."""

from __future__ import annotations

import copy
import csv
import io
import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from tensorboard import plugin_util
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from conftest import TOY_TARGET, run_script
from nasrl.controller import monitor
from nasrl.controller.lstm import LSTMPolicy
from nasrl.controller.monitor import Monitor
from nasrl.controller.policy import TokenSpec
from nasrl.controller.random_search import RandomPolicy
from nasrl.controller.runfolder import SearchState
from nasrl.controller.search import play_episode
from nasrl.env import ChildNetEnv
from nasrl.env.evaluators.synthetic import TokenMatchEvaluator
from nasrl.env.nb201 import NASBench201Env
from nasrl.env.spaces.nb201_cell import OPS, arch_string
from nasrl.env.threads import torch_threads

SYNTHETIC_TARGET = [2, 3, 1, 0, 0, 1, 4, 1, 1, 0, 0, 1, 5, 2, 0, 3]  # conf/env/synthetic.yaml's
EVERYTHING = {"scalars": 0, "tensors": 0, "images": 0, "histograms": 0}  # keep every event, not a sample


def events(run: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run / "tb"), size_guidance=EVERYTHING)
    acc.Reload()
    return acc


def values(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def text(acc: EventAccumulator, tag: str) -> str:
    return acc.Tensors(f"{tag}/text_summary")[-1].tensor_proto.string_val[0].decode()


def layout(acc: EventAccumulator) -> layout_pb2.Layout:
    """The Custom Scalars layout TensorBoard shows: the last one written."""
    return layout_pb2.Layout.FromString(acc.Tensors("custom_scalars__config__")[-1].tensor_proto.string_val[0])


def html(markdown: str) -> str:
    """What TensorBoard's Text tab shows (its own Markdown renderer)."""
    return plugin_util.markdown_to_safe_html(markdown)


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory) -> tuple[Path, EventAccumulator]:
    """nasrl-train on the synthetic environment (cnn1d space: a variable depth, skips): 8 architectures,
    4 REINFORCE updates."""
    folder = tmp_path_factory.mktemp("tb")
    overrides = ["env=synthetic", "search.budget=8", "controller.batch_size=2", "search.progress=false", "seed=1"]
    result = run_script("train.py", f"hydra.run.dir={folder / 'run'}", *overrides, cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / "run", events(folder / "run")


def history(run: Path) -> list[dict]:
    with open(run / "history.csv") as fh:
        return list(csv.DictReader(fh))


def test_the_overview_counts_distinct_architectures_and_logs_nothing_that_does_not_exist(lstm_run) -> None:
    run, acc = lstm_run
    rows = [r for r in history(run) if r["reused"] == "0"]
    rewards = [float(r["reward"]) for r in rows]
    reward = values(acc, "0_overview/reward")
    assert [s for s, _ in reward] == list(range(1, len(rows) + 1)) and [v for _, v in reward] == pytest.approx(rewards)
    running_best = [max(rewards[: i + 1]) for i in range(len(rewards))]
    assert [v for _, v in values(acc, "0_overview/reward_best")] == pytest.approx(running_best)
    # the update's numbers, copied against distinct architectures: 4 updates of 2 episodes
    entropy = values(acc, "controller/entropy_normalised")
    assert [s for s, _ in entropy] == [2, 4, 6, 8]
    assert [v for _, v in values(acc, "1_policy/entropy_normalised")] == [v for _, v in entropy]
    assert all(0.9 < v <= 1.0 for _, v in entropy)  # a fresh controller is close to uniform
    baseline = values(acc, "controller/baseline")
    assert [v for _, v in values(acc, "0_overview/reward_baseline")] == [v for _, v in baseline]
    greedy = values(acc, "1_policy/greedy_probability")
    assert greedy and all(0 < v < 1e-3 for _, v in greedy)  # 6 to 40 decisions, none converged yet
    scalars = set(acc.Tags()["scalars"])
    # the synthetic evaluator trains nothing, counts no parameters and reports no number of its own
    assert not {"child/train_seconds", "child/params"} & scalars
    assert [t for t in scalars if t.endswith("_of_best")] == []  # the synthetic evaluator reports nothing more
    histogram = acc.Histograms("search/reward_distribution")
    assert [h.step for h in histogram] == [8]  # at the end: fewer than HISTOGRAM_EVERY episodes
    assert histogram[0].histogram_value.num == 8
    assert histogram[0].histogram_value.sum == pytest.approx(sum(float(r["reward"]) for r in history(run)))


def test_the_custom_scalars_layout_puts_the_overview_first_and_each_decision_position_on_a_chart(lstm_run) -> None:
    _, acc = lstm_run
    assert "custom_scalars__config__" in acc.PluginTagToContent("custom_scalars")
    categories = layout(acc).category
    assert [c.title for c in categories] == [monitor.LAYOUT_OVERVIEW, monitor.LAYOUT_POSITIONS]
    overview, positions = categories
    charts = {chart.title: list(chart.multiline.tag) for chart in overview.chart}
    assert list(charts) == [monitor.CHART_REWARD, monitor.CHART_POLICY]
    scalars = acc.Tags()["scalars"]

    def matched(regexes: list[str]) -> set[str]:
        return {t for t in scalars if any(re.match(r, t) for r in regexes)}

    overview = ("reward", "reward_best", "reward_baseline")
    assert matched(charts[monitor.CHART_REWARD]) == {f"0_overview/{n}" for n in overview}
    assert matched(charts[monitor.CHART_POLICY]) == {"1_policy/entropy_normalised", "1_policy/greedy_probability"}
    titles = [chart.title for chart in positions.chart]
    assert titles[0] == "depth" and titles[1:5] == [f"layer 0 / {n}" for n in ("filters", "kernel_size", "stride",
                                                                                 "activation")]  # fmt: skip
    assert matched(list(positions.chart[0].multiline.tag)) == {f"policy_position/depth/{d}" for d in range(1, 7)}
    for chart in positions.chart:
        lines = sorted(matched(list(chart.multiline.tag)))
        assert lines, chart.title
        layer = re.match(r"layer (\d+) / skip$", chart.title)
        if layer:  # one line per earlier layer: the probability that it feeds this one
            assert {t.rsplit("/", 1)[1] for t in lines} <= {f"from_{j}" for j in range(int(layer.group(1)))}
            continue
        by_step: dict[int, float] = {}
        for tag in lines:
            for step, p in values(acc, tag):
                by_step[step] = by_step.get(step, 0.0) + p
        assert by_step and all(s == pytest.approx(1.0, abs=1e-5) for s in by_step.values()), chart.title
    # a layer's skips come before its own decisions, as the controller emits them
    assert titles.index("layer 1 / skip") == titles.index("layer 1 / filters") - 1


def test_the_text_tab_shows_architectures_as_code_and_the_best_is_drawn(lstm_run) -> None:
    run, acc = lstm_run
    best = json.loads((run / "best.json").read_text())
    shown = html(text(acc, "search/best_architecture"))
    assert "<a" not in shown and "<pre><code>" in shown
    for line in re.split(r" (?=\d+:\[)", best["architecture"]):  # one layer a line, brackets and inputs kept
        assert f"\n{line}\n" in shown
    table = html(text(acc, "search/top_architectures"))
    assert "<a" not in table and table.count("<tr>") == 1 + monitor.TOP_K
    assert f"<td><code>{best['architecture']}</code></td>" in table  # the best, whole, in its cell
    image = acc.Images("search/best_architecture_graph")[-1]
    picture = Image.open(io.BytesIO(image.encoded_image_string))
    assert picture.size == (700, image.height) and image.height > 250  # a 7-inch drawing of the layers
    assert "search/reward_vs_params" not in acc.Tags()["images"]  # no parameters to plot against


def test_hparams_name_what_was_searched_and_tick_the_key_columns(lstm_run) -> None:
    _, acc = lstm_run
    content = acc.PluginTagToContent("hparams")
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    ticked = {info.name for info in experiment.hparam_infos if info.differs}
    assert ticked == set(monitor.KEY_HPARAMS)
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info.hparams
    assert start["env"].string_value == "ChildNetEnv: cnn1d"  # no data set: the synthetic evaluator has none
    assert start["env.space"].string_value == "cnn1d" and "env.dataset" not in start
    assert start["controller"].string_value == "LSTMPolicy" and start["seed"].number_value == 1
    metrics = [m.name.tag for m in experiment.metric_infos]
    assert metrics == ["hparam/best_reward", "hparam/best_val_accuracy", "hparam/distinct_architectures"]
    assert values(acc, "hparam/distinct_architectures") == [(8, 8.0)]


def test_nasbench201_rows_give_the_best_reported_accuracies_the_cell_drawing_and_a_readable_table(tmp_path) -> None:
    cells = [("nor_conv_3x3",) * 6, ("none", "skip_connect", "nor_conv_1x1", "avg_pool_3x3", "nor_conv_3x3", "none")]
    cells.append(("skip_connect",) * 6)
    table = tmp_path / "cifar10.csv"
    with open(table, "w", newline="") as fh:  # NAS-Bench-201's format: accuracies in percent
        writer = csv.writer(fh)
        writer.writerow(["arch", "valid_acc_12ep", "valid_acc_200ep", "test_acc_200ep"])
        writer.writerows([arch_string(c), 80 + 5 * i, 90 + i, 89 + i] for i, c in enumerate(cells))
    env = NASBench201Env(table, expected_rows=None)
    assert monitor.env_hparams(env) == {"env": "NASBench201Env: nb201 on cifar10", "env.space": "nb201",
                                        "env.dataset": "cifar10"}  # fmt: skip
    state = SearchState()
    watch = Monitor(tmp_path / "run", state, budget=3, hparams={"env": "NASBench201Env: nb201 on cifar10"})
    policy = RandomPolicy(TokenSpec.from_env(env))
    for cell in [cells[0], cells[1], cells[0], cells[2]]:  # the third episode reuses the first architecture
        reward, info = play_episode(env, None, [OPS.index(op) for op in cell])
        row = state.add(reward, info)
        watch.episode(state, row, state.best, {}, policy)
    watch.close(state)
    acc = events(tmp_path / "run")
    # best so far after each distinct architecture: cell 0 (90 / 89), cell 1 (91 / 90), cell 2 (92 / 91)
    assert values(acc, "0_overview/valid_acc_200ep_of_best") == [(1, 90.0), (2, 91.0), (3, 92.0)]
    assert values(acc, "0_overview/test_acc_200ep_of_best") == [(1, 89.0), (2, 90.0), (3, 91.0)]
    scalars = set(acc.Tags()["scalars"])
    assert "0_overview/flops_of_best" not in scalars and "child/flops" in scalars  # a cost, not a reported accuracy
    assert "child/train_seconds" not in scalars and "child/params" in scalars  # a table trains nothing
    assert not any(t.startswith(("policy_position/", "1_policy/")) for t in scalars)  # random search
    reported = [monitor.CHART_REPORTED.format(name=n) for n in ("valid_acc_200ep", "test_acc_200ep")]
    assert [chart.title for chart in layout(acc).category[0].chart] == [monitor.CHART_REWARD, *reported]
    shown = html(text(acc, "search/best_architecture"))
    assert "<a" not in shown and "\n|skip_connect~0|skip_connect~1|\n" in shown  # node 2's edges on a line
    rows = html(text(acc, "search/top_architectures"))
    assert rows.count("<tr>") == 4 and rows.count("<td>") == 3 * 8  # the cells' | do not split table cells
    assert f"<code>{arch_string(cells[2])}</code>" in rows
    assert set(acc.Tags()["images"]) == {"search/best_architecture_graph", "search/reward_vs_params"}
    experiment = HParamsPluginData.FromString(acc.PluginTagToContent("hparams")["_hparams_/experiment"]).experiment
    assert [m.name.tag for m in experiment.metric_infos] == [
        "hparam/best_reward", "hparam/best_val_accuracy", "hparam/best_valid_acc_200ep", "hparam/best_test_acc_200ep",
        "hparam/distinct_architectures",
    ]  # fmt: skip
    assert values(acc, "hparam/best_test_acc_200ep") == [(4, 91.0)]


def uniform_lstm(env: ChildNetEnv) -> LSTMPolicy:
    """An LSTM controller whose weights are all 0: every valid choice equally likely (logits tanh(0) = 0), and
    an update too small (lr 1e-9) to change that."""
    policy = LSTMPolicy(TokenSpec.from_env(env), batch_size=2, lr=1e-9, replay_top_k=0)
    with torch.no_grad():
        for p in policy.net.parameters():
            p.zero_()
    return policy


def update(env: ChildNetEnv, policy: LSTMPolicy) -> dict[str, float]:
    """Two episodes, then the update they trigger, on one thread as the search runs the controller (several
    threads make these tiny tensors many times slower on a busy machine)."""
    with torch_threads(1):
        played = [play_episode(env, policy) for _ in range(2)]
        return [policy.end_episode(reward, info) for reward, info in played][-1]


def test_a_uniform_lstm_has_normalised_entropy_1_and_reads_its_greedy_probability(toy_space) -> None:
    env = ChildNetEnv(space=toy_space, evaluator=TokenMatchEvaluator(TOY_TARGET))  # 5 layers of 2 decisions of 5
    policy = uniform_lstm(env)
    assert policy.greedy_probability() is None and policy.position_probabilities() == []  # nothing played yet
    metrics = update(env, policy)
    assert metrics["entropy_normalised"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["entropy"] == pytest.approx(10 * torch.log(torch.tensor(5.0)).item(), abs=1e-4)
    with torch_threads(1):
        assert policy.greedy_probability() == pytest.approx(0.2**10, rel=1e-4)
    positions = policy.position_probabilities()
    labels = [f"layer {i} / {decision}" for i in range(5) for decision in ("units", "activation")]
    assert [label for label, _, _ in positions] == labels
    assert positions[1][1] == ["relu", "tanh", "elu", "gelu", "sigmoid"]
    assert all(p == pytest.approx(0.2) for _, _, probs in positions for p in probs)


def test_positions_of_a_space_with_depth_and_skips_carry_its_valid_choices() -> None:
    env = ChildNetEnv(space="cnn1d", evaluator=TokenMatchEvaluator([0]))
    policy = uniform_lstm(env)
    update(env, policy)
    positions = {label: (labels, probs) for label, labels, probs in policy.position_probabilities()}
    assert positions["depth"] == (["1", "2", "3", "4", "5", "6"], pytest.approx([1 / 6] * 6))
    assert positions["layer 0 / stride"] == (["1", "2"], pytest.approx([0.5, 0.5]))
    skips = [(label, labels, probs) for label, (labels, probs) in positions.items() if label.endswith("skip")]
    assert skips  # the two episodes have more than one layer
    for label, labels, probs in skips:  # P(layer j feeds layer i) for each j < i: 1/2 when uniform
        layer = int(label.split()[1])
        assert labels == [f"from {j}" for j in range(layer)] and probs == pytest.approx([0.5] * layer)


def test_a_resumed_run_drops_what_an_interrupted_session_logged_after_the_checkpoint_and_nothing_before(
    tmp_path,
) -> None:
    env = ChildNetEnv(space="cnn1d", evaluator=TokenMatchEvaluator(SYNTHETIC_TARGET))
    policy = RandomPolicy(TokenSpec.from_env(env))  # its draws go on: the resumed session plays other architectures

    def session(state: SearchState, episodes: int) -> list[float]:
        watch = Monitor(tmp_path, state, budget=10)
        for _ in range(episodes):
            row = state.add(*play_episode(env, policy))
            watch.episode(state, row, state.best, {}, policy)
        watch.close(state)
        return [r["reward"] for r in state.history]

    state = SearchState()
    session(state, 3)
    checkpoint = copy.deepcopy(state.saved())
    session(state, 2)  # interrupted: its episodes 4 and 5 never reached the checkpoint
    resumed = session(SearchState(**checkpoint), 3)
    logged = values(events(tmp_path), "search/reward")
    assert [s for s, _ in logged] == [1, 2, 3, 4, 5, 6] and [v for _, v in logged] == pytest.approx(resumed)
