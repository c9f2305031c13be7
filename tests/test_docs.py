"""The documentation's own promises: a README a newcomer reads in five minutes, a site whose navigation holds
every page, and a settings table that is generated from the typed configs (so it has every setting, with the
default the code has). ``mkdocs build --strict`` in ``.ci/run`` checks links and docstrings."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import re
import sys
from typing import Any

import pytest
import yaml

from conftest import ROOT

DOCS = ROOT / "docs"


def test_the_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; the issue asks for at most 250"


def _nav_pages(nav: Any) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in _nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _nav_pages(value)]
    return []


def test_the_navigation_lists_every_page_and_only_pages_that_exist() -> None:
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.Loader)  # !!python/name tags: not run
    nav = _nav_pages(config["nav"])
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages
    assert len(nav) == len(set(nav))


@pytest.fixture(scope="module")
def settings() -> str:
    pytest.importorskip("mkdocs", reason="the docs extra (pip install -e '.[docs]') builds the site")
    spec = importlib.util.spec_from_file_location("nasrl_docs", DOCS / "hooks" / "nasrl_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module.settings_markdown()


def _row(table: str, key: str) -> list[str]:
    rows = [line for line in table.splitlines() if line.startswith(f"| `{key}` |")]
    assert rows, f"no row for {key}"
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", rows[0])[1:-1]]


def test_the_settings_table_has_every_search_setting_with_its_default_and_help(settings: str) -> None:
    from nasrl.conf.schema import RayConfig, SearchConfig

    for prefix, cls in (("search", SearchConfig), ("search.ray", RayConfig)):
        for field in dataclasses.fields(cls):
            if dataclasses.is_dataclass(field.type) or field.name == "ray":
                continue
            key, kind, default, help_text = _row(settings, f"{prefix}.{field.name}")
            shown = "null" if field.default is None else str(field.default).lower()
            assert default.strip("`").lower() == shown, (key, default)
            assert help_text, f"{key} has no help text (a comment on its field in conf/schema.py)"


def test_the_settings_table_has_every_keyword_of_the_lstm(settings: str) -> None:
    from nasrl.controller.lstm import LSTMPolicy

    parameters = inspect.signature(LSTMPolicy).parameters
    for name, parameter in parameters.items():
        if name in ("spec", "seed"):
            continue
        _, _, default, help_text = _row(settings, f"controller.{name}")
        assert default == f"`{parameter.default}`", (name, default)
        assert help_text and not help_text.startswith("see "), f"controller.{name}: LSTMPolicy's Args documents it"
    assert "`controller.tanh_constant` | `float` or null | `2.5` |" in settings


def test_the_settings_table_names_what_each_yaml_sets(settings: str) -> None:
    assert "`env=digits` sets `space=mlp`, `evaluator.dataset.name=digits`, `evaluator.epochs=20`" in settings
    for group in ("lstm", "lstm_gp", "random", "evolution"):
        assert f"`controller={group}`" in settings
    for env in ("mnist1d", "digits", "cifar10", "synthetic", "nb201", "lm", "lm_ws", "mnist1d_ws"):
        assert f"`env={env}`" in settings
