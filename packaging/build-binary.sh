#!/usr/bin/env bash
# Build dist/mdm, the whole server in one executable file, with PyInstaller.
# Everything it needs goes into a virtualenv of its own (build/venv), so it
# works on a fresh machine with python3 and its venv module.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv build/venv
build/venv/bin/pip install --quiet --upgrade pip
# A regular (not editable) install: the binary holds a copy of the package.
build/venv/bin/pip install --quiet '.[build,postgresql]'
build/venv/bin/pyinstaller --noconfirm --clean --log-level WARN \
    --distpath dist --workpath build/pyinstaller packaging/mdm.spec
echo "Built $(pwd)/dist/mdm ($(du -h dist/mdm | cut -f1)), mdm $(dist/mdm --version | cut -d' ' -f2)"
