"""What a person watches during a search: TensorBoard events under ``RUN/tb`` and a progress bar.

The TensorBoard tags are a documented interface (docs/guides/tensorboard.md); this is the one
module that writes them. Two x axes: the ``0_overview/*``, ``1_policy/*`` and ``policy_position/*`` scalars count
distinct architectures (what ``search.budget`` and the benchmark's curves count); every other scalar counts episodes,
reused architectures included. The run also writes a layout for TensorBoard's Custom Scalars tab
(:data:`LAYOUT_OVERVIEW`, then :data:`LAYOUT_POSITIONS`), rewritten when a chart appears, so that one
screen answers "is it working": reward, baseline and best so far on one chart, the best architecture's
reported numbers, the policy's normalised entropy and the probability of its greedy architecture, and its
probabilities at each decision position.
"""

from __future__ import annotations

import functools
import json
import re
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from nasrl.controller.pareto import COSTS
from nasrl.controller.policy import Policy
from nasrl.controller.runfolder import SearchState
from nasrl.env.childnet import TokenEnv, token_env
from nasrl.env.spaces.family import Graph
from nasrl.env.spaces.space import Architecture

# Tag groups: "0_" sorts the overview first in TensorBoard's Time Series (its default tab), whose cards follow the
# tags' order, reward first: reward, reward_baseline, reward_best, then METRIC_of_best; the policy's group next
OVERVIEW = "0_overview"
POLICY = "1_policy"
POSITIONS = "policy_position"
LAYOUT_OVERVIEW = "0 overview (x: distinct architectures)"  # the Custom Scalars tab's categories, in order
LAYOUT_POSITIONS = "1 policy by decision position (x: distinct architectures)"
CHART_REWARD = "reward, moving baseline and best so far"
CHART_POLICY = "policy entropy (normalised) and probability of the greedy architecture"
CHART_REPORTED = "best architecture's {name}"  # one chart per number the evaluator reports (NAS-Bench-201: 2)
TOP_K = 5  # rows of search/top_architectures
HISTOGRAM_EVERY = 10  # episodes between two search/reward_distribution histograms
HISTOGRAM_WINDOW = 50  # the episodes each histogram holds: the latest, i.e. what the policy samples now
# the images are drawn a minute into a session at the earliest, then at most this often, and at the end: 0.1 to
# 0.5 s each, which a short search (a test) would pay on its first episode for a picture nobody sees
PICTURE_SECONDS = 60.0
# TensorBoard's HParams tab ticks 5 columns by default, those marked `differs` first: these
KEY_HPARAMS = ("controller", "controller.lr", "env", "search.budget", "seed")

_NOT_LOGGED = {"torch_threads"}  # a setting recorded with each result, not a measurement
# numbers of a row's metrics that are no result of the architecture: settings, costs (child/*, pareto.png),
# early stopping's and the cost objective's bookkeeping
_NOT_REPORTED = _NOT_LOGGED | set(COSTS) | {"stopped_epoch", "cost_factor", "over_limit"}


def logs_val_accuracy(env: TokenEnv) -> bool:
    """Whether a search on ``env`` draws ``search/val_accuracy``: unless the environment says its reward is the
    accuracy itself (``ChildNetEnv.reward_is_accuracy``)."""
    return not env.reward_is_accuracy


def _differs(row: dict[str, Any]) -> bool:
    """A trained child whose reward is not its validation accuracy (a failed child's reward is the failure's)."""
    return not row["failed"] and row["val_accuracy"] != row["reward"]


