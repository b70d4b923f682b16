#!/usr/bin/env bash
# The test command: installs test dependencies if needed, builds once, then runs the Rust
# unit and integration tests (cargo-nextest, in parallel) and the end-to-end tests that drive
# the gateway with real clients (Python MCP SDK, the official conformance suite).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --workspace --all-targets --locked
status=0
cargo nextest run --workspace --locked --no-fail-fast || status=$?
GATEHOUSE_BIN="$PWD/target/debug/gatehouse" GATEHOUSE_FIXTURE_BIN="$PWD/target/debug/gatehouse-fixture" \
  .venv/bin/python -m pytest tests/e2e -q -p no:cacheprovider || status=$?
# The deployment artefacts: the Containerfile built with buildah and its root filesystem run
# (read-only, non-root) in front of the fixture, the Kubernetes overlays rendered and validated,
# the systemd unit verified. A few seconds.
bash scripts/check-deploy.sh || status=$?
# The benchmark's smoke mode: checks it runs end to end and prints its table (figures from a
# debug build mean nothing; see docs/performance.md for the real command).
target/debug/gatehouse-bench --smoke || status=$?
exit $status
