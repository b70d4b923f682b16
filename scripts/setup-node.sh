#!/usr/bin/env bash
# Installs the npm packages the tests use (tests/node/package.json, pinned by its lock file):
# the MCP conformance suite (stable and the 2026-07-28 alpha), the reference server
# "everything", and a Node 22 runtime for the suite (the machine's node may be older).
set -euo pipefail
cd "$(dirname "$0")/../tests/node"
stamp=node_modules/.gatehouse-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
command -v npm >/dev/null || { echo "setup-node: npm is required (install Node.js)" >&2; exit 1; }
echo "setup-node: installing npm test packages"
npm ci --no-audit --no-fund --loglevel=error
echo "$want" > "$stamp"