class Monitor:
    """TensorBoard (with ``run_dir``), a tqdm bar (with ``progress``) and, at :meth:`close`, the hparams.
    ``log_val_accuracy=False`` leaves out ``search/val_accuracy`` (an environment whose reward is the accuracy)."""

    def __init__(
        self,
        run_dir: Path | None,
        state: SearchState,
        budget: int,
        max_minutes: float | None = None,
        progress: bool = False,
        hparams: dict[str, Any] | None = None,
        log_val_accuracy: bool = True,
        costs: Sequence[str] = COSTS,
    ) -> None:
        self.max_minutes = max_minutes
        self.costs = tuple(costs)  # the environment's recorded costs: child/*, never among the reported numbers
        # once logged, logged for every episode: a tag with gaps draws a misleading curve. An environment that
        # cannot tell (a user's evaluator with its own score) logs it from the first trained child whose reward differs
        self.log_val_accuracy = log_val_accuracy or any(_differs(r) for r in state.history)
        self.hparams = hparams
        self.writer: Any = None
        self.bar: Any = None
        if run_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops what an interrupted session logged after the checkpoint, from the step of the
            # first episode not in it on. Tags against distinct architectures have smaller steps: the resumed
            # session logs the same values at the same steps again (one seed, one search)
            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=state.episode + 1 if state.episode else None)
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=budget, initial=state.distinct, desc="architectures", unit="arch",
                            dynamic_ncols=True, mininterval=1.0)  # fmt: skip
        self._top = top_rows(state.history)
        self._charts: dict[str, list[str]] = {}  # overview chart -> the tags it draws
        self._positions: list[str] = []  # decision positions in the policy's order, each a chart
        self._layout_changed = False
        self._pictured: tuple[int, int] | None = None  # (best's index, distinct architectures) when last drawn
        self._pictured_at = time.monotonic()

    def episode(
        self,
        state: SearchState,
        row: dict[str, Any],
        best: dict[str, Any] | None,
        metrics: dict[str, float],
        policy: Policy,
    ) -> None:
        """Log the episode that just ended (``row``; ``best`` is the best row so far, None while every child was
        over a constraint's limit: the best's tags start with the first child within it) and the policy's
        update metrics, if it updated."""
        if self.bar is not None:
            self.bar.n = state.distinct
            postfix = {"best": f"{best['reward']:.4f}" if best else "-", "episodes": state.episode}
            if self.max_minutes is not None:  # the bar's own estimate knows nothing of the time cap
                postfix["time_cap_left"] = f"{max(0.0, self.max_minutes - state.elapsed / 60):.1f}min"
            self.bar.set_postfix(postfix)
        if self.writer is None:
            return
        step, add = state.episode, self.writer.add_scalar
        add("search/reward", row["reward"], step)
        if best is not None:
            add("search/best_reward", best["reward"], step)
        self.log_val_accuracy = self.log_val_accuracy or _differs(row)
        if self.log_val_accuracy:
            add("search/val_accuracy", row["val_accuracy"], step)
        add("search/distinct_architectures", state.distinct, step)
        add("search/archs_per_hour", state.distinct / max(state.elapsed, 1e-9) * 3600, step)
        add("search/staleness", row.get("staleness", 0), step)  # policy updates since it was proposed
        if row["params"]:  # 0: the evaluator counts none (the synthetic one)
            add("child/params", row["params"], step)
        if row["seconds"]:  # 0: nothing trained now (reused, cached, a lookup table)
            add("child/train_seconds", row["seconds"], step)
        add("child/stopped", row.get("stopped", 0), step)  # 1: early stopping ended it, its score is partial
        for name, value in json.loads(row["metrics"]).items():  # what the evaluator reports, e.g. val_perplexity
            if name not in _NOT_LOGGED:
                add(f"child/{name}", value, step)
        if best is row:
            self.writer.add_text("search/best_architecture", best_text(row, self.costs), step)
        for name, value in metrics.items():
            add(f"controller/{name}", value, step)
        if metrics:
            for decision, probs in policy.choice_probabilities().items():
                labels = policy.spec.choice_labels[policy.spec.decision_names.index(decision)]
                for label, p in zip(labels, probs):
                    add(f"policy/{decision}/{label}", p, step)
        distinct = state.distinct
        if not row["reused"]:  # a reused architecture adds no point against distinct architectures
            self._overview(CHART_REWARD, f"{OVERVIEW}/reward", row["reward"], distinct)
            if best is not None:
                self._overview(CHART_REWARD, f"{OVERVIEW}/reward_best", best["reward"], distinct)
                for name, value in reported(best, self.costs).items():
                    self._overview(CHART_REPORTED.format(name=name), f"{OVERVIEW}/{name}_of_best", value, distinct)
            if self._enters_top(row):
                self.writer.add_text("search/top_architectures", top_table(self._top, self.costs), step)
        if metrics:
            self._policy(metrics, policy, distinct)
        if step % HISTOGRAM_EVERY == 0:
            self._histogram(state)
        if time.monotonic() - self._pictured_at >= PICTURE_SECONDS:
            self._pictures(state)
        if self._layout_changed:
            self.writer.add_custom_scalars(self.layout())
            self._layout_changed = False

    def _overview(self, chart: str, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, value, step)
        tags = self._charts.setdefault(chart, [])
        if tag not in tags:
            tags.append(tag)
            self._layout_changed = True

    def _policy(self, metrics: dict[str, float], policy: Policy, step: int) -> None:
        """At an update: the overview's baseline, normalised entropy and greedy probability, and the
        probabilities at each decision position (all against distinct architectures)."""
        if "baseline" in metrics:
            self._overview(CHART_REWARD, f"{OVERVIEW}/reward_baseline", metrics["baseline"], step)
        if "entropy_normalised" in metrics:
            self._overview(CHART_POLICY, f"{POLICY}/entropy_normalised", metrics["entropy_normalised"], step)
        greedy = policy.greedy_probability()
        if greedy is not None:
            self._overview(CHART_POLICY, f"{POLICY}/greedy_probability", greedy, step)
        before: str | None = None
        for label, choices, probs in policy.position_probabilities():
            for choice, p in zip(choices, probs):
                self.writer.add_scalar(f"{position_prefix(label)}{_slug(choice)}", p, step)
            if label not in self._positions:  # a depth sampled for the first time: after its predecessor
                self._positions.insert(self._positions.index(before) + 1 if before else 0, label)
                self._layout_changed = True
            before = label

    def layout(self) -> dict[str, dict[str, list[Any]]]:
        """The Custom Scalars layout (``SummaryWriter.add_custom_scalars``'s format) of the charts so far: a
        chart's tags are regular expressions, each matching its tags exactly or, for a position, by prefix."""
        overview = {
            chart: ["Multiline", [f"^{re.escape(tag)}$" for tag in tags]] for chart, tags in self._charts.items()
        }
        layout = {LAYOUT_OVERVIEW: overview}
        if self._positions:
            layout[LAYOUT_POSITIONS] = {
                label: ["Multiline", [f"^{re.escape(position_prefix(label))}"]] for label in self._positions
            }
        return layout

    def _enters_top(self, row: dict[str, Any]) -> bool:
        """Add a newly evaluated architecture to the ``TOP_K`` best if it belongs there; say whether it did."""
        top = top_rows([*self._top, row])
        entered, self._top = top != self._top, top
        return entered

    def _histogram(self, state: SearchState) -> None:
        rewards = np.asarray([r["reward"] for r in state.history[-HISTOGRAM_WINDOW:]], dtype=np.float64)
        self.writer.add_histogram("search/reward_distribution", rewards, state.episode)

    def _pictures(self, state: SearchState) -> None:
        """The best architecture's drawing (when the best changed) and reward against parameters (when new
        architectures came), at step = episodes. A drawing that fails warns: it must not stop a search."""
        self._pictured_at = time.monotonic()
        best = state.best
        if best is None:
            return
        before, self._pictured = self._pictured, (best["index"], state.distinct)
        try:
            if best.get("arch") and (before is None or before[0] != best["index"]):
                figure = architecture_figure(best["arch"], f"best so far: reward {best['reward']:.4f}, "
                                             f"episode {best['episode']}")  # fmt: skip
                self.writer.add_image("search/best_architecture_graph", _rgb(figure), state.episode, dataformats="HWC")
            rows = [r for r in state.history if not r["reused"] and not r["failed"] and r["params"] > 0]
            if rows and (before is None or before[1] != state.distinct):
                self.writer.add_image("search/reward_vs_params", _rgb(reward_params_figure(rows)), state.episode,
                                      dataformats="HWC")  # fmt: skip
        except Exception as exc:  # a picture is never worth a search
            warnings.warn(f"TensorBoard image not written: {type(exc).__name__}: {exc}", stacklevel=2)

    def shared_step(self, step: int, metrics: dict[str, float]) -> None:
        """Weight sharing's shared-weights phase: the step's loss, the sampled child's mini-batch accuracy and
        the learning rate, against the number of shared-weights steps."""
        if self.writer is not None:
            for name in ("loss", "accuracy", "lr"):
                self.writer.add_scalar(f"shared/{name}", metrics[name], step)

    def derived(self, step: int, derived: Any) -> None:
        """Weight sharing's derivation: the best candidate's shared-weights validation accuracy, every candidate's
        as a histogram, and the best architecture."""
        if self.writer is None:
            return
        scores = [score for score, _ in derived.candidates]
        self.writer.add_scalar("derive/best_shared_accuracy", scores[0], step)
        self.writer.add_histogram("derive/shared_accuracy", np.asarray(scores), step)
        self.writer.add_text("derive/best_architecture", _code_block(_arch_lines(derived.best[1].describe())), step)

    def close(self, state: SearchState) -> None:
        """The last histogram and images, and the hparams with the best's numbers; closes the files."""
        if self.bar is not None:
            self.bar.close()
        if self.writer is None:
            return
        if state.history and state.episode % HISTOGRAM_EVERY:
            self._histogram(state)
        self._pictures(state)
        best = state.best
        if best is not None and self.hparams is not None:
            values = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in self.hparams.items()}
            metrics = {"hparam/best_reward": best["reward"], "hparam/best_val_accuracy": best["val_accuracy"]}
            metrics |= {f"hparam/best_{name}": value for name, value in reported(best, self.costs).items()}
            metrics["hparam/distinct_architectures"] = state.distinct
            self._write_hparams(values, metrics, state.episode)
        self.writer.close()

    def _write_hparams(self, values: dict[str, Any], metrics: dict[str, float], step: int) -> None:
        """What ``SummaryWriter.add_hparams`` writes, in this run's folder, with the :data:`KEY_HPARAMS` marked
        ``differs``: TensorBoard sorts those first and ticks the first five."""
        from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
        from torch.utils.tensorboard.summary import hparams

        experiment, start, end = hparams(values, metrics)
        data = experiment.value[0].metadata.plugin_data
        content = HParamsPluginData.FromString(data.content)
        for info in content.experiment.hparam_infos:
            info.differs = info.name in KEY_HPARAMS
        data.content = content.SerializeToString()
        file_writer = self.writer._get_file_writer()  # add_hparams's own way to write a raw summary
        for summary in (experiment, start, end):
            file_writer.add_summary(summary, step)
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)


