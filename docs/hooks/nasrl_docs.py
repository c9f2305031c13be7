"""MkDocs hooks of nasrl's site (``hooks:`` in mkdocs.yml).

- mkdocstrings reads ``nasrl.*`` from a temporary tree of links (``nasrl/env -> env``, ...): the package's
  folders are top-level in the repository and its editable install maps them with an import hook, which griffe's
  static loader does not follow (``.ci/typecheck.sh`` does the same for mypy).
- ``<!-- nasrl:settings -->`` in a page becomes the table of every setting, generated from the typed configs
  (``conf/schema.py`` and the constructors it reads), so the table cannot disagree with the code.
- ``<!-- nasrl:include FILE -->`` becomes the text of FILE at the repository's root (the changelog).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import re
import tempfile
import tokenize
import typing
from pathlib import Path
from typing import Any

import yaml
from mkdocs.plugins import event_priority

ROOT = Path(__file__).resolve().parents[2]
PARTS = ("env", "controller", "conf", "scripts")
SETTINGS_MARK = "<!-- nasrl:settings -->"
INCLUDE = re.compile(r"<!-- nasrl:include (\S+) -->")
_tree: tempfile.TemporaryDirectory[str] | None = None


@event_priority(100)  # before mkdocstrings reads its handler's paths
def on_config(config: Any) -> Any:
    global _tree
    _tree = tempfile.TemporaryDirectory(prefix="nasrl-docs-")
    package = Path(_tree.name) / "nasrl"
    package.mkdir()
    for part in PARTS:
        (package / part).symlink_to(ROOT / part, target_is_directory=True)
    handler = config.plugins["mkdocstrings"].config["handlers"].setdefault("python", {})
    handler["paths"] = [_tree.name]
    return config


def on_post_build(config: Any) -> None:
    if _tree is not None:
        _tree.cleanup()


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if SETTINGS_MARK in markdown:
        markdown = markdown.replace(SETTINGS_MARK, settings_markdown())

    def include(match: re.Match[str]) -> str:
        path = ROOT / match.group(1)
        if not path.is_file():
            return f"*{match.group(1)} is not in this checkout.*"
        text = path.read_text()
        return re.sub(r"\A# .*\n", "", text)  # the page has its own title

    return INCLUDE.sub(include, markdown)


# --- the settings table ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    key: str
    type: str
    default: str
    help: str


def settings_markdown() -> str:
    """Every setting of ``nasrl-train``, ``nasrl-benchmark`` and ``nasrl-retrain``: one table per section and
    per schema of a config group, with the values each YAML of the group sets on top of its schema."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from nasrl.conf import schema

    schema.register_configs()
    repo = ConfigStore.instance().repo
    functions = _schema_functions(schema)
    out: list[str] = []

    def table(title: str, intro: str, rows: list[Row]) -> None:
        out.append(f"### {title}\n\n{intro}\n\n| setting | type | default | what it does |\n| --- | --- | --- | --- |")
        out.extend(f"| `{r.key}` | {r.type} | {r.default} | {r.help} |" for r in rows)
        out.append("")

    train = [r for r in walk(schema.TrainConfig, "", functions) if not r.key.startswith(("controller", "env"))]
    table(
        "`nasrl-train`: the run and `search.*`",
        "`TrainConfig` and `SearchConfig` in `conf/schema.py`; `controller` and `env` are the groups below.",
        train,
    )
    for group, prefix in (("controller", "controller"), ("env", "env")):
        options = _group_options(group)
        for base in sorted({b for b, _ in options.values()}, key=_base_order):
            node = repo[group][f"{base}.yaml"].node
            cls = OmegaConf.get_type(node)
            target = node.get("_target_", "")
            users = sorted(name for name, (b, _) in options.items() if b == base)
            lines = [f"`{group}={name}`" for name in users]
            intro = f"Schema `{base}`, the keywords of `{target}`, used by " + ", ".join(lines) + "."
            sets = [
                f"`{group}={name}` sets " + ", ".join(f"`{k}={v}`" for k, v in values.items())
                for name, (b, values) in sorted(options.items())
                if b == base and values
            ]
            if sets:
                intro += "\n\n" + ";\n".join(sets) + "."
            table(f"`{group}.*`: {', '.join(users)}", intro, walk(cls, prefix, functions))
    bench = [r for r in walk(schema.BenchmarkConfig, "", functions) if not r.key.startswith("env")]
    table(
        "`nasrl-benchmark`",
        "`BenchmarkConfig` and `BenchmarkSettings`; its `env` is `env=nb201` above, and `strategies.NAME` holds "
        "one controller config per strategy (`strategies.lstm.lr=0.01`).",
        bench,
    )
    retrain = schema._retrain_config(schema.Recipe, schema.LMRecipe)
    table(
        "`nasrl-retrain`",
        "`conf/retrain.yaml`: the architecture, and the recipes `Recipe` (`retrain.*`) and `LMRecipe` (`lm.*`, "
        "recurrent cells).",
        walk(retrain, "", functions, source=schema._retrain_config),
    )
    return "\n".join(out)


def _schema_functions(schema: Any) -> dict[str, Any]:
    """The functions whose keywords make a schema without ``_target_`` (the data set nodes)."""
    from nasrl.env.evaluators.data import load_dataset
    from nasrl.env.evaluators.text import load_corpus

    return {schema.dataset_schema().__name__: load_dataset, schema.corpus_schema().__name__: load_corpus}


