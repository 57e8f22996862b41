#!/usr/bin/env bash
# Install the package with its test dependencies into .venv and run the whole trial suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e '.[test]'
exec .venv/bin/python -m twisted.trial tests
