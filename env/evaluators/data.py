"""Data sets for child training, held in memory as tensors.

Every loader returns train/validation/test splits. The validation split is carved from the training
data with a fixed permutation, so the search never sees the test split; only ``scripts/retrain.py``
reads it. Image sets are read from a folder the user already has, in torchvision's on-disk format
(``CIFAR10``: ``cifar-10-batches-py/``; ``MNIST``/``FashionMNIST``: ``<Name>/raw/*-ubyte[.gz]``), so a
folder that torchvision downloaded works as it is. Nothing is downloaded here.
"""

from __future__ import annotations

import functools
import gzip
import os
import pickle
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DATASETS = ("mnist1d", "digits", "cifar10", "mnist", "fashion_mnist")


class DataError(ValueError):
    """A data set that cannot be loaded; the message says what was expected where."""


@dataclass
class Dataset:
    """Normalised float inputs shaped (N, channels, ...) and integer labels, per split.

    ``mean`` and ``std`` (shaped (channels, 1, ...)) are the training split's statistics the inputs were
    normalised with, ``(raw - mean) / std``, where raw inputs are float32 as the data set gives them: pixels
    scaled to [0, 1] for CIFAR-10, MNIST and Fashion-MNIST, 0..16 for digits, MNIST-1D as its generator
    scales it. An exported model applies them itself (:func:`nasrl.scripts.retraining.export_model`)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: torch.Tensor | None = None  # None: not known (a Dataset built by hand)
    std: torch.Tensor | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def data_root(root: str | Path | None = None) -> Path:
    """``root`` (``~`` expanded), or else ``$NASRL_DATA``, or else ``~/.cache/nasrl``."""
    if root is not None:
        return Path(root).expanduser()
    return Path(os.environ.get("NASRL_DATA", Path.home() / ".cache" / "nasrl"))


def load_dataset(
    name: str = "mnist1d",
    root: str | Path | None = None,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    train_limit: int | None = None,
    test_examples: int | None = None,
    test_seed: int = 0,
) -> Dataset:
    """Load ``name`` (one of :data:`DATASETS`) and carve ``val_fraction`` of its training data for validation.

    ``split_seed`` seeds the shuffle that picks the validation examples (``round(val_fraction * n)`` of the
    ``n`` training examples, at least one; not stratified by class), so one seed gives one split.
    ``root`` is where image sets are read from and where MNIST-1D is cached (default ``$NASRL_DATA``
    or ``~/.cache/nasrl``). ``train_limit`` keeps only that many training examples (after the carve).
    ``test_examples`` (MNIST-1D only) replaces its 1000 test examples with that many fresh ones, drawn by
    MNIST-1D's generator with seed ``test_seed`` (:func:`mnist1d_fresh_test`): on 1000 examples one
    example is 0.1 point, too coarse to tell apart models that differ by less. Training and validation
    splits are unchanged, so a search or a retraining trains on the same data either way.
    """
    if name not in DATASETS:
        raise DataError(f"unknown data set '{name}'; accepted are {list(DATASETS)}")
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if test_examples is not None and name != "mnist1d":
        raise DataError(f"test_examples draws fresh MNIST-1D examples; data set '{name}' has its own test split")
    root = data_root(root)
    # the fresh examples first: mnist1d_fresh_test refuses bad settings before anything is loaded or drawn
    fresh = mnist1d_fresh_test(test_examples, test_seed, root) if test_examples is not None else None
    loader = {"mnist1d": _mnist1d, "digits": _digits, "cifar10": _cifar10, "mnist": _mnist, "fashion_mnist": _fashion}
    x, y, x_test, y_test = loader[name](root)
    if fresh is not None:
        x_test, y_test = fresh
    perm = np.random.default_rng(split_seed).permutation(len(x))
    n_val = max(1, int(round(len(x) * val_fraction)))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    if train_limit is not None:
        train_idx = train_idx[:train_limit]
    x_train, y_train = x[train_idx], y[train_idx]
    # Normalise with training statistics only, per channel.
    axes = (0,) + tuple(range(2, x.ndim))
    mean = x_train.mean(axis=axes, keepdims=True)
    std = x_train.std(axis=axes, keepdims=True) + 1e-8

    def prep(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((a - mean) / std).astype(np.float32))

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64))

    return Dataset(
        name=name,
        x_train=prep(x_train),
        y_train=labels(y_train),
        x_val=prep(x[val_idx]),
        y_val=labels(y[val_idx]),
        x_test=prep(x_test),
        y_test=labels(y_test),
        num_classes=int(max(y.max(), y_test.max()) + 1),
        mean=torch.from_numpy(mean[0].astype(np.float32)),
        std=torch.from_numpy(std[0].astype(np.float32)),
    )


Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _mnist1d(root: Path) -> Arrays:
    """MNIST-1D (Greydanus 2020), generated offline with its standard arguments: 4000 train, 1000 test."""

    def generate() -> dict[str, np.ndarray]:
        from mnist1d.data import get_dataset_args, make_dataset

        d = make_dataset(get_dataset_args())
        return {k: np.asarray(d[k]) for k in ("x", "y", "x_test", "y_test")}

    a = _npz_cached(root / "mnist1d.npz", generate)
    return a["x"][:, None, :], a["y"], a["x_test"][:, None, :], a["y_test"]


def _npz_cached(cache: Path, make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays saved in ``cache``, or ``make()``'s, saved there first (atomically: a rename, so that processes
    drawing the same file at once each leave a whole one). A broken file is made again, not trusted."""
    if cache.exists():
        try:
            with np.load(cache) as d:
                return {k: d[k] for k in d.files}
        except Exception:
            cache.unlink()
    arrays = make()
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, allow_pickle=False, **arrays)
    os.replace(tmp, cache)
    return arrays