def env_hparams(env: gym.Env) -> dict[str, str]:
    """The hparams that name what a run searched: ``env`` (the class, space and data set, e.g. ``ChildNetEnv:
    cnn1d on mnist1d``), ``env.space`` and ``env.dataset`` (the evaluator's ``describe_data()``: absent where it
    has no data set, as the synthetic one; a lookup table's is its file's name, ``cifar10`` for NAS-Bench-201's)."""
    base = token_env(env)
    space = base.space.name
    dataset = base.evaluator.describe_data()
    names = {"env": type(base).__name__ + (f": {space}" if space else "") + (f" on {dataset}" if dataset else "")}
    names |= {key: value for key, value in (("env.space", space), ("env.dataset", dataset)) if value}
    return names


def reported(row: dict[str, Any], costs: Sequence[str] = COSTS) -> dict[str, float]:
    """The numbers the evaluator reported for a row's architecture (NAS-Bench-201's ``valid_acc_200ep`` and
    ``test_acc_200ep``, a language model's ``val_perplexity``), without settings and ``costs`` (the counted ones,
    and a cost table's column: ``TokenEnv.recorded_costs``)."""
    return {k: v for k, v in json.loads(row["metrics"]).items() if k not in _NOT_REPORTED and k not in costs}


def position_prefix(label: str) -> str:
    """The tags of a decision position, ``policy_position/SLUG/`` + its choice: ``layer 2 / filters`` ->
    ``policy_position/layer_2_filters/``."""
    return f"{POSITIONS}/{_slug(label)}/"


