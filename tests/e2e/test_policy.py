"""Function-level policy with tokens from the real authorization server (oidc-provider): alice
(groups engineering, sales) and bob (contractors) see and call different tools, and the audit
trail records who did what."""

import json
import subprocess

from conftest import gateway_bin
from test_oauth import PROTOCOL, RawSession, mint, result_of


def policy_yaml(issuer: str, fixture_url: str) -> str:
    return f"""auth:
  issuers:
    idp: {{ issuer: "{issuer}", algorithms: [ES256, RS256] }}
audit:
  flush_interval: 100ms
servers:
  - name: main
    path: /mcp
    upstreams: [fx]
    auth: {{ scopes: [mcp:tools] }}
    policy:
      default: deny
      rules:
        - name: contractors-echo-only
          tools: echo
          groups: [contractors]
        - name: no-contractors
          effect: deny
          groups: [contractors]
        - name: staff
          groups: [engineering, sales]
upstreams:
  fx: {{ kind: http, url: "{fixture_url}", protocol: "{PROTOCOL}" }}
"""


def tool_names(s: RawSession) -> set[str]:
    return {t["name"] for t in result_of(s.request("tools/list"))["tools"]}


def test_policy_filters_and_decides_per_idp_groups(oidc_as, start_gateway, fixture_http, tmp_path):
    base = start_gateway(policy_yaml(oidc_as.issuer, fixture_http()))
    resource = base + "/mcp"
    alice = RawSession(resource, mint(oidc_as.issuer, sub="alice", resource=resource, scope="mcp:tools")["access_token"]).open()
    bob = RawSession(resource, mint(oidc_as.issuer, sub="bob", resource=resource, scope="mcp:tools")["access_token"]).open()

    assert {"echo", "whoami", "slow"} <= tool_names(alice)
    assert tool_names(bob) == {"echo"}, "bob's groups come from the IdP's token"
    assert result_of(bob.request("tools/call", {"name": "echo", "arguments": {"text": "hi"}}))["content"][0]["text"] == "hi"
    hidden = bob.request("tools/call", {"name": "whoami", "arguments": {}}).json()
    assert hidden["error"]["code"] == -32602 and "whoami" in hidden["error"]["message"], hidden
    assert "result" in alice.request("tools/call", {"name": "whoami", "arguments": {}}).json()

    # The audit trail names the rules (queried with the CLI against the gateway's store).
    import time

    time.sleep(0.5)
    config = next(tmp_path.glob("gatehouse-*.yaml"))
    out = subprocess.run([str(gateway_bin()), "audit", "--config", str(config), "--since", "all", "--json"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    denied = [r for r in records if r["subject"] == "bob" and r["target"] == "whoami"]
    assert denied and denied[0]["decision"] == "deny" and denied[0]["rule"] == "no-contractors", records
    allowed = [r for r in records if r["subject"] == "alice" and r["target"] == "whoami"]
    assert allowed and allowed[0]["rule"] == "staff" and allowed[0]["outcome"] == "ok", records