MNIST1D_SEED = 42  # the seed of MNIST-1D's standard 5000 examples (mnist1d.data.get_dataset_args)


def mnist1d_fresh_test(num_examples: int, seed: int, root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``num_examples`` new MNIST-1D examples (inputs shaped (N, 1, 40), labels), drawn from the distribution
    of the standard set: its generator and arguments with seed ``seed``, in equal numbers per class, and
    scaled with the standard set's own mean and standard deviation as ``mnist1d.data.make_dataset`` scales
    it. Cached under ``root`` (default ``$NASRL_DATA``); 50,000 take about 30 s to draw."""
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 10 or num_examples % 10:
        raise DataError(f"test_examples must be a positive multiple of 10 (as many per class), got {num_examples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed == MNIST1D_SEED:
        raise DataError(f"test_seed must be an integer other than {MNIST1D_SEED} (the standard set's), got {seed!r}")
    root = data_root(root)

    def draw() -> dict[str, np.ndarray]:
        x, y = _mnist1d_raw(num_examples, seed)
        mean, std = _mnist1d_scale()
        return {"x": ((x - mean) / std)[:, None, :], "y": y}

    a = _npz_cached(root / f"mnist1d_test_{num_examples}_seed{seed}.npz", draw)
    return a["x"], a["y"]


@functools.cache
def _mnist1d_scale() -> tuple[float, float]:
    """The mean and standard deviation with which ``make_dataset`` scales the standard set (3 s to draw)."""
    standard, _ = _mnist1d_raw(5000, MNIST1D_SEED)
    return float(standard.mean()), float(standard.std())


def _mnist1d_raw(num_examples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unscaled MNIST-1D examples drawn in ``make_dataset``'s order (per class, then shuffled), so that the
    standard arguments and seed give its 5000 examples (a test checks it). The global ``random`` and numpy
    states it seeds, as ``make_dataset`` does, are put back afterwards."""
    from mnist1d.data import get_dataset_args, get_templates, transform

    args, templates = get_dataset_args(), get_templates()
    saved = random.getstate(), np.random.get_state()
    try:
        random.seed(seed)
        np.random.seed(seed)
        xs, ys = [], []
        for label, template in zip(templates["y"], templates["x"]):
            for _ in range(num_examples // len(templates["y"])):
                xs.append(transform(template, templates["t"], args)[0])
                ys.append(label)
        order = np.random.permutation(len(ys))
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
    return np.stack(xs)[order], np.stack(ys)[order]


def _digits(root: Path) -> Arrays:
    """scikit-learn's 8x8 digits (1797 images); a fixed 20% is held out as the test split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.float32)[:, None, :, :]
    y = d.target
    perm = np.random.default_rng(12345).permutation(len(x))
    n_test = len(x) // 5
    return x[perm[n_test:]], y[perm[n_test:]], x[perm[:n_test]], y[perm[:n_test]]


def _cifar10(root: Path) -> Arrays:
    folder = root / "cifar-10-batches-py"
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    _require(folder, files, "CIFAR-10 (torchvision.datasets.CIFAR10 format)")
    batches = []
    for f in files:
        try:
            with open(folder / f, "rb") as fh:
                entry = pickle.load(fh, encoding="latin1")
            data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(entry["labels"], dtype=np.int64)
        except Exception as exc:
            raise DataError(f"{folder / f}: not a readable CIFAR-10 batch ({type(exc).__name__}: {exc})") from None
        if len(data) != len(labels):
            raise DataError(f"{folder / f}: {len(data)} images but {len(labels)} labels")
        batches.append((data.astype(np.float32) / 255.0, labels))
    x = np.concatenate([b[0] for b in batches[:-1]])
    y = np.concatenate([b[1] for b in batches[:-1]])
    return x, y, batches[-1][0], batches[-1][1]


def _mnist(root: Path) -> Arrays:
    return _idx_set(root / "MNIST" / "raw", "MNIST (torchvision.datasets.MNIST format)")


def _fashion(root: Path) -> Arrays:
    return _idx_set(root / "FashionMNIST" / "raw", "Fashion-MNIST (torchvision.datasets.FashionMNIST format)")


IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx_set(folder: Path, what: str) -> Arrays:
    paths = []
    for name in IDX_FILES:
        plain, packed = folder / name, folder / f"{name}.gz"
        paths.append(plain if plain.exists() else packed)
    _require(folder, [p.name for p in paths], what, alternatives=True)
    x, y, x_test, y_test = (_read_idx(p) for p in paths)
    for images, labels, path in ((x, y, paths[0]), (x_test, y_test, paths[2])):
        if len(images) != len(labels):
            raise DataError(f"{path}: {len(images)} images but {len(labels)} labels in the matching label file")
    return x[:, None].astype(np.float32) / 255.0, y, x_test[:, None].astype(np.float32) / 255.0, y_test


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format): magic, dimension sizes, then unsigned bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: truncated or corrupt: the header promises {expected} bytes of data, "
            f"the file holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).astype(np.int64 if ndim == 1 else np.uint8)


def _require(folder: Path, files: list[str], what: str, alternatives: bool = False) -> None:
    missing = [f for f in files if not (folder / f).exists()]
    if missing:
        note = " (each may also be gzipped, name + '.gz')" if alternatives else ""
        raise DataError(
            f"{what} not found: expected the files {files}{note} in {folder}; missing {missing}. "
            "Point root= at the folder that holds them; nothing is downloaded."
        )