@functools.cache  # a few hundred labels, asked at every update
def _slug(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("_")


def top_rows(history: list[dict[str, Any]], k: int = TOP_K) -> list[dict[str, Any]]:
    """The ``k`` best distinct architectures that did not fail, best first (ties: the first found)."""
    first = [r for r in history if not r["reused"] and not r["failed"]]
    return sorted(first, key=lambda r: -r["reward"])[:k]


def _arch_lines(architecture: str) -> list[str]:
    """A readable architecture, one layer (or one NAS-Bench-201 node) per line."""
    return re.split(r" (?=\d+:\[)|\+(?=\|)", architecture)


def _code_block(lines: list[str]) -> str:
    """Markdown code: the Text tab shows it as it is (no ``[..](..)`` read as a link)."""
    return "```\n" + "\n".join(lines) + "\n```"


def best_text(row: dict[str, Any], costs: Sequence[str] = COSTS) -> str:
    """``search/best_architecture``: the best's numbers and its architecture, one layer per line, as code."""
    numbers = [f"reward {row['reward']:.4f}", f"val_accuracy {row['val_accuracy']:.4f}"]
    if row["params"]:
        numbers.append(f"{row['params']:,} parameters")
    numbers += [f"{name} {value:g}" for name, value in reported(row, costs).items()]
    found = f"found at episode {row['episode']} (history.csv's numbering)"
    return _code_block(["   ".join(numbers), found, "", *_arch_lines(row["architecture"])])


def top_table(rows: list[dict[str, Any]], costs: Sequence[str] = COSTS) -> str:
    """``search/top_architectures``: a Markdown table of ``rows``, each architecture a code span."""
    names = list(dict.fromkeys(name for r in rows for name in reported(r, costs)))
    params = any(r["params"] for r in rows)
    header = ["rank", "reward", "val_accuracy", *(["params"] if params else []), *names, "episode", "architecture"]
    lines = ["| " + " | ".join(header) + " |", "|" + " ---: |" * (len(header) - 1) + " --- |"]
    for rank, r in enumerate(rows, start=1):
        metrics = reported(r, costs)
        cells = [str(rank), f"{r['reward']:.4f}", f"{r['val_accuracy']:.4f}"]
        cells += [f"{r['params']:,}"] if params else []
        cells += [f"{metrics[n]:g}" if n in metrics else "" for n in names]
        cells += [str(r["episode"]), f"`{r['architecture']}`"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _rgb(figure: Any) -> np.ndarray:
    """A matplotlib figure as an (H, W, 3) uint8 image."""
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def _figure(width: float, height: float) -> Any:
    """A figure of the object API with its own Agg canvas: no global backend is chosen for the caller."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def architecture_figure(arch: dict[str, Any], title: str) -> Any:
    """A drawing of an architecture (``Architecture.to_dict()``) from the graph its family describes
    (:meth:`~nasrl.env.spaces.family.NetworkFamily.graph`): a ``row`` of nodes with an operation on each edge
    (NAS-Bench-201's cell), or a ``column`` of layers from the input down to the output, an arc on the left for
    each connection (Zoph & Le's skips, a recurrent cell's inputs)."""
    record = Architecture.from_dict(arch)
    graph = record.family.graph(record)
    return _row_figure(graph, title) if graph.layout == "row" else _column_figure(graph, title)


def _column_figure(graph: Graph, title: str) -> Any:
    """Boxes from the input (node 0) down to the output (the last node), the ends shaded, an arc per edge."""
    labels = graph.nodes
    n = len(labels) - 2
    figure = _figure(7.0, 0.45 * (n + 2) + 0.7)
    ax = figure.add_axes((0.0, 0.0, 1.0, 1.0 - 0.45 / figure.get_figheight()))
    ax.set_axis_off()
    ax.set_xlim(-1.2, 8.8)
    ax.set_ylim(-(n + 1) - 0.6, 0.6)
    boxes = [
        ax.text(0.0, -k, label, ha="left", va="center", family="monospace", fontsize=9,
                bbox={"boxstyle": "round,pad=0.3", "fc": "#dde7f3" if 0 < k <= n else "#eeeeee", "ec": "0.4"})
        for k, label in enumerate(labels)
    ]  # fmt: skip
    for edge in graph.edges:
        ax.annotate("", xy=(0.0, 0.5), xycoords=boxes[edge.target], xytext=(0.0, 0.5), textcoords=boxes[edge.source],
                    arrowprops={"arrowstyle": "-|>", "color": "0.3", "lw": 1.0, "shrinkA": 4, "shrinkB": 4,
                                "connectionstyle": "arc3,rad=0.5"})  # fmt: skip
    figure.suptitle(title, fontsize=10)
    return figure


def _row_figure(graph: Graph, title: str) -> Any:
    """Nodes left to right (captions beneath the two ends), an arrow per edge with its label (a cut edge,
    such as NAS-Bench-201's ``none``, dotted)."""
    last = len(graph.nodes) - 1
    figure = _figure(7.0, 3.0)
    ax = figure.add_axes((0.0, 0.0, 1.0, 0.88))
    ax.set_axis_off()
    ax.set_xlim(-0.8, 2.0 * last + 0.8)
    ax.set_ylim(-1.6, 1.3)
    ax.set_aspect("equal")
    for node, label in enumerate(graph.nodes):
        ax.text(2.0 * node, 0.0, label, ha="center", va="center", fontsize=11,
                bbox={"boxstyle": "circle,pad=0.3", "fc": "#dde7f3", "ec": "0.3"})  # fmt: skip
    if graph.captions is not None:
        ax.text(0.0, -0.45, graph.captions[0], ha="center", va="top", fontsize=8, color="0.4")
        ax.text(2.0 * last, -0.45, graph.captions[1], ha="center", va="top", fontsize=8, color="0.4")
    for edge in graph.edges:
        source, target = edge.source, edge.target
        span = target - source
        # adjacent nodes straight, two apart above, longer edges below
        rad = 0.0 if span == 1 else (-0.35 if span == 2 else 0.35)
        style = {"color": "0.6", "linestyle": ":"} if edge.cut else {"color": "0.2"}
        ax.annotate("", xy=(2.0 * target, 0.0), xytext=(2.0 * source, 0.0),
                    arrowprops={"arrowstyle": "-|>", "shrinkA": 13, "shrinkB": 13, "lw": 1.2,
                                "connectionstyle": f"arc3,rad={rad}", **style})  # fmt: skip
        # the arc's middle (equal aspect): the chord's middle moved by rad * chord length / 2, to the chord's right
        y = -rad * span if span > 1 else 0.18
        ax.text(float(source + target), y, edge.label, ha="center", va="center", fontsize=8, color=style["color"],
                bbox={"fc": "white", "ec": "none", "pad": 1.0})  # fmt: skip
    figure.suptitle(title, fontsize=10)
    return figure


def reward_params_figure(rows: list[dict[str, Any]]) -> Any:
    """Reward against parameters (log scale) of the architectures evaluated, coloured by when they were found,
    the best starred."""
    figure = _figure(6.0, 4.0)
    ax = figure.subplots()
    points = ax.scatter([r["params"] for r in rows], [r["reward"] for r in rows], c=[r["index"] for r in rows],
                        cmap="viridis", s=14)  # fmt: skip
    figure.colorbar(points, ax=ax, label="found at (distinct architectures)", fraction=0.05, pad=0.02)
    best = max(rows, key=lambda r: r["reward"])
    ax.scatter([best["params"]], [best["reward"]], marker="*", s=160, color="tab:red", zorder=3, label="best")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("reward")
    ax.set_title(f"reward against parameters: {len(rows)} architectures", fontsize=10)
    ax.legend(loc="best", fontsize=8)
    figure.subplots_adjust(left=0.12, right=0.9, bottom=0.13, top=0.92)  # fixed: tight_layout costs 0.3 s
    return figure
