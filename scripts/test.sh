#!/usr/bin/env bash
# Set up a virtual environment with everything the tests need, then run them.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q torch==2.13.0            # CPU build; the [convert] extra's range is then satisfied
pip install -q -e ".[convert,server,test]"
python -m pytest -q "$@"
