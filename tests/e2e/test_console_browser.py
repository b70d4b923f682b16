"""The admin console in a real browser (issue 18): Debian's chromium driven by npm playwright-core
(tests/node/console-browser.mjs), signing in at the real test IdP (tests/node/oidc-as.mjs), in
front of the project's fixture over HTTP as a catalog-governed upstream, with a real MCP client
(plain JSON-RPC over Streamable HTTP) checking what the console's decisions did.

The story: alice (group engineering, an administrator) registers and approves the upstream; the
fixture is restarted with a changed `echo` description, a re-scan quarantines `echo` and the MCP
client can no longer call it; alice, with the keyboard only, opens its review, reads the diff and
approves it; the client calls it; alice finds that call in the audit search and its CSV export;
she creates an API key (shown once) and revokes it, and the key is then refused; she signs out and
the session is gone. bob (contractors) is a reader in this configuration: he sees the pages, no
action button, and a decision forged with his own CSRF token is refused.

Screenshots of every page go to $GATEHOUSE_SCREENSHOTS (default: the test's tmp dir), printed at
the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import httpx2 as httpx  # what the MCP SDK 2.x installs
import pytest

from conftest import ROOT, fixture_bin, free_port, gateway_bin, node22
from test_console_security import register_console_client

SCRIPT = ROOT / "tests" / "node" / "console-browser.mjs"
CHROMIUM = Path("/usr/bin/chromium")
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def browser(step: str, **args) -> dict:
    r = subprocess.run(
        [str(node22()), str(SCRIPT), step, json.dumps(args)],
        cwd=SCRIPT.parent,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert r.returncode == 0, f"browser step {step} failed:\n{r.stderr[-4000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def start_fixture(processes, port: int, *extra: str):
    p = processes([fixture_bin(), "http", "--port", str(port), *extra])
    p.read_line_starting("READY ")
    return p


def mcp_call(base: str, tool: str, headers: dict | None = None, path: str = "/mcp") -> dict:
    """initialize, then tools/call `tool`; returns the JSON-RPC answer (or the HTTP status)."""
    h = {**MCP_HEADERS, **(headers or {})}
    with httpx.Client(base_url=base, timeout=30) as c:
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}},
        }
        r = c.post(path, headers=h, json=init)
        if r.status_code != 200:
            return {"status": r.status_code}
        h = {**h, "mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
        c.post(path, headers=h, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        r = c.post(path, headers=h, json={"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": tool, "arguments": {"text": "hi"}}})
        if "text/event-stream" in r.headers.get("content-type", ""):
            data = [line[5:].strip() for line in r.text.splitlines() if line.startswith("data:") and line[5:].strip()]
            return json.loads(data[-1])
        return r.json()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (bash scripts/setup.sh installs it)")
def test_the_review_flow_audit_and_keys_in_a_real_browser(processes, oidc_as, tmp_path):
    shots = Path(os.environ.get("GATEHOUSE_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    client_id, secret = register_console_client(oidc_as.issuer)
    fx_port, port = free_port(), free_port()
    fixture = start_fixture(processes, fx_port)
    base = f"http://127.0.0.1:{port}"
    config = tmp_path / "gatehouse.yaml"
    config.write_text(
        f"""
listen: 127.0.0.1:{port}
ops: {{ listen: 127.0.0.1:0 }}
store: {{ url: "sqlite://{tmp_path}/gatehouse.db" }}
catalog: {{}}
servers:
  - {{ name: main, path: /mcp, upstreams: [fx] }}
  - {{ name: keyed, path: /keyed, upstreams: [fx], auth: {{ api_keys: true }} }}
upstreams:
  fx: {{ kind: http, url: "http://127.0.0.1:{fx_port}/mcp", protocol: "2025-11-25" }}
admin:
  groups: [engineering]
  console:
    idp: {{ issuer: "{oidc_as.issuer}", client_id: "{client_id}", client_secret: {{ env: CONSOLE_SECRET }} }}
    readers: {{ groups: [contractors] }}
"""
    )
    gw = processes([gateway_bin(), "serve", "--config", config], env={"CONSOLE_SECRET": secret, "RUST_LOG": "gatehouse=debug,info"})
    assert gw.read_line_starting("gatehouse listening on ") == base
    common = {"base": base, "shots": str(shots)}

    # Unregistered: the catalog serves nothing.
    assert "error" in mcp_call(base, "echo") or "isError" in json.dumps(mcp_call(base, "echo"))
    done = browser("register", **common)
    assert done["heading"] == "Overview"
    cookie = done["cookie"]
    assert cookie and cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Lax", cookie
    assert "fx is now approved" in done["text"]
    assert mcp_call(base, "echo")["result"]["content"][0]["text"] == "hi"

    # The upstream changes echo's description: a re-scan quarantines it and it is refused.
    os.killpg(fixture.proc.pid, signal.SIGINT)
    fixture.proc.wait(timeout=10)
    start_fixture(processes, fx_port, "--tool-description-suffix", " Now also reads your files.")
    rescan = browser("rescan", **common)
    assert "Registered" in rescan["text"], rescan["text"]
    refused = mcp_call(base, "echo")
    assert "result" not in refused or refused["result"].get("isError"), refused

    reviewed = browser("review", **common)
    assert "Now also reads your files." in reviewed["diff"], reviewed["diff"]
    assert "echo is now approved" in reviewed["text"], reviewed["text"]
    assert mcp_call(base, "echo")["result"]["content"][0]["text"] == "hi"

    found = browser("audit", tool="echo", **common)
    assert "tools/call" in found["table"] and "echo" in found["table"], found["table"]
    assert found["csv"].startswith("time,request_id,server") and "tools/call" in found["csv"]

    keys = browser("keys", **common)
    key = keys["key"]
    assert key and not keys["shownAgain"], "the key is shown once"
    assert keys["rows"] == 1, "a reload neither shows the key again nor creates another"
    assert mcp_call(base, "echo", {"authorization": f"Bearer {key}"}, path="/keyed")["result"]["content"][0]["text"] == "hi"
    revoked = browser("revoke", **common)
    assert "revoked" in revoked["rowAfter"]
    assert mcp_call(base, "echo", {"authorization": f"Bearer {key}"}, path="/keyed") == {"status": 401}

    reader = browser("reader", account="bob", **common)
    assert reader["buttons"] == ["Sign out"], reader["buttons"]
    assert reader["forgedStatus"] == 403

    out = browser("signout", **common)
    assert out["afterStatus"] in (302, 303) and out["afterLocation"] == "/admin/login", out
    print(f"\nconsole screenshots: {shots} ({len(list(shots.glob('*.png')))} files)")
