"""Get the data the shipped configs read (``nasrl-data``; ``python scripts/data.py`` is the same command).

    nasrl-data                      # the data sets, and whether each is under the data root
    nasrl-data tinyshakespeare      # the char-rnn corpus, for env=lm and env=lm_ws
    nasrl-data nb201                # the NAS-Bench-201 tables, for env=nb201 and nasrl-benchmark
    nasrl-data nb201 --root DIR     # into DIR instead of $NASRL_DATA (default ~/.cache/nasrl)

Each file is checked against its published SHA-256 before it is kept; ``--force`` downloads again. Where this
machine cannot download, the error names the URL and where to place the file by hand. What is fetched from
where, and under which licence: ``NOTICE``; how: ``nasrl.env.evaluators.downloads``.
"""

from __future__ import annotations

import argparse
import os
import sys

from nasrl.env.evaluators.data import DataError, data_root
from nasrl.env.evaluators.downloads import DATASETS, fetch, status
from nasrl.scripts.app import package_version


def parser() -> argparse.ArgumentParser:
    """The command line of ``nasrl-data``."""
    p = argparse.ArgumentParser(
        prog="nasrl-data",
        description="Download, verify (SHA-256) and prepare the data nasrl's configs read, under the data root.",
    )
    p.add_argument("name", nargs="?", choices=list(DATASETS), help="the data set to get; none: list them")
    p.add_argument("--root", help="the data root (default: $NASRL_DATA, else ~/.cache/nasrl)")
    p.add_argument("--version", action="version", version=f"nasrl-data {package_version()}")
    p.add_argument("--force", action="store_true", help="download and prepare again, even if present")
    p.add_argument(
        "--mirror",
        default=os.environ.get("NASRL_DATA_MIRROR") or None,
        help="a URL of a folder holding the source files under their names in NOTICE (default: $NASRL_DATA_MIRROR)",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``nasrl-data``: one ``error: ...`` line and exit status 1 when something is refused."""
    args = parser().parse_args(argv)
    try:
        if args.name is None:
            print(f"data root: {data_root(args.root)}")
            for name, dataset, present in status(args.root):
                state = "present" if present else "missing"
                print(f"  {name:<16} {state:<8} {', '.join(dataset.files)}  ({dataset.used_by})")
            print("get one with: nasrl-data NAME")
            return
        fetch(args.name, root=args.root, force=args.force, mirror=args.mirror)
    except DataError as exc:
        sys.exit(f"error: {' '.join(str(exc).split())}")
    except KeyboardInterrupt:
        sys.exit("error: interrupted; nothing half-written was kept")


if __name__ == "__main__":
    main()
