"""Text corpora for language modelling, at word or character level, held in memory as token ids.

Three layouts are read, from a path the user gives (nothing is downloaded here; with no path, the data root's
``text/tinyshakespeare.txt``, which ``nasrl-data tinyshakespeare`` fetches):

- ``file``: one plain UTF-8 text file, e.g. ``$NASRL_DATA/text/tinyshakespeare.txt``. Split at line
  boundaries: the lines holding the first 90% of the characters train, the next 5% validate, the last 5%
  test (``val_fraction`` and ``test_fraction``). Word level lower-cases the text and splits words from
  punctuation (``re.findall(r"\\w+|[^\\w\\s]")``).
- ``ptb``: Mikolov's Penn Treebank folder: ``ptb.train.txt``, ``ptb.valid.txt``, ``ptb.test.txt`` (word
  level, already tokenised with ``<unk>``) and ``ptb.char.train.txt``, ``ptb.char.valid.txt``,
  ``ptb.char.test.txt`` (character level: characters separated by spaces, ``_`` between words).
- ``wikitext2``: WikiText-2's ``wiki.train.tokens``, ``wiki.valid.tokens``, ``wiki.test.tokens``
  (tokenised words; character level reads their characters).

Word level keeps the ``vocab_size - 1`` most frequent training words and maps the rest to ``<unk>``, as
the 10k-word Penn Treebank does; every line ends with ``<eos>``. Character level keeps every character of
the training split (the ``vocab_size - 1`` most frequent, if there are more), with newlines as ``<eos>``.
The test split is only read by retraining (``scripts/retraining.py``), never by a search.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from nasrl.env.evaluators.data import DataError
from nasrl.env.evaluators.downloads import SHAKESPEARE, default_path

LEVELS = ("word", "char")
LAYOUTS = ("auto", "file", "ptb", "wikitext2")
UNK, EOS = "<unk>", "<eos>"
_FILES = {
    ("ptb", "word"): ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
    ("ptb", "char"): ("ptb.char.train.txt", "ptb.char.valid.txt", "ptb.char.test.txt"),
    ("wikitext2", "word"): ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"),
    ("wikitext2", "char"): ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"),
}
_WORD = re.compile(r"\w+|[^\w\s]")


@dataclass
class Corpus:
    """Token ids (1-D ``torch.long``) per split, and the vocabulary they index."""

    name: str
    level: str
    vocab: list[str]
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)


def load_corpus(
    path: str | None = None,
    level: str = "word",
    layout: str = "auto",
    vocab_size: int = 10000,
    val_fraction: float = 0.05,
    test_fraction: float = 0.05,
    max_train_tokens: int | None = None,
) -> Corpus:
    """Read the corpus at ``path`` (a file, or a folder in the ``ptb`` / ``wikitext2`` layout; ``auto``
    tells them apart by the file names; null: the data root's ``text/tinyshakespeare.txt``) at ``level``
    (``word`` or ``char``). ``max_train_tokens`` keeps
    only the start of the training split (a cheaper search).

    Args:
        layout: ``file``, ``ptb`` or ``wikitext2`` (the module's docstring describes each), or ``auto``: ``file``
            for a file, and for a folder the layout whose training file (at ``level``) it holds.
        vocab_size: the vocabulary's size, ``<unk>`` included (at least 2): the ``vocab_size - 1`` most frequent
            training tokens (words, or characters; ties in alphabetical order) are kept, the others read as ``<unk>``.
        val_fraction, test_fraction: the shares of a ``file`` corpus's characters that validate and test, each cut
            at the next line boundary (each in (0, 1), their sum below 1); ``ptb`` and ``wikitext2`` come split and
            ignore them.
    """
    if level not in LEVELS:
        raise DataError(f"text level must be one of {list(LEVELS)}, got {level!r}")
    if layout not in LAYOUTS:
        raise DataError(f"text layout must be one of {list(LAYOUTS)}, got {layout!r}")
    if vocab_size < 2:
        raise DataError(f"vocab_size must be at least 2 (one word and {UNK}), got {vocab_size}")
    root = default_path(SHAKESPEARE) if path is None else Path(path).expanduser()
    if not root.exists() and path is None:
        raise DataError(
            f"text corpus {root} does not exist: `nasrl-data tinyshakespeare` fetches it there, or set the "
            "corpus's path (env.evaluator.dataset.path) to a text file or a Penn Treebank / WikiText-2 folder"
        )
    if not root.exists():
        raise DataError(
            f"text corpus {root} does not exist: give a text file, or a folder with the Penn Treebank "
            f"({_FILES['ptb', 'word'][0]}, ...) or WikiText-2 ({_FILES['wikitext2', 'word'][0]}, ...) files"
        )
    layout = _detect(root, level) if layout == "auto" else layout
    if layout == "file":
        if not root.is_file():
            raise DataError(f"text corpus {root}: layout 'file' needs a file, got a folder")
        splits = _split_lines(_read(root), val_fraction, test_fraction, root)
    else:
        folder = root if root.is_dir() else root.parent
        names = _FILES[layout, level]
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise DataError(f"{layout} corpus not found: expected {list(names)} in {folder}; missing {missing}")
        splits = [_read(folder / n).splitlines() for n in names]
    streams = [_tokens(lines, level, layout) for lines in splits]
    for name, stream in zip(("train", "validation", "test"), streams):
        if len(stream) < 2:
            raise DataError(f"text corpus {root}: the {name} split holds {len(stream)} tokens; it needs at least 2")
    vocab = _vocabulary(streams[0], vocab_size, level)
    index = {t: i for i, t in enumerate(vocab)}
    unk = index.get(UNK, 0)
    ids = [torch.tensor([index.get(t, unk) for t in s], dtype=torch.long) for s in streams]
    if max_train_tokens is not None:
        ids[0] = ids[0][:max_train_tokens]
    name = f"{root.name if layout == 'file' else layout}-{level}"
    return Corpus(name, level, vocab, ids[0], ids[1], ids[2])


def _detect(root: Path, level: str) -> str:
    if root.is_file():
        return "file"
    for layout in ("ptb", "wikitext2"):
        if (root / _FILES[layout, level][0]).is_file():
            return layout
    raise DataError(
        f"text corpus folder {root} holds neither {_FILES['ptb', level][0]} (Penn Treebank) nor "
        f"{_FILES['wikitext2', level][0]} (WikiText-2); give the files or a text file"
    )


def _read(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); is it the right file?") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    if "\x00" in text:
        raise DataError(f"{path}: holds NUL bytes, so it is not a text corpus")
    return text


def _split_lines(text: str, val_fraction: float, test_fraction: float, path: Path) -> list[list[str]]:
    """Cut the lines at the first line boundary after (1 - val - test) and (1 - test) of the characters."""
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(
            "val_fraction and test_fraction must be in (0, 1) with a sum below 1, "
            f"got {val_fraction} and {test_fraction}"
        )
    lines = text.splitlines(keepends=True)
    cuts, done, out, start = [1 - val_fraction - test_fraction, 1 - test_fraction], 0, [], 0
    for i, line in enumerate(lines):
        done += len(line)
        if cuts and done >= cuts[0] * len(text):
            out.append(lines[start : i + 1])
            start, cuts = i + 1, cuts[1:]
    out.append(lines[start:])
    if len(out) != 3:
        raise DataError(f"{path}: too few lines ({len(lines)}) to split into train, validation and test")
    return [[line.rstrip("\n") for line in part] for part in out]


def _tokens(lines: list[str], level: str, layout: str) -> list[str]:
    out: list[str] = []
    for line in lines:
        if layout == "ptb" and level == "char":
            words = line.split()  # characters separated by spaces, "_" between words
        elif level == "char":
            words = list(line.strip()) if layout == "wikitext2" else list(line)
        elif layout == "file":
            words = _WORD.findall(line.lower())
        else:
            words = line.split()
        if words:
            out.extend(words)
            out.append(EOS)
    return out


def _vocabulary(train: list[str], vocab_size: int, level: str) -> list[str]:
    """``<unk>`` first, then the most frequent training tokens (ties: alphabetical), up to ``vocab_size``."""
    counts = Counter(train)
    counts.pop(UNK, None)
    ranked = sorted(counts, key=lambda t: (-counts[t], t))
    return [UNK, *ranked[: vocab_size - 1]]


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut a token stream into ``batch_size`` parallel streams: shape (length, batch_size)."""
    n = len(ids) // batch_size
    if n < 2:
        raise DataError(f"a split of {len(ids)} tokens is too short for {batch_size} parallel streams")
    return ids[: n * batch_size].view(batch_size, n).t().contiguous()
