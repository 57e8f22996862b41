#!/usr/bin/env bash
# Install the package with its test dependencies into .venv and run the whole trial suite.
# The last line is a plain "tests: N passed, N failed[, N skipped]" summary.
# The install is a regular one, as the README's Quick start does: an editable install would
# remove the twistd plugins from .venv and break `.venv/bin/twistd -n rustdesk-server`. The
# tests import the checkout itself (trial runs from here; twistd gets it on PYTHONPATH).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet '.[test]'
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
.venv/bin/python -m twisted.trial "${@:-tests}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
.venv/bin/python - "$log" <<'PY'
import re, sys
text = open(sys.argv[1], errors="replace").read()
counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", text.rsplit("Ran ", 1)[-1])}
failed = sum(counts.get(k, 0) for k in ("failures", "errors", "unexpectedSuccesses"))
line = f"tests: {counts.get('successes', 0) + counts.get('expectedFailures', 0)} passed, {failed} failed"
if counts.get("skips"):
    line += f", {counts['skips']} skipped"
print(line)
PY
exit "$status"
