"""Two tenants on one gateway, each with its own real IdP (two oidc-provider instances): an
isolation matrix of principals x servers x operations (list, call, read, consent, audit query,
admin command), every cell with its expected answer; then the same tenants told apart by host.

acme trusts IdP A (whose tokens carry tid acme-tid), beta trusts IdP B (tid beta-tid). alice
(IdP A) administers acme, bob (IdP B) administers beta, root (IdP A) is the operator."""

import base64
import secrets
import time

import httpx2 as httpx

from conftest import fixture_bin, free_port, gateway_bin, node22, OIDC_AS_JS, start_oidc_as
from test_credentials import browse, register_client
from test_oauth import PROTOCOL, RawSession, mint, result_of

ACCEPT = "application/json, text/event-stream"


def start(processes, tmp_path, yaml: str, env: dict, port: int):
    config = tmp_path / f"gatehouse-{port}.yaml"
    config.write_text(f"listen: 127.0.0.1:{port}\nops: {{ listen: 127.0.0.1:0 }}\n{yaml}")
    gw = processes([gateway_bin(), "serve", "--config", config], env={"RUST_LOG": "gatehouse=debug,info", **env})
    gw.ops = gw.read_line_starting("gatehouse ops listening on ")
    gw.read_line_starting("gatehouse listening on ")
    return gw


def post(url: str, token: str | None, body: dict, session: str | None = None, host: str | None = None):
    headers = {"Accept": ACCEPT, "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if session:
        headers["Mcp-Session-Id"] = session
        headers["MCP-Protocol-Version"] = PROTOCOL
    if host:
        headers["Host"] = host
    return httpx.post(url, headers=headers, json=body, timeout=15)


INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "e2e-tenants", "version": "1"}}}

OPERATIONS = {
    "list": ("tools/list", {}),
    "call": ("tools/call", {"name": "echo", "arguments": {"text": "hi"}}),
    "read": ("resources/read", {"uri": "fixture://doc/0"}),
}


def operate(url: str, token: str, op: str, host: str | None = None) -> int:
    """The HTTP status of `op` on the server at `url` with `token`; for a token the server
    accepts, the JSON-RPC answer must be a result too."""
    init = post(url, token, INIT, host=host)
    if init.status_code != 200:
        # Refused before any session: the same request without one is refused alike.
        method, params = OPERATIONS[op]
        bare = post(url, token, {"jsonrpc": "2.0", "id": 2, "method": method, "params": params}, host=host)
        assert bare.status_code == init.status_code, (op, bare.status_code, bare.text)
        assert "error" in bare.json(), bare.text
        return init.status_code
    sid = init.headers["mcp-session-id"]
    ack = post(url, token, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid, host)
    assert ack.status_code == 202, ack.text
    method, params = OPERATIONS[op]
    resp = post(url, token, {"jsonrpc": "2.0", "id": 2, "method": method, "params": params}, sid, host)
    result_of(resp)
    return resp.status_code


def tenants_yaml(a: str, b: str, base: str, fa: str, fb: str, crm: str, saas_id: str, login_id: str) -> str:
    return f"""public_url: "{base}"
auth:
  issuers:
    idp-a: {{ issuer: "{a}", algorithms: [ES256] }}
    idp-b: {{ issuer: "{b}", algorithms: [ES256] }}
audit: {{ flush_interval: 100ms }}
admin:
  auth: {{}}
  subjects: [root]
catalog:
  trusted: [fa, fb, crm]
consent:
  login: {{ issuer: "{a}", client_id: "{login_id}", client_secret: {{ env: LOGIN_SECRET }} }}
  keys: [{{ id: k1, key: {{ env: TOKEN_KEY }} }}]
tenancy:
  tenants:
    acme:
      issuers: [idp-a]
      path_prefix: /acme
      claim_values: [acme-tid]
      admins: {{ subjects: [alice] }}
    beta:
      issuers: [idp-b]
      path_prefix: /beta
      claim_values: [beta-tid]
      admins: {{ subjects: [bob] }}
servers:
  - {{ name: acme-tools, path: /acme/mcp, upstreams: [fa], tenant: acme, auth: {{ scopes: [mcp:tools] }} }}
  - {{ name: acme-crm, path: /acme/crm, upstreams: [crm], tenant: acme, auth: {{ scopes: [mcp:tools] }} }}
  - {{ name: beta-tools, path: /beta/mcp, upstreams: [fb], tenant: beta, auth: {{ scopes: [mcp:tools] }} }}
upstreams:
  fa: {{ kind: http, url: "{fa}", protocol: "{PROTOCOL}" }}
  fb: {{ kind: http, url: "{fb}", protocol: "{PROTOCOL}" }}
  crm:
    kind: http
    url: "{crm}"
    protocol: "{PROTOCOL}"
    auth: {{ kind: user_oauth, client: {{ client_id: "{saas_id}", client_secret: {{ env: SAAS_SECRET }} }}, scopes: [crm:read] }}
"""


