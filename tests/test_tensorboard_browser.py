"""The TensorBoard first screen in a real browser: TensorBoard on 127.0.0.1 over a tiny run, read by headless
Chromium through Selenium at a laptop's viewport (1280x800). Skipped where Chromium, ChromeDriver or Selenium is
missing (`.ci/run` installs Debian's chromium and chromium-driver where it can; Selenium is in the dev extra)."""

from __future__ import annotations

import csv
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import run_script
from nasrl.controller import monitor

VIEWPORT = {"width": 1280, "height": 800}
WAIT = 90.0  # seconds: generous, a busy machine's TensorBoard and Chromium start slowly; no step waits longer
# Without the network flags Chromium's calls to Google's services, refused by a closed network, stall it
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage")  # fmt: skip
SERVING = re.compile(r"TensorBoard \S+ at (http://127\.0\.0\.1:\d+/)")

# The Time Series dashboard (Angular, no shadow DOM): its tag groups in order, and each card's tag, box and data
# table (a header row, then a row per run). Cards far below the viewport are lazily rendered: tag null.
TIME_SERIES = """
const box = e => { const b = e.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; };
const cells = row => [...row.children].map(c => c.innerText.trim());
return {
  hash: location.hash,
  groups: [...document.querySelectorAll('metrics-card-groups .card-group .group-title')]
    .map(e => e.textContent.trim()),
  cards: [...document.querySelectorAll('metrics-card-groups card-view')].map(card => {
    const tag = card.querySelector('tb-truncated-path.tag');
    const table = card.querySelector('.data-table');
    return {tag: tag && tag.getAttribute('title'), box: box(card), table: table ? [...table.children].map(cells) : []};
  }),
};
"""
# The Custom Scalars dashboard (Polymer): its categories and charts in its shadow root, each chart with its box and
# the tags (and runs) its regexes matched, listed under "Matches" (each entry led by the line's marker symbol).
# The walk goes down the named shadow roots only: a walk of them all takes seconds (each chart's SVG)
CUSTOM_SCALARS = """
const box = e => { const b = e.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; };
const shadow = (e, selector) => (e && e.shadowRoot ? [...e.shadowRoot.querySelectorAll(selector)] : []);
const dashboard = document.querySelector('tf-custom-scalar-dashboard');
return {
  hash: location.hash,
  categories: shadow(dashboard, 'tf-category-paginated-view').map(view => {
    const name = shadow(view, 'span.category-name')[0];
    return {title: name ? name.textContent.trim() : null, box: name ? box(name) : null};
  }),
  charts: shadow(dashboard, 'tf-custom-scalar-multi-line-chart-card').map(card => {
    const heading = shadow(shadow(card, 'tf-card-heading')[0], '.heading-label')[0];
    return {title: heading ? heading.textContent.trim() : null, box: box(card),
            matches: shadow(card, '.match-list-entry')
              .map(e => e.textContent.trim().split(/\\s+/).slice(-2).join(' '))};
  }),
};
"""


def within(box: list[float], top: float = 0.0) -> bool:
    """``box`` (left, top, right, bottom) lies wholly inside the viewport, below ``top``."""
    left, upper, right, lower = box
    return left >= 0 and upper >= top and right <= VIEWPORT["width"] and lower <= VIEWPORT["height"]


def browser_binaries() -> tuple[str, str]:
    """Chromium and ChromeDriver, or a skip naming what is missing."""
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not chromium or not chromedriver:
        pytest.skip("no Chromium or no ChromeDriver (Debian: apt-get install chromium chromium-driver)")
    return chromium, chromedriver


def start_tensorboard(logdir: Path, lines: queue.Queue[str]) -> subprocess.Popen[str]:
    """TensorBoard on 127.0.0.1 at a port the system picks (``--port 0``); its stderr, where it says the address,
    drained into ``lines`` by a thread (a full pipe would block it). A session of its own: the finaliser ends
    it and its data server together."""
    args = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1", "--port", "0"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put("")  # end of stream: it exited

    threading.Thread(target=drain, daemon=True).start()
    return proc


def address(lines: queue.Queue[str], deadline: float) -> str:
    """The address TensorBoard says it serves at, read off its stderr."""
    said: list[str] = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if match := SERVING.search(line):
            return match.group(1)
        if not line:
            raise AssertionError("TensorBoard exited before serving:\n" + "".join(said))
        said.append(line)
    raise AssertionError(f"TensorBoard did not say its address within {WAIT:.0f} s:\n" + "".join(said))


def wait_for_tag(url: str, tag: str, deadline: float) -> None:
    """Until TensorBoard's scalars API lists ``tag``: it reads the event files after it starts serving, and a
    page opened before would show no data until its 30 s reload."""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "data/plugin/scalars/tags", timeout=10) as response:
                if any(tag in tags for tags in json.load(response).values()):
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not ready yet
        time.sleep(0.2)  # a poll interval, not a guess at how long loading takes
    raise AssertionError(f"TensorBoard did not list {tag} within {WAIT:.0f} s")


