#!/usr/bin/env bash
# Creates .venv with the Python packages the end-to-end tests use (tests/e2e/requirements.txt):
# the official MCP Python SDK as a real client, and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
req=tests/e2e/requirements.txt
stamp=.venv/.gatehouse-requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)
if [[ -x .venv/bin/python && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
echo "setup-python: creating .venv and installing $req"
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$req"
echo "$want" > "$stamp"