def _group_options(group: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each YAML of ``conf/GROUP/``: its base schema and the flattened values it sets."""
    options = {}
    for path in sorted((ROOT / "conf" / group).glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        defaults = data.pop("defaults", [])
        base = next((d for d in defaults if isinstance(d, str) and d.startswith("base_")), "")
        if base:
            options[path.stem] = (base, _flatten(data))
    return options


def _base_order(base: str) -> tuple[int, str]:
    first = ("base_lstm", "base_childnet")
    return (0 if base in first else 1, base)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = _value(value)
    return flat


def walk(cls: type, prefix: str, functions: dict[str, Any], source: Any = None) -> list[Row]:
    """Rows for the fields of the dataclass ``cls`` under ``prefix``, nested dataclasses expanded. ``source``:
    the code whose comments document the fields of a dataclass made by a function (``make_dataclass``)."""
    from omegaconf import MISSING

    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    owner = _owner(cls, fields, functions)
    rows = []
    for f in fields:
        if f.name == "_target_":
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        nested = default if dataclasses.is_dataclass(default) else None
        help_text = _help(owner, cls, f.name, source)
        if nested is not None:
            rows.append(Row(key, "section", "", help_text))
            rows.extend(walk(type(nested), key, functions))
            continue
        shown = "required" if default is MISSING else f"`{_value(default)}`"
        rows.append(Row(key, _type(hints.get(f.name, Any)), shown, help_text))
    return rows


def _owner(cls: type, fields: Any, functions: dict[str, Any]) -> Any:
    """What documents the fields of ``cls``: the class its ``_target_`` names, the function of a data set
    node, or ``cls`` itself (a dataclass of conf/schema.py, documented by its comments)."""
    from hydra.utils import get_object

    for f in fields:
        if f.name == "_target_" and isinstance(f.default, str) and f.default != "???":  # ???: a slot (env=custom)
            return get_object(f.default)
    return functions.get(cls.__name__, cls)


def _type(hint: Any) -> str:
    """``int``, ``list[int]``, ``float`` or null (a table cell cannot hold ``|``)."""
    if hint is Any:
        return "any"
    args = typing.get_args(hint)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return " or ".join(_type(a) for a in rest) + " or null"
    text = getattr(hint, "__name__", None) if not args else None
    return f"`{text or str(hint).replace('typing.', '')}`"


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _help(owner: Any, cls: type, name: str, source: Any = None) -> str:
    if owner is cls:
        text = _field_comments(source or cls).get(name, "")
    else:
        text = ""
        for holder in getattr(owner, "__mro__", (owner,)):
            text = _docstring_arg(holder, name)
            if text:
                break
    if not text:  # documented in prose: the API reference (or conf/schema.py) has it
        text = f"see `{getattr(owner, '__qualname__', owner)}`"
    return _markdown_cell(text)


@functools.cache  # asked once per field: parse each class's source once
def _field_comments(cls: type) -> dict[str, str]:
    """``name: type = default  # comment`` (and comment lines just above a field) in the source of ``cls``."""
    import inspect

    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments: dict[str, str] = {}
    above: list[str] = []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# "))
            continue
        match = re.match(r"\s+(\w+)\s*:", line) or re.match(r'\s+\("(\w+)",', line)
        if match:
            trailing = [t.string.lstrip("# ") for t in _tokens(line) if t.type == tokenize.COMMENT]
            comments[match.group(1)] = " ".join(above + trailing)
        above = []
    return comments


def _tokens(line: str) -> list[tokenize.TokenInfo]:
    try:
        return list(tokenize.generate_tokens(io.StringIO(line.strip() + "\n").readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return []


def _docstring_arg(obj: Any, name: str) -> str:
    """The description of ``name`` in the ``Args`` section of ``obj``'s docstring (``a, b: text`` names
    several), else the first sentence of the docstring that names it as ``name``."""
    doc = getattr(obj, "__doc__", None) or ""
    lines = doc.expandtabs().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s*Args\b", line):
            start = next((j for j in range(i, len(lines)) if lines[j].rstrip().endswith(":")), len(lines))
            indent = None
            current: list[str] | None = None
            for entry in lines[start + 1 :]:
                if not entry.strip():
                    if current is not None:
                        break
                    continue
                width = len(entry) - len(entry.lstrip())
                indent = width if indent is None else indent
                if width < indent:
                    break
                if width == indent:
                    if current is not None:
                        break
                    names, _, text = entry.strip().partition(":")
                    if name in [n.strip() for n in names.split(",")]:
                        current = [text.strip()]
                elif current is not None:
                    current.append(entry.strip())
            if current is not None:
                return " ".join(current)
    flat = " ".join(line.strip() for line in lines)
    sentences = [s for s in re.split(r"(?<=\.)\s+", flat) if f"``{name}``" in s]
    starting = [s for s in sentences if s.startswith(f"``{name}``")]  # a sentence about it, not one naming it
    return (starting or sentences or [""])[0]


def _markdown_cell(text: str) -> str:
    text = re.sub(r":\w+:`~?([\w.]+)`", lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text)
    text = text.replace("``", "`").replace("|", "\\|")
    return text.strip()
