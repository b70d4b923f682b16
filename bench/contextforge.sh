#!/usr/bin/env bash
# Optional: runs gatehouse-bench with extra rows for IBM ContextForge (PyPI
# mcp-contextforge-gateway) serving the same fixture upstream, same workload.
#
#   cargo build --release --workspace && bash bench/contextforge.sh [gatehouse-bench args…]
#
# Installs ContextForge into target/contextforge-venv (first run only), starts it on a free
# loopback port with its defaults (one uvicorn worker, SQLite, authentication by its own JWT)
# except rate limiting, which is switched off so that the run measures throughput rather than
# its limiter (100 requests/min by default), registers a gatehouse-fixture as an MCP server, creates a virtual server exposing the
# fixture's `big` tool, runs the benchmark with --compare-url, and stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
[[ -x $bin/gatehouse-bench && -x $bin/gatehouse-fixture ]] || { echo "build first: cargo build --release --workspace" >&2; exit 1; }
venv=target/contextforge-venv
if [[ ! -x $venv/bin/mcpgateway ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q mcp-contextforge-gateway
fi
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
secret=$(openssl rand -hex 32)
export AUTH_REQUIRED=true MCPGATEWAY_UI_ENABLED=false MCPGATEWAY_ADMIN_API_ENABLED=true \
  DATABASE_URL="sqlite:///$work/contextforge.db" JWT_SECRET_KEY="$secret" \
  AUTH_ENCRYPTION_SECRET="$(openssl rand -hex 32)" \
  PLATFORM_ADMIN_PASSWORD="Pw-$(openssl rand -hex 12)-x" BASIC_AUTH_PASSWORD="Pw-$(openssl rand -hex 12)-y" \
  LOG_LEVEL=ERROR SSRF_ALLOW_LOCALHOST=true SSRF_ALLOW_PRIVATE_NETWORKS=true \
  RATE_LIMITING_ENABLED=false TOOL_RATE_LIMIT=1000000 RATE_LIMIT_MEDIUM_RPM=1000000 RATE_LIMIT_LOCKOUT_ENABLED=false
"$venv/bin/mcpgateway" --host 127.0.0.1 --port "$port" >"$work/cf.out" 2>"$work/cf.err" &
pids+=($!)
"$bin/gatehouse-fixture" http --port 0 --json-response >"$work/fx.out" 2>&1 &
pids+=($!)
base="http://127.0.0.1:$port"
for _ in $(seq 120); do curl -sf "$base/health" >/dev/null && break; sleep 0.5; done
curl -sf "$base/health" >/dev/null || { echo "ContextForge did not start:" >&2; tail -20 "$work/cf.err" >&2; exit 1; }
fixture=$(sed -n 's/^READY //p' "$work/fx.out" | head -1)
token=$("$venv/bin/python" -m mcpgateway.utils.create_jwt_token --username admin@example.com --exp 120 --secret "$secret" | tail -1)
auth=(-H "authorization: Bearer $token" -H 'content-type: application/json')
curl -sf "${auth[@]}" -X POST "$base/gateways" -d "{\"name\":\"fx\",\"url\":\"$fixture\",\"transport\":\"STREAMABLEHTTP\"}" >/dev/null
read -r tool_id tool_name < <(curl -sf "${auth[@]}" "$base/tools?limit=0" | "$venv/bin/python" -c '
import json, sys
tools = json.load(sys.stdin)
tools = tools if isinstance(tools, list) else tools.get("tools", tools.get("items", []))
big = next(t for t in tools if t["originalName"] == "big")
print(big["id"], big["name"])')
server_id=$(curl -sf "${auth[@]}" -X POST "$base/servers" -d "{\"server\":{\"name\":\"bench\",\"associated_tools\":[\"$tool_id\"]}}" \
  | "$venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["id"])')
COMPARE_TOKEN="$token" "$bin/gatehouse-bench" --compare-url "$base/servers/$server_id/mcp" \
  --compare-tool "$tool_name" --compare-name ContextForge "$@"