def stop(proc: subprocess.Popen[str]) -> None:
    """End TensorBoard's session (it and its data server); kill it if SIGTERM is not enough."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue


def start_browser(chromium: str, chromedriver: str, profile: Path) -> Any:
    """Headless Chromium through ChromeDriver, its page 1280x800, a fresh profile in ``profile``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    # the page's own size, not the window's: a headless window keeps some of its height for the browser's bars
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**VIEWPORT, "deviceScaleFactor": 1, "mobile": False})
    return driver


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Iterator[tuple[Any, str, float]]:
    """(a Selenium driver of headless Chromium, TensorBoard's address, the run's best reward) over nasrl-train on
    the synthetic environment (mlp space): 8 architectures, 4 REINFORCE updates."""
    chromium, chromedriver = browser_binaries()
    folder = tmp_path_factory.mktemp("tb_browser")
    # the mlp space: 11 decision positions, so 11 charts in the second category (cnn1d's 30 take seconds to draw)
    overrides = ["env=synthetic", "env.space=mlp", "env.evaluator.target=[2,1,0,3,1,2,4]", "search.budget=8",
                 "controller.batch_size=2", "search.progress=false", "seed=1"]  # fmt: skip
    result = run_script("train.py", f"hydra.run.dir={folder / 'run'}", *overrides, cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(folder / "run" / "history.csv") as fh:
        best = max(float(row["reward"]) for row in csv.DictReader(fh))

    lines: queue.Queue[str] = queue.Queue()
    tensorboard = start_tensorboard(folder / "run", lines)
    driver = None
    try:
        driver = start_browser(chromium, chromedriver, folder / "chromium")  # while TensorBoard starts
        deadline = time.monotonic() + WAIT
        url = address(lines, deadline)
        wait_for_tag(url, f"{monitor.OVERVIEW}/reward", deadline)
        yield driver, url, best
    finally:
        if driver is not None:
            driver.quit()
        stop(tensorboard)


def open_dashboard(driver: Any, url: str, script: str, ready: Any) -> dict:
    """Go to ``url`` and return what ``script`` reads once ``ready(reading)`` holds. From another of TensorBoard's
    dashboards only the hash changes: TensorBoard switches the dashboard, as a click on its tab does."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    reading: dict = {}

    def done(d: Any) -> bool:
        reading.update(d.execute_script(script))
        return bool(ready(reading))

    WebDriverWait(driver, WAIT, poll_frequency=0.2).until(done)
    return reading


def card_of(reading: dict, tag: str) -> dict:
    return next(c for c in reading["cards"] if c["tag"] == tag)


def latest(card: dict) -> dict[str, str]:
    """A card's data table, header to the first run's cells: Run, Smoothed, Value, Step, Relative."""
    header, row = card["table"][0], card["table"][1]
    return dict(zip(header, row))


@pytest.fixture(scope="module")
def time_series(page) -> tuple[dict, float]:
    """What the default dashboard shows once the overview's reward_best chart has its data, and the best reward."""
    driver, url, best = page

    def best_card_drawn(reading: dict) -> bool:  # its data table appears once the chart has its data
        cards = [c for c in reading["cards"] if c["tag"] == f"{monitor.OVERVIEW}/reward_best"]
        return bool(cards) and len(cards[0]["table"]) > 1

    return open_dashboard(driver, url, TIME_SERIES, best_card_drawn), best


def on_first_screen(reading: dict) -> list[dict]:
    """The cards wholly or partly on the first screen (the viewport, unscrolled)."""
    return [c for c in reading["cards"] if c["box"][1] < VIEWPORT["height"]]


@pytest.mark.slow
def test_the_default_dashboard_opens_on_the_overview_group_with_its_charts_on_the_first_screen(time_series) -> None:
    reading, best = time_series
    assert reading["hash"] == "#timeseries"  # TensorBoard's default first screen
    assert reading["groups"][0] == monitor.OVERVIEW
    assert {"child", "controller", "search", monitor.POSITIONS} <= set(reading["groups"][1:])
    # all the cards on the first screen are the overview's (sorted by name: reward, reward_baseline, reward_best),
    # the first row wholly
    shown = on_first_screen(reading)
    assert [c["tag"] for c in shown][:2] == [f"{monitor.OVERVIEW}/reward", f"{monitor.OVERVIEW}/reward_baseline"]
    assert all(c["tag"].startswith(f"{monitor.OVERVIEW}/") for c in shown)
    assert within(shown[0]["box"]) and within(shown[1]["box"])
    # the best so far at the last of the 8 distinct architectures, as the card's table shows it
    table = latest(card_of(reading, f"{monitor.OVERVIEW}/reward_best"))
    assert table["Step"] == "8" and float(table["Value"]) == pytest.approx(best, abs=5e-4)


@pytest.mark.slow
def test_the_custom_scalars_tab_shows_reward_baseline_and_best_on_one_chart_on_the_first_screen(page) -> None:
    driver, url, _ = page

    def overview_matched(reading: dict) -> bool:  # each chart lists its matches once it has fetched its tags
        matches = {c["title"]: len(c["matches"]) for c in reading["charts"]}
        return matches.get(monitor.CHART_REWARD) == 3 and matches.get(monitor.CHART_POLICY) == 2

    reading = open_dashboard(driver, url + "#custom_scalars", CUSTOM_SCALARS, overview_matched)
    assert reading["hash"] == "#custom_scalars"
    assert [c["title"] for c in reading["categories"]] == [monitor.LAYOUT_OVERVIEW, monitor.LAYOUT_POSITIONS]
    assert within(reading["categories"][0]["box"])
    charts = {c["title"]: c for c in reading["charts"]}
    reward, policy = charts[monitor.CHART_REWARD], charts[monitor.CHART_POLICY]
    # the layout's regexes matched the run's tags in the live TensorBoard (the run is its logdir: named tb)
    overview = ("reward", "reward_baseline", "reward_best")
    assert sorted(reward["matches"]) == [f"{monitor.OVERVIEW}/{n} (tb)" for n in overview]
    policy_tags = ("entropy_normalised", "greedy_probability")
    assert sorted(policy["matches"]) == [f"{monitor.POLICY}/{n} (tb)" for n in policy_tags]
    # both overview charts wholly on the first screen, below the category's title
    category_bottom = reading["categories"][0]["box"][3]
    assert within(reward["box"], top=category_bottom) and within(policy["box"], top=category_bottom)
