"""Data sets: offline sets load with a validation split carved from train; image folders in
torchvision's on-disk format load, and a missing or broken one gets an error that says what was expected."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch

from nasrl.env.evaluators.data import IDX_FILES, DataError, load_dataset


def write_idx(path, array: np.ndarray, compress: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    blob = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as fh:
            fh.write(blob)
    else:
        path.write_bytes(blob)


def make_mnist_folder(root, name="MNIST", n_train=50, n_test=20, compress=False):
    raw = root / name / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = [
        rng.integers(0, 256, (n_train, 28, 28)),
        rng.integers(0, 10, n_train),
        rng.integers(0, 256, (n_test, 28, 28)),
        rng.integers(0, 10, n_test),
    ]
    for fname, arr in zip(IDX_FILES, arrays):
        write_idx(raw / fname, arr, compress)
    return raw


def test_mnist1d_has_the_standard_split_with_validation_carved_from_train() -> None:
    d = load_dataset("mnist1d")
    assert d.input_shape == (1, 40) and d.num_classes == 10
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (3200, 800, 1000)
    assert abs(float(d.x_train.mean())) < 0.05


def test_digits_loads_offline() -> None:
    d = load_dataset("digits", val_fraction=0.25)
    assert d.input_shape == (1, 8, 8)
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 1797
    assert len(d.y_val) == round((len(d.y_train) + len(d.y_val)) * 0.25)


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
@pytest.mark.parametrize("compress", [False, True])
def test_mnist_style_folder_in_torchvision_format_loads(tmp_path, name, folder, compress) -> None:
    make_mnist_folder(tmp_path, folder, compress=compress)
    d = load_dataset(name, root=tmp_path, val_fraction=0.2)
    assert d.input_shape == (1, 28, 28)
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (40, 10, 20)


def test_cifar10_folder_in_torchvision_format_loads(tmp_path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (8, 3072), dtype=np.uint8), "labels": list(rng.integers(0, 10, 8))}
        with open(folder / f, "wb") as fh:
            pickle.dump(batch, fh)
    d = load_dataset("cifar10", root=tmp_path, val_fraction=0.25)
    assert d.input_shape == (3, 32, 32)
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (30, 10, 8)


def test_missing_folder_names_the_expected_files_and_place(tmp_path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("mnist", root=tmp_path)
    msg = str(err.value)
    assert (
        str(tmp_path / "MNIST" / "raw") in msg and "train-images-idx3-ubyte" in msg and "nothing is downloaded" in msg
    )
    with pytest.raises(DataError, match=r"data_batch_1.*cifar-10-batches-py"):
        load_dataset("cifar10", root=tmp_path)


def test_truncated_file_is_reported(tmp_path) -> None:
    raw = make_mnist_folder(tmp_path)
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: truncated or corrupt"):
        load_dataset("mnist", root=tmp_path)


def test_corrupt_cifar_batch_is_reported(tmp_path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / f).write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="not a readable CIFAR-10 batch"):
        load_dataset("cifar10", root=tmp_path)


def test_unknown_data_set_lists_the_accepted_ones() -> None:
    with pytest.raises(DataError, match=r"unknown data set 'imagenet'.*mnist1d"):
        load_dataset("imagenet")


@pytest.mark.slow
def test_fresh_mnist1d_test_examples_come_from_the_standard_sets_generator_and_scaling(tmp_path) -> None:
    from nasrl.env.evaluators.data import MNIST1D_SEED, _mnist1d, _mnist1d_raw, mnist1d_fresh_test

    # drawn as make_dataset draws, the standard seed gives the standard 5000 examples, bit for bit
    x, y = _mnist1d_raw(5000, MNIST1D_SEED)
    x_train, y_train, x_test, y_test = _mnist1d(tmp_path)
    scaled = ((x - x.mean()) / x.std())[:, None, :]
    assert np.array_equal(scaled[:4000], x_train) and np.array_equal(scaled[4000:], x_test)
    assert np.array_equal(y[:4000], y_train) and np.array_equal(y[4000:], y_test)

    fresh_x, fresh_y = mnist1d_fresh_test(200, 0, tmp_path)
    assert fresh_x.shape == (200, 1, 40) and np.bincount(fresh_y).tolist() == [20] * 10
    assert not np.isin(fresh_x[:, 0, 0], x_train[:, 0, 0]).any()  # new examples, not the standard ones again
    assert abs(fresh_x.mean() - x_train.mean()) < 0.2 and abs(fresh_x.std() / x_train.std() - 1) < 0.2
    assert np.array_equal(mnist1d_fresh_test(200, 0, tmp_path)[0], fresh_x)  # from the cache, the same
    assert np.array_equal(fresh_x[:, 0], (_mnist1d_raw(200, 0)[0] - x.mean()) / x.std())  # the standard scaling
    assert not np.array_equal(mnist1d_fresh_test(200, 1, tmp_path)[0], fresh_x)

    d = load_dataset("mnist1d", root=tmp_path, test_examples=200, test_seed=0)
    standard = load_dataset("mnist1d", root=tmp_path)
    assert len(d.y_test) == 200 and torch.equal(d.x_train, standard.x_train) and torch.equal(d.x_val, standard.x_val)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"test_examples": 205}, "test_examples must be a positive multiple of 10.*got 205"),
        ({"test_examples": 0}, "test_examples must be a positive multiple of 10.*got 0"),
        ({"test_examples": 100, "test_seed": 42}, "test_seed must be an integer other than 42.*got 42"),
        ({"name": "digits", "test_examples": 100}, "test_examples draws fresh MNIST-1D examples; data set 'digits'"),
    ],
)
def test_bad_fresh_test_settings_are_refused_in_one_line(tmp_path, kwargs, message) -> None:
    with pytest.raises(DataError, match=message):
        load_dataset(**({"name": "mnist1d", "root": tmp_path} | kwargs))
