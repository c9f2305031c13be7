#!/usr/bin/env bash
# mypy over nasrl.env, nasrl.controller and nasrl.scripts.train (the search's entry). mypy does not follow
# setup.cfg's package_dir mapping (the design card keeps env/ and controller/ at the top level), so it reads
# them through a temporary tree of links named as they are imported: nasrl/env -> env, nasrl/controller ->
# controller, nasrl/conf -> conf.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tree="$(mktemp -d)"
trap 'rm -rf "$tree"' EXIT
mkdir "$tree/nasrl"
for part in env controller conf scripts; do ln -s "$root/$part" "$tree/nasrl/$part"; done
cd "$tree"
MYPYPATH="$tree" mypy --config-file "$root/pyproject.toml" -p nasrl.env -p nasrl.controller -m nasrl.scripts.train