def test_two_tenants_with_two_idps_are_isolated(processes, fixture_http, tmp_path):
    idp_a = start_oidc_as(processes, "--tid", "acme-tid").issuer
    idp_b = start_oidc_as(processes, "--tid", "beta-tid").issuer
    saas = processes([node22(), OIDC_AS_JS, "--port", "0"]).read_line_starting("ready ")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    login_id, login_secret = register_client(idp_a, f"{base}/connect/signed-in", ["authorization_code"])
    saas_id, saas_secret = register_client(saas, f"{base}/connect/callback", ["authorization_code", "refresh_token"])
    yaml = tenants_yaml(idp_a, idp_b, base, fixture_http(), fixture_http(),
                        fixture_http("--require-jwt-issuer", saas), saas_id, login_id)
    gw = start(processes, tmp_path, yaml, {"LOGIN_SECRET": login_secret, "SAAS_SECRET": saas_secret,
                                           "TOKEN_KEY": base64.b64encode(secrets.token_bytes(32)).decode()}, port)
    acme, beta, crm = f"{base}/acme/mcp", f"{base}/beta/mcp", f"{base}/acme/crm"

    def token(idp: str, sub: str, resource: str, **kw) -> str:
        return mint(idp, sub=sub, resource=resource, scope="mcp:tools", **kw)["access_token"]

    # Each principal is a token as its IdP issued it, for the resource it is sent to: the
    # gateway must judge the token, not rely on the audience alone.
    principals = {
        "alice@A": lambda url: token(idp_a, "alice", url),
        "bob@B": lambda url: token(idp_b, "bob", url),
        # A trusted IdP's token that names the other tenant (a shared IdP's other customer).
        "eve@A tid beta": lambda url: token(idp_a, "eve", url, tid="beta-tid"),
        # A trusted IdP's token that names no tenant at all.
        "mallory@A no tid": lambda url: token(idp_a, "mallory", url, tid=None),
    }
    expected = {
        ("alice@A", "acme"): 200, ("alice@A", "beta"): 401,
        ("bob@B", "acme"): 401, ("bob@B", "beta"): 200,
        ("eve@A tid beta", "acme"): 401, ("eve@A tid beta", "beta"): 401,
        ("mallory@A no tid", "acme"): 401, ("mallory@A no tid", "beta"): 401,
    }
    got = {}
    for who, make in principals.items():
        for server, url in (("acme", acme), ("beta", beta)):
            for op in OPERATIONS:
                got[(who, server, op)] = operate(url, make(url), op)
    want = {(who, server, op): expected[(who, server)] for (who, server, op) in got}
    assert got == want

    # Consent: alice connects her CRM account (acme's per-user upstream); nobody of beta sees or
    # removes that connection, and a beta token cannot use it.
    alice_crm = RawSession(crm, token(idp_a, "alice", crm)).open()
    ask = alice_crm.request("tools/call", {"name": "whoami", "arguments": {}}).json()
    assert ask["error"]["code"] == -32042, ask
    assert browse(ask["error"]["data"]["elicitations"][0]["url"]).status_code == 200
    assert "result" in alice_crm.request("tools/call", {"name": "whoami", "arguments": {}}).json()

    def connections(tok: str):
        return httpx.get(f"{base}/connections", headers={"Authorization": f"Bearer {tok}"}, timeout=10)

    assert [c["upstream"] for c in connections(token(idp_a, "alice", acme)).json()["connections"]] == ["crm"]
    assert connections(token(idp_b, "bob", beta)).json()["connections"] == []
    # bob of beta, with alice's subject: a different principal (another issuer).
    assert connections(token(idp_b, "alice", beta)).json()["connections"] == []
    gone = httpx.delete(f"{base}/connections/crm", headers={"Authorization": f"Bearer {token(idp_b, 'alice', beta)}"}, timeout=10)
    assert gone.status_code == 404, gone.text
    assert operate(crm, token(idp_b, "alice", crm), "list") == 401

    # Audit and admin: tenant administrators see and change only their tenant.
    time.sleep(0.5)
    admin = f"{base}/admin"

    def as_admin(idp: str, sub: str) -> dict:
        return {"Authorization": f"Bearer {token(idp, sub, admin)}"}

    def audit(headers: dict, **params) -> httpx.Response:
        return httpx.get(f"{admin}/audit/records", headers=headers, params={"since": "all", "limit": 1000, **params}, timeout=10)

    alice_admin, bob_admin, root = as_admin(idp_a, "alice"), as_admin(idp_b, "bob"), as_admin(idp_a, "root")
    by_alice = audit(alice_admin)
    assert by_alice.status_code == 200, by_alice.text
    tenants_seen = {r.get("tenant") for r in by_alice.json()["records"]}
    assert tenants_seen == {"acme"}, tenants_seen
    assert {r["server"] for r in by_alice.json()["records"] if r["server"]} <= {"acme-tools", "acme-crm"}
    assert audit(alice_admin, tenant="beta").status_code == 403
    by_bob = audit(bob_admin).json()["records"]
    assert {r.get("tenant") for r in by_bob} == {"beta"}, by_bob
    # The refusals of foreign tokens at beta's server are in beta's partition, not acme's.
    assert any(r["server"] == "beta-tools" and r["decision"] == "unauthenticated" for r in by_bob)
    everything = {r.get("tenant") for r in audit(root).json()["records"]}
    assert {"acme", "beta"} <= everything, everything
    assert {r.get("tenant") for r in audit(root, tenant="beta").json()["records"]} == {"beta"}
    # One query answers at most 1000 records; more is refused, not truncated.
    too_many = audit(root, limit=1001)
    assert too_many.status_code == 400 and "limit" in too_many.json()["error_description"], too_many.text
    assert len(audit(root, limit=1).json()["records"]) == 1

    # Admin commands: register (connect, list, scan, record) an upstream for review.
    def register(headers: dict, upstream: str) -> httpx.Response:
        return httpx.post(f"{admin}/catalog/{upstream}/register", headers=headers, timeout=30)

    assert register(alice_admin, "fa").status_code == 200
    refused = register(alice_admin, "fb")
    assert refused.status_code == 404 and "fb" in refused.text and "fa" not in refused.json()["error_description"], refused.text
    assert register(bob_admin, "fb").status_code == 200
    assert register(bob_admin, "fa").status_code == 404
    assert httpx.get(f"{admin}/catalog/fa", headers=bob_admin, timeout=10).status_code == 404
    overview = httpx.get(f"{admin}/catalog", headers=alice_admin, timeout=10).json()
    assert {u["upstream"] for u in overview["upstreams"]} == {"fa"}, overview
    assert {d["upstream"] for d in overview["definitions"]} == {"fa"}
    assert {u["upstream"] for u in httpx.get(f"{admin}/catalog", headers=root, timeout=10).json()["upstreams"]} >= {"fa", "fb"}
    # A beta administrator's token from IdP A (not beta's IdP) administers nothing.
    assert audit(as_admin(idp_a, "bob")).status_code == 403
    # The operator's and the administrators' decisions are audited in their tenant.
    time.sleep(0.5)
    decided = [r for r in audit(root).json()["records"] if r["method"].startswith("catalog/") and r.get("upstream") in ("fa", "fb")]
    assert {r["upstream"] for r in decided} == {"fa", "fb"}, decided
    assert all(r.get("tenant") == {"fa": "acme", "fb": "beta"}[r["upstream"]] for r in decided), decided
    for secret in (login_secret, saas_secret):
        assert secret not in gw.stderr()

    # Metrics carry the tenant: each server's and upstream's own.
    metrics = httpx.get(f"{gw.ops}/metrics", timeout=10).text
    for series in ('gatehouse_requests_total{server="acme-tools",upstream="fa",method="tools/call",tool="echo",outcome="ok",tenant="acme"}',
                   'gatehouse_auth_failures_total{server="beta-tools",reason="invalid",tenant="beta"}',
                   'gatehouse_upstream_up{upstream="fb",tenant="beta"}'):
        assert series in metrics, (series, [l for l in metrics.splitlines() if "tenant=" in l][:20])


