#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain: npm packages (Node 22 for the
# conformance suite, the reference MCP server) and a Python virtualenv with the MCP SDK.
# Idempotent and quick when everything is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-node.sh
bash scripts/setup-python.sh
