#!/usr/bin/env bash
# Set up a virtual environment with everything the tests need, then run them.
set -euo pipefail
cd "$(dirname "$0")/.."
# Open JTalk dictionary for the [ja] extra (Japanese tests skip without it).
if [ ! -f /var/lib/mecab/dic/open-jtalk/naist-jdic/sys.dic ] && command -v apt-get >/dev/null; then
    (apt-get install -y -q open-jtalk-mecab-naist-jdic >/dev/null 2>&1 \
        || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q open-jtalk-mecab-naist-jdic >/dev/null 2>&1)) \
        || echo "warning: open-jtalk-mecab-naist-jdic not installed; Japanese tests will skip"
fi
python3 -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q torch==2.13.0            # CPU build; the [convert] extra's range is then satisfied
pip install -q -e ".[convert,server,test,ja,ko,g2pw]"
python -m pytest -q "$@"