def test_tenants_resolved_by_host_share_a_path(processes, fixture_http, tmp_path):
    idp_a = start_oidc_as(processes).issuer
    idp_b = start_oidc_as(processes).issuer
    port = free_port()
    yaml = f"""auth:
  issuers:
    idp-a: {{ issuer: "{idp_a}", algorithms: [ES256] }}
    idp-b: {{ issuer: "{idp_b}", algorithms: [ES256] }}
tenancy:
  resolve: host
  tenants:
    acme: {{ issuers: [idp-a], hosts: [acme.localhost], public_url: "http://acme.localhost:{port}" }}
    beta: {{ issuers: [idp-b], hosts: [beta.localhost], public_url: "http://beta.localhost:{port}" }}
servers:
  - {{ name: acme-tools, path: /mcp, upstreams: [fa], tenant: acme, auth: {{ scopes: [mcp:tools] }} }}
  - {{ name: beta-tools, path: /mcp, upstreams: [fb], tenant: beta, auth: {{ scopes: [mcp:tools] }} }}
upstreams:
  fa: {{ kind: http, url: "{fixture_http()}", protocol: "{PROTOCOL}" }}
  fb: {{ kind: http, url: "{fixture_http('--tool-description-suffix', ' (beta)')}", protocol: "{PROTOCOL}" }}
"""
    start(processes, tmp_path, yaml, {}, port)
    url = f"http://127.0.0.1:{port}/mcp"
    acme_host, beta_host = f"acme.localhost:{port}", f"beta.localhost:{port}"
    acme_res, beta_res = f"http://{acme_host}/mcp", f"http://{beta_host}/mcp"
    alice = mint(idp_a, sub="alice", resource=acme_res, scope="mcp:tools")["access_token"]
    bob = mint(idp_b, sub="bob", resource=beta_res, scope="mcp:tools")["access_token"]
    assert operate(url, alice, "call", host=acme_host) == 200
    assert operate(url, bob, "call", host=beta_host) == 200
    # The same path on the other tenant's host: another server, which refuses the token.
    assert operate(url, alice, "list", host=beta_host) == 401
    assert operate(url, bob, "list", host=acme_host) == 401
    # Even a token for the other host's resource from the wrong IdP.
    assert operate(url, mint(idp_a, sub="alice", resource=beta_res, scope="mcp:tools")["access_token"], "list", host=beta_host) == 401
    # Each host's metadata names its own resource and IdP.
    meta = httpx.get(f"http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp", headers={"Host": beta_host}, timeout=10).json()
    assert meta["resource"] == beta_res and meta["authorization_servers"] == [idp_b], meta
    # A host no tenant has: no endpoint.
    assert post(url, alice, INIT, host=f"other.localhost:{port}").status_code == 404
    # What each tenant's clients see comes from its own upstream.
    s = post(url, bob, INIT, host=beta_host)
    sid = s.headers["mcp-session-id"]
    post(url, bob, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid, beta_host)
    tools = result_of(post(url, bob, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, sid, beta_host))["tools"]
    echo = next(t for t in tools if t["name"] == "echo")
    assert echo["description"].endswith("(beta)"), echo


def test_tenants_resolved_by_claim_share_an_idp(processes, fixture_http, tmp_path):
    """One IdP for both tenants (a multi-tenant IdP): the token's `tid` decides, and an API key
    must be one made for the tenant's servers."""
    idp = start_oidc_as(processes).issuer
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    yaml = f"""auth:
  issuers:
    idp: {{ issuer: "{idp}", algorithms: [ES256] }}
tenancy:
  resolve: claim
  tenants:
    acme: {{ issuers: [idp], claim_values: [acme-tid] }}
    beta: {{ issuers: [idp], claim_values: [beta-tid] }}
servers:
  - {{ name: acme-tools, path: /a/mcp, upstreams: [fa], tenant: acme, auth: {{ scopes: [mcp:tools], api_keys: true }} }}
  - {{ name: beta-tools, path: /b/mcp, upstreams: [fb], tenant: beta, auth: {{ scopes: [mcp:tools] }} }}
upstreams:
  fa: {{ kind: http, url: "{fixture_http()}", protocol: "{PROTOCOL}" }}
  fb: {{ kind: http, url: "{fixture_http()}", protocol: "{PROTOCOL}" }}
"""
    start(processes, tmp_path, yaml, {}, port)
    a, b = f"{base}/a/mcp", f"{base}/b/mcp"

    def tok(url: str, tid):
        return mint(idp, sub="alice", resource=url, scope="mcp:tools", tid=tid)["access_token"]

    assert operate(a, tok(a, "acme-tid"), "call") == 200
    assert operate(b, tok(b, "beta-tid"), "call") == 200
    assert operate(b, tok(b, "acme-tid"), "call") == 401
    assert operate(a, tok(a, "beta-tid"), "call") == 401
    assert operate(a, tok(a, None), "call") == 401
    refused = post(a, tok(a, "beta-tid"), INIT)
    assert "tenant" in refused.headers["www-authenticate"], refused.headers

    import re
    import subprocess

    config = next(tmp_path.glob("gatehouse-*.yaml"))

    def key(*extra: str) -> str:
        out = subprocess.run([str(gateway_bin()), "keys", "create", "--config", str(config), "--subject", "bot",
                              "--scopes", "mcp:tools", *extra], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return re.search(r"ghk_[A-Za-z0-9_-]+", out.stdout).group(0)

    everywhere = post(a, key(), INIT)
    assert everywhere.status_code == 401 and "restricted to its servers" in everywhere.text, everywhere.text
    assert operate(a, key("--server", "/a/mcp"), "call") == 200
