"""Upstream credentials end to end: the gateway obtains each upstream's own credential (static
secret, client credentials, RFC 8693 token exchange, ID-JAG + jwt-bearer) from the real
authorization server (oidc-provider, tests/node/oidc-as.mjs), and the protected fixture upstream
accepts only tokens whose audience is its own URL. The client's token never reaches it."""

import json
import os
import subprocess
import time
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2 as httpx  # what the MCP SDK 2.x installs
from conftest import OIDC_AS_JS, free_port, gateway_bin, node22
from test_oauth import PROTOCOL, RawSession, jwt_claims, mint, result_of

EXCHANGER = "client_id: gatehouse-exchanger, client_secret: { env: EXCHANGER_SECRET }"
SECRET_ENV = {"EXCHANGER_SECRET": "exchanger-secret"}


def query_of(url: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def counters(issuer: str) -> dict:
    return httpx.get(f"{issuer}/test/counters", timeout=10).json()


def upstream_authorization(session: RawSession) -> str:
    """The Authorization header the upstream received (its whoami tool echoes headers)."""
    text = result_of(session.request("tools/call", {"name": "whoami", "arguments": {}}))["content"][0]["text"]
    return json.loads(text).get("authorization", "")


def open_gateway(fixture_url: str, upstream_auth: str, issuer: str | None = None) -> str:
    """One virtual server over the fixture with `upstream_auth`; protected by `issuer` if given."""
    auth = f"""auth:
  issuers:
    idp: {{ issuer: "{issuer}", algorithms: [ES256] }}
""" if issuer else ""
    server_auth = ", auth: { scopes: [mcp:tools] }" if issuer else ""
    return f"""{auth}servers:
  - {{ name: main, path: /mcp, upstreams: [fx]{server_auth} }}
upstreams:
  fx:
    kind: http
    url: "{fixture_url}"
    protocol: "{PROTOCOL}"
    auth: {upstream_auth}
"""


def protected_gateway(issuer: str, fixture_url: str, upstream_auth: str) -> str:
    return open_gateway(fixture_url, upstream_auth, issuer)


def test_a_static_secret_comes_from_the_environment(start_gateway, fixture_http):
    fx = fixture_http("--require-header", "X-API-Key: k-123")
    refused = httpx.post(fx, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
                         headers={"Accept": "application/json, text/event-stream"}, timeout=10)
    assert refused.status_code == 401, "the fixture really is protected"
    base = start_gateway(open_gateway(fx, "{ kind: static, header: X-API-Key, secret: { env: FX_KEY } }"),
                         env={"FX_KEY": "k-123"})
    s = RawSession(base + "/mcp", None).open()
    assert result_of(s.request("tools/call", {"name": "echo", "arguments": {"text": "in"}}))["content"][0]["text"] == "in"


def test_client_credentials_found_through_the_upstreams_metadata_and_cached(oidc_as, start_gateway, fixture_http):
    fx = fixture_http("--require-jwt-issuer", oidc_as.issuer)
    # No issuer in the configuration: the fixture's RFC 9728 metadata names the server.
    base = start_gateway(open_gateway(fx, f"{{ kind: client_credentials, client: {{ {EXCHANGER} }}, scopes: [crm:read] }}"),
                         env=SECRET_ENV)
    httpx.post(f"{oidc_as.issuer}/test/counters/reset", timeout=10)
    s = RawSession(base + "/mcp", None).open()
    for _ in range(3):
        header = upstream_authorization(s)
    claims = jwt_claims(header.removeprefix("Bearer "))
    assert claims["aud"] == fx and claims["client_id"] == "gatehouse-exchanger", claims
    assert claims["scope"] == "crm:read", claims
    assert counters(oidc_as.issuer)["client_credentials"] == 1, "one token for the handshake and three calls"


def test_client_credentials_with_private_key_jwt(oidc_as, start_gateway, fixture_http):
    from conftest import ROOT

    fx = fixture_http("--require-jwt-issuer", oidc_as.issuer)
    key = ROOT / "tests" / "keys" / "es256-b.pem"
    auth = (f'{{ kind: client_credentials, client: {{ issuer: "{oidc_as.issuer}", client_id: gatehouse-pkjwt, '
            f'private_key: {{ file: "{key}" }}, key_id: gatehouse-pkjwt-1 }} }}')
    base = start_gateway(open_gateway(fx, auth))
    s = RawSession(base + "/mcp", None).open()
    claims = jwt_claims(upstream_authorization(s).removeprefix("Bearer "))
    assert claims["client_id"] == "gatehouse-pkjwt" and claims["aud"] == fx, claims


def test_token_exchange_gives_each_user_a_token_for_the_upstream_alone(oidc_as, start_gateway, fixture_http, tmp_path):
    fx = fixture_http("--require-jwt-issuer", oidc_as.issuer)
    auth = f'{{ kind: token_exchange, idp: {{ issuer: "{oidc_as.issuer}", {EXCHANGER} }}, scopes: [crm:read] }}'
    base = start_gateway(protected_gateway(oidc_as.issuer, fx, auth), env=SECRET_ENV)
    resource = base + "/mcp"
    httpx.post(f"{oidc_as.issuer}/test/counters/reset", timeout=10)

    alice_token = mint(oidc_as.issuer, sub="alice", resource=resource, scope="mcp:tools")["access_token"]
    alice = RawSession(resource, alice_token).open()
    seen = {upstream_authorization(alice) for _ in range(3)}
    assert len(seen) == 1
    upstream_token = seen.pop().removeprefix("Bearer ")
    assert upstream_token != alice_token, "the client's token must never reach the upstream"
    claims = jwt_claims(upstream_token)
    assert claims["sub"] == "alice" and claims["aud"] == fx, claims
    assert claims["scope"] == "crm:read" and claims["act"]["sub"] == "gatehouse-exchanger", claims
    assert counters(oidc_as.issuer)["token_exchange"] == 1, "N calls by one user, one exchange"

    bob = RawSession(resource, mint(oidc_as.issuer, sub="bob", resource=resource, scope="mcp:tools")["access_token"]).open()
    assert jwt_claims(upstream_authorization(bob).removeprefix("Bearer "))["sub"] == "bob"
    assert counters(oidc_as.issuer)["token_exchange"] == 2, "another user, another exchange"

    # The IdP refuses mallory: her session opens (the member is reported unavailable), and a
    # call fails with a clear error naming the upstream and the IdP's reason.
    mallory = RawSession(resource, mint(oidc_as.issuer, sub="mallory", resource=resource, scope="mcp:tools")["access_token"]).open()
    resp = mallory.request("tools/call", {"name": "whoami", "arguments": {}})
    error = resp.json().get("error")
    assert error, resp.text
    assert error["code"] == -32007, error
    assert '"fx"' in error["message"] and "exchange refused by policy" in error["message"], error

    # The refusal is in the audit trail, and no token is anywhere in it.
    time.sleep(1.5)
    config = next(tmp_path.glob("gatehouse-*.yaml"))
    out = subprocess.run([str(gateway_bin()), "audit", "--config", str(config), "--since", "all", "--json"],
                         capture_output=True, text=True, timeout=30, env={**os.environ, **SECRET_ENV})
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    refused = [r for r in records if r["subject"] == "mallory" and r["target"] == "whoami"]
    assert refused and refused[-1]["error_code"] == -32007, records
    for token in (alice_token, upstream_token):
        assert token not in out.stdout
    assert "ey" not in error["message"], "no token in the error"


def stateless_call(resource: str, token: str, tool: str, arguments: dict, call_id: int) -> dict:
    """A 2026-07-28 (sessionless) tools/call."""
    body = {"jsonrpc": "2.0", "id": call_id, "method": "tools/call", "params": {
        "name": tool, "arguments": arguments,
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {}}}}
    return httpx.post(resource, json=body, timeout=10, headers={
        "Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": tool}).json()


def test_sessionless_clients_get_one_upstream_session_per_user_with_per_user_credentials(
        oidc_as, start_gateway, fixture_http):
    """An upstream that binds each session to the user who opened it: sessionless clients of two
    users, alternating, each keep their own upstream session (no refusals, no re-opening)."""
    fx = fixture_http("--require-jwt-issuer", oidc_as.issuer, "--bind-sessions-to-subject")
    auth = f'{{ kind: token_exchange, idp: {{ issuer: "{oidc_as.issuer}", {EXCHANGER} }}, scopes: [crm:read] }}'
    base = start_gateway(protected_gateway(oidc_as.issuer, fx, auth), env=SECRET_ENV)
    resource = base + "/mcp"
    tokens = {who: mint(oidc_as.issuer, sub=who, resource=resource, scope="mcp:tools")["access_token"]
              for who in ("alice", "bob")}
    for i in range(6):
        who = ("alice", "bob")[i % 2]
        answer = stateless_call(resource, tokens[who], "whoami", {}, 100 + i)
        assert "result" in answer, answer
        seen = json.loads(answer["result"]["content"][0]["text"])["authorization"]
        assert jwt_claims(seen.removeprefix("Bearer "))["sub"] == who
    stats = json.loads(stateless_call(resource, tokens["alice"], "stats", {}, 200)["result"]["content"][0]["text"])
    assert stats["foreign_sessions"] == 0, stats
    assert stats["sessions_opened"] == 2, f"one session per user, opened once: {stats}"


def test_an_exchanged_token_is_renewed_before_it_expires(processes, start_gateway, fixture_http):
    p = processes([node22(), OIDC_AS_JS, "--port", "0", "--exchange-ttl", "2"])
    issuer = p.read_line_starting("ready ")
    fx = fixture_http("--require-jwt-issuer", issuer)
    auth = f'{{ kind: token_exchange, idp: {{ issuer: "{issuer}", {EXCHANGER} }}, scopes: [crm:read] }}'
    base = start_gateway(protected_gateway(issuer, fx, auth), env=SECRET_ENV)
    resource = base + "/mcp"
    s = RawSession(resource, mint(issuer, sub="alice", resource=resource, scope="mcp:tools")["access_token"]).open()
    first = upstream_authorization(s)
    before = counters(issuer)["token_exchange"]
    time.sleep(1.5)  # a 2 s token is renewed after half its life
    second = upstream_authorization(s)
    assert second != first
    assert counters(issuer)["token_exchange"] == before + 1


def test_id_jag_from_the_idp_is_redeemed_at_the_upstreams_own_server(oidc_as, processes, start_gateway, fixture_http):
    upstream_as = processes([node22(), OIDC_AS_JS, "--port", "0", "--trust-idp", oidc_as.issuer]).read_line_starting("ready ")
    fx = fixture_http("--require-jwt-issuer", upstream_as)
    # The upstream's authorization server is found through the fixture's RFC 9728 metadata.
    auth = (f'{{ kind: id_jag, idp: {{ issuer: "{oidc_as.issuer}", {EXCHANGER} }}, '
            f'authorization_server: {{ {EXCHANGER} }}, scopes: [crm:read] }}')
    base = start_gateway(protected_gateway(oidc_as.issuer, fx, auth), env=SECRET_ENV)
    resource = base + "/mcp"
    alice_token = mint(oidc_as.issuer, sub="alice", resource=resource, scope="mcp:tools")["access_token"]
    s = RawSession(resource, alice_token).open()
    for _ in range(3):
        header = upstream_authorization(s)
    claims = jwt_claims(header.removeprefix("Bearer "))
    assert claims["iss"] == upstream_as and claims["aud"] == fx and claims["sub"] == "alice", claims
    assert header.removeprefix("Bearer ") != alice_token
    assert counters(oidc_as.issuer)["id_jag"] == 1
    assert counters(upstream_as)["jwt_bearer"] == 1


# ---------------------------------------------------------------- user_oauth (per-user consent)


def register_client(issuer: str, redirect_uri: str, grants: list[str]) -> tuple[str, str]:
    resp = httpx.post(f"{issuer}/reg", json={
        "redirect_uris": [redirect_uri], "grant_types": grants, "response_types": ["code"],
        "token_endpoint_auth_method": "client_secret_basic", "application_type": "web"}, timeout=10)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    return body["client_id"], body["client_secret"]


def consent_stack(oidc_as, processes, fixture_http, tmp_path, saas_args=(), scopes="[crm:read]",
                  top="", server="", members="[fx]", more_upstreams=""):
    """The enterprise IdP (oidc_as), the SaaS's own authorization server, a SaaS upstream that
    accepts only that server's tokens, and a gateway with a consent configuration (`top`: more
    top-level blocks; `server`: more fields of the virtual server; `members` its upstreams, the
    others in `more_upstreams`)."""
    saas_as = processes([node22(), OIDC_AS_JS, "--port", "0", *saas_args]).read_line_starting("ready ")
    fx = fixture_http("--require-jwt-issuer", saas_as)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    login_id, login_secret = register_client(oidc_as.issuer, f"{base}/connect/signed-in", ["authorization_code"])
    saas_id, saas_secret = register_client(saas_as, f"{base}/connect/callback", ["authorization_code", "refresh_token"])
    config = tmp_path / "gatehouse-consent.yaml"
    config.write_text(f"""listen: 127.0.0.1:{port}
ops: {{ listen: 127.0.0.1:0 }}
{top}auth:
  issuers:
    idp: {{ issuer: "{oidc_as.issuer}", algorithms: [ES256] }}
consent:
  login: {{ issuer: "{oidc_as.issuer}", client_id: "{login_id}", client_secret: {{ env: LOGIN_SECRET }} }}
  keys: [{{ id: k1, key: {{ env: TOKEN_KEY }} }}]
servers:
  - {{ name: main, path: /mcp, upstreams: {members}, auth: {{ scopes: [mcp:tools] }}{server} }}
upstreams:
{more_upstreams}  fx:
    kind: http
    url: "{fx}"
    protocol: "{PROTOCOL}"
    auth: {{ kind: user_oauth, client: {{ client_id: "{saas_id}", client_secret: {{ env: SAAS_SECRET }} }}, scopes: {scopes} }}
""")
    import base64
    import secrets

    env = {"RUST_LOG": "gatehouse=debug,info", "LOGIN_SECRET": login_secret, "SAAS_SECRET": saas_secret,
           "TOKEN_KEY": base64.b64encode(secrets.token_bytes(32)).decode()}
    gw = processes([gateway_bin(), "serve", "--config", config], env=env)
    gw.read_line_starting("gatehouse listening on ")
    return base, saas_as, fx, gw, tmp_path / "gatehouse.db"


def browse(url: str) -> httpx.Response:
    """A browser that follows redirects and keeps cookies (the IdPs' interactions are headless)."""
    with httpx.Client(follow_redirects=True, timeout=15) as browser:
        return browser.get(url)


def test_user_oauth_consent_connects_the_users_own_account(oidc_as, processes, fixture_http, tmp_path):
    base, saas_as, fx, gw, db = consent_stack(oidc_as, processes, fixture_http, tmp_path)
    resource = base + "/mcp"
    alice_token = mint(oidc_as.issuer, sub="alice", resource=resource, scope="mcp:tools")["access_token"]
    alice = RawSession(resource, alice_token).open()

    # Not connected yet: URL-mode elicitation (2025-11-25: error -32042) pointing at the gateway.
    first = alice.request("tools/call", {"name": "whoami", "arguments": {}}).json()
    assert first["error"]["code"] == -32042, first
    [elicitation] = first["error"]["data"]["elicitations"]
    assert elicitation["mode"] == "url" and elicitation["url"].startswith(f"{base}/connect/"), elicitation
    assert elicitation["elicitationId"] in elicitation["url"]
    # A listing does not ask (clients list first and give up on an error): without a catalog to
    # list from, the upstream is left out, and the next call asks again.
    listing = alice.request("tools/list").json()
    assert listing["result"]["tools"] == [], listing
    assert new_link(alice) == elicitation["url"], "the next call asks again (the same link, not opened yet)"

    # The user opens the link: signs in at the IdP as alice, authorizes at the SaaS, lands back.
    page = browse(elicitation["url"])
    assert page.status_code == 200 and "connected" in page.text, page.text
    assert str(page.url).startswith(f"{base}/connect/callback")
    # The page says what was linked to whom (the IdP's preferred_username of the signed-in user).
    assert "Your account at fx (the one you just authorized there) is now connected for alice," in page.text, page.text

    # The retry goes through with the SaaS's token for alice, never her MCP token.
    header = upstream_authorization(alice)
    saas_token = header.removeprefix("Bearer ")
    claims = jwt_claims(saas_token)
    assert claims["iss"] == saas_as and claims["aud"] == fx and claims["sub"] == "alice", claims
    assert saas_token != alice_token

    # Stored sealed: neither the SaaS token nor a piece of it is in the database file.
    raw = db.read_bytes() + (db.parent / "gatehouse.db-wal").read_bytes() if (db.parent / "gatehouse.db-wal").exists() else db.read_bytes()
    assert saas_token.encode() not in raw and saas_token.split(".")[2][:20].encode() not in raw

    # The user lists and revokes their connections with their own token.
    listed = httpx.get(f"{base}/connections", headers={"Authorization": f"Bearer {alice_token}"}, timeout=10)
    assert [c["upstream"] for c in listed.json()["connections"]] == ["fx"], listed.text
    assert httpx.get(f"{base}/connections", timeout=10).status_code == 401
    gone = httpx.delete(f"{base}/connections/fx", headers={"Authorization": f"Bearer {alice_token}"}, timeout=10)
    assert gone.status_code == 204
    again = alice.request("tools/call", {"name": "whoami", "arguments": {}}).json()
    assert again["error"]["code"] == -32042, again

    # A 2026-07-28 client is asked with an InputRequiredResult holding the same kind of link.
    body = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "whoami", "arguments": {},
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                      "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"url": {}}}}}}
    stateless = httpx.post(resource, json=body, timeout=10, headers={
        "Authorization": f"Bearer {alice_token}", "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "whoami"}).json()
    result = stateless["result"]
    assert result["resultType"] == "input_required", stateless
    [ask] = result["inputRequests"].values()
    assert ask["method"] == "elicitation/create" and ask["params"]["mode"] == "url", ask
    assert browse(ask["params"]["url"]).status_code == 200
    body["params"]["requestState"] = result["requestState"]
    body["params"]["inputResponses"] = {k: {"action": "accept"} for k in result["inputRequests"]}
    retried = httpx.post(resource, json=body, timeout=10, headers={
        "Authorization": f"Bearer {alice_token}", "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "whoami"}).json()
    assert retried["result"]["resultType"] == "complete", retried
    assert "authorization" in retried["result"]["content"][0]["text"]

    for secret in (alice_token, saas_token):
        assert secret not in gw.stderr(), "no token in the gateway's log"


def test_user_oauth_consent_refuses_a_different_signed_in_user(oidc_as, processes, fixture_http, tmp_path):
    base, _saas_as, _fx, _gw, _db = consent_stack(oidc_as, processes, fixture_http, tmp_path)
    resource = base + "/mcp"
    bob = RawSession(resource, mint(oidc_as.issuer, sub="bob", resource=resource, scope="mcp:tools")["access_token"]).open()
    error = bob.request("tools/call", {"name": "whoami", "arguments": {}}).json()["error"]
    assert error["code"] == -32042, error
    # The IdP signs the browser in as alice (its default account), not bob.
    page = browse(error["data"]["elicitations"][0]["url"])
    assert page.status_code == 403 and "different user" in page.text, page.text
    still = bob.request("tools/call", {"name": "whoami", "arguments": {}}).json()
    assert still["error"]["code"] == -32042, "nothing was connected for bob"


def walk(browser: httpx.Client, url: str, stop=lambda _url: False):
    """Follows redirects by hand with `browser` (its cookies kept): the first URL for which
    `stop` is true (not requested), else the final response."""
    for _ in range(16):
        if stop(url):
            return url
        resp = browser.get(url)
        if resp.status_code in (301, 302, 303, 307) and "location" in resp.headers:
            url = urljoin(url, resp.headers["location"])
            continue
        return resp
    raise AssertionError(f"more than 16 redirects from {url}")


def new_link(session: RawSession, tool: str = "whoami") -> str:
    error = session.request("tools/call", {"name": tool, "arguments": {}}).json()["error"]
    assert error["code"] == -32042, error
    return error["data"]["elicitations"][0]["url"]


def test_user_oauth_consent_is_bound_to_the_browser_that_opened_the_link(oidc_as, processes, fixture_http, tmp_path):
    """The account-linking attack: the attacker opens their own link, signs in as themselves and
    stops at the service's authorization page, then gets the victim to open that URL. The
    victim's browser lacks the cookie set when the link was opened: nothing is connected."""
    base, saas_as, _fx, gw, _db = consent_stack(oidc_as, processes, fixture_http, tmp_path)
    resource = base + "/mcp"
    alice = RawSession(resource, mint(oidc_as.issuer, sub="alice", resource=resource, scope="mcp:tools")["access_token"]).open()

    with httpx.Client(timeout=15) as attacker, httpx.Client(timeout=15) as victim:
        link = new_link(alice)
        at_saas = walk(attacker, link, stop=lambda u: u.startswith(f"{saas_as}/auth?"))
        assert isinstance(at_saas, str), at_saas.text
        assert any(c.name.startswith("gatehouse_connect_") for c in attacker.cookies.jar), "the link sets a cookie"
        landed = walk(victim, at_saas)
        assert str(landed.url).startswith(f"{base}/connect/callback"), landed.url
        assert landed.status_code == 403 and "started in another browser" in landed.text, landed.text
        # The state was spent: the attacker's own browser cannot use it afterwards either.
        late = walk(attacker, at_saas)
        assert late.status_code == 400 and "does not belong to a connection in progress" in late.text, late.text

        # The same at the sign-in step: the IdP's answer reaches the gateway in another browser.
        link = new_link(alice)
        at_idp = walk(attacker, link, stop=lambda u: u.startswith(f"{oidc_as.issuer}/auth?"))
        assert isinstance(at_idp, str), at_idp.text
        sent = query_of(at_idp)
        assert sent["nonce"] and sent["state"] and sent["code_challenge_method"] == "S256", sent
        landed = walk(victim, at_idp)
        assert str(landed.url).startswith(f"{base}/connect/signed-in"), landed.url
        assert landed.status_code == 403 and "started in another browser" in landed.text, landed.text

        # A link opens once: a second browser opening it is refused.
        link = new_link(alice)
        assert isinstance(walk(attacker, link, stop=lambda u: u.startswith(f"{oidc_as.issuer}/auth?")), str)
        twice = walk(victim, link)
        assert twice.status_code == 400 and "already opened" in twice.text, twice.text

    still = alice.request("tools/call", {"name": "whoami", "arguments": {}}).json()
    assert still["error"]["code"] == -32042, "nothing was connected"
    assert "consent refused" in gw.stderr()


def test_user_oauth_consent_names_the_linked_account_from_the_services_verified_id_token(
        oidc_as, processes, fixture_http, tmp_path):
    """With openid among the upstream's scopes the service's ID token (nonce, signature against
    its keys) names the account being linked on the final page."""
    base, saas_as, _fx, _gw, _db = consent_stack(oidc_as, processes, fixture_http, tmp_path,
                                                 scopes="[openid, crm:read]")
    resource = base + "/mcp"
    alice = RawSession(resource, mint(oidc_as.issuer, sub="alice", resource=resource, scope="mcp:tools")["access_token"]).open()
    with httpx.Client(timeout=15) as browser:
        at_saas = walk(browser, new_link(alice), stop=lambda u: u.startswith(f"{saas_as}/auth?"))
        assert query_of(at_saas)["nonce"], at_saas
        page = walk(browser, at_saas)
    assert page.status_code == 200, page.text
    assert "Your fx account alice is now connected for alice," in page.text, page.text
    assert upstream_authorization(alice).startswith("Bearer ")


def test_user_oauth_refreshes_an_expiring_token_without_asking_again(oidc_as, processes, fixture_http, tmp_path):
    base, _saas_as, _fx, _gw, _db = consent_stack(oidc_as, processes, fixture_http, tmp_path,
                                                  saas_args=("--access-ttl", "3"), scopes="[crm:read, offline_access]")
    resource = base + "/mcp"
    alice = RawSession(resource, mint(oidc_as.issuer, sub="alice", resource=resource, scope="mcp:tools")["access_token"]).open()
    error = alice.request("tools/call", {"name": "whoami", "arguments": {}}).json()["error"]
    assert browse(error["data"]["elicitations"][0]["url"]).status_code == 200
    first = jwt_claims(upstream_authorization(alice).removeprefix("Bearer "))
    time.sleep(3.5)  # the SaaS's access tokens live 3 s
    second = jwt_claims(upstream_authorization(alice).removeprefix("Bearer "))
    assert second["jti"] != first["jti"] and second["iat"] > first["iat"], (first, second)
    assert second["exp"] > time.time(), "the new token is valid"


def stateless_list(resource: str, token: str, method: str) -> dict:
    """A 2026-07-28 (sessionless) list request."""
    body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": {
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"url": {}}}}}}
    return httpx.post(resource, json=body, timeout=10, headers={
        "Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method}).json()


def test_a_user_not_connected_yet_lists_the_approved_definitions_and_is_asked_at_the_first_call(
        oidc_as, processes, fixture_http, tmp_path):
    """Clients list first: a user who has not connected the upstream gets its tools, prompts and
    resources as the catalog approved them (renamed and filtered by policy exactly as live ones),
    and the consent link at the first call."""
    base, _saas_as, _fx, gw, _db = consent_stack(
        oidc_as, processes, fixture_http, tmp_path, top="catalog: {}\n",
        server=(', prefix: always, policy: { default: allow, rules: '
                '[{ name: hide-stats, effect: deny, tools: "fx__stats" }] }'))
    resource = base + "/mcp"
    config = tmp_path / "gatehouse-consent.yaml"
    token = {who: mint(oidc_as.issuer, sub=who, resource=resource, scope="mcp:tools")["access_token"]
             for who in ("alice", "bob")}

    # Alice connects; her listing records the upstream's definitions for review.
    alice = RawSession(resource, token["alice"]).open()
    assert browse(new_link(alice, "fx__whoami")).status_code == 200
    assert result_of(alice.request("tools/list"))["tools"] == [], "nothing is approved yet"
    for method in ("prompts/list", "resources/list"):
        result_of(alice.request(method))

    def cli(*args: str) -> str:
        out = subprocess.run([str(gateway_bin()), "catalog", *args, "--config", str(config)],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout

    deadline = time.monotonic() + 10
    while "whoami" not in cli("list", "--upstream", "fx"):
        assert time.monotonic() < deadline, "the listing's definitions were never recorded"
        time.sleep(0.2)
    time.sleep(0.5)  # the other kinds' rows are written by the same kind of task
    cli("approve", "fx", "--by", "reviewer", "--accept-findings")

    deadline = time.monotonic() + 10
    while not (live := result_of(alice.request("tools/list"))["tools"]):
        assert time.monotonic() < deadline, "the approval never reached the gateway"
        time.sleep(0.3)
    live_names = {t["name"] for t in live}
    assert "fx__whoami" in live_names and "fx__stats" not in live_names, live_names

    # Bob has never connected fx: his listings come from the catalog, with the same names,
    # the same filtering and the same definitions as Alice's live ones.
    bob = RawSession(resource, token["bob"]).open()
    listed = result_of(bob.request("tools/list"))["tools"]
    assert sorted(listed, key=lambda t: t["name"]) == sorted(live, key=lambda t: t["name"]), (listed, live)
    for method, key in (("prompts/list", "prompts"), ("resources/list", "resources")):
        theirs = result_of(bob.request(method))[key]
        ours = result_of(alice.request(method))[key]
        assert sorted(map(json.dumps, theirs)) == sorted(map(json.dumps, ours)), (method, theirs, ours)
    stateless = stateless_list(resource, token["bob"], "tools/list")
    assert {t["name"] for t in stateless["result"]["tools"]} == live_names, stateless

    # The first call asks for consent; a hidden tool stays unknown (policy before consent).
    error = bob.request("tools/call", {"name": "fx__whoami", "arguments": {}}).json()["error"]
    assert error["code"] == -32042 and error["data"]["elicitations"][0]["mode"] == "url", error
    hidden = bob.request("tools/call", {"name": "fx__stats", "arguments": {}}).json()["error"]
    assert hidden["code"] == -32602 and "Unknown tool" in hidden["message"], hidden

    # Alice disconnects: she too lists from the catalog, then connects again at her next call.
    gone = httpx.delete(f"{base}/connections/fx", headers={"Authorization": f"Bearer {token['alice']}"}, timeout=10)
    assert gone.status_code == 204
    assert sorted(result_of(alice.request("tools/list"))["tools"], key=lambda t: t["name"]) == \
        sorted(live, key=lambda t: t["name"])
    assert browse(new_link(alice, "fx__whoami")).status_code == 200
    seen = result_of(alice.request("tools/call", {"name": "fx__whoami", "arguments": {}}))
    assert jwt_claims(json.loads(seen["content"][0]["text"])["authorization"].removeprefix("Bearer "))["sub"] == "alice"
    for secret in token.values():
        assert secret not in gw.stderr()


def test_a_name_no_listed_member_offers_is_asked_for_by_the_member_to_connect(
        oidc_as, processes, fixture_http, tmp_path):
    """Federation without prefixes and without a catalog: the member the user has not connected is
    left out of the listing (the rest is listed), so its tools are unknown to the gateway; a call
    naming one goes to that member, which asks for consent, instead of answering unknown."""
    plain = fixture_http("--without-tool", "whoami")
    base, _saas_as, _fx, _gw, _db = consent_stack(
        oidc_as, processes, fixture_http, tmp_path, server=", prefix: never", members="[plain, fx]",
        more_upstreams=f'  plain: {{ kind: http, url: "{plain}" }}\n')
    resource = base + "/mcp"
    alice = RawSession(resource, mint(oidc_as.issuer, sub="alice", resource=resource, scope="mcp:tools")["access_token"]).open()
    names = {t["name"] for t in result_of(alice.request("tools/list"))["tools"]}
    assert "echo" in names and "whoami" not in names, names
    echoed = result_of(alice.request("tools/call", {"name": "echo", "arguments": {"text": "plain"}}))
    assert echoed["content"][0]["text"] == "plain", "the other member serves meanwhile"
    link = new_link(alice, "whoami")
    assert browse(link).status_code == 200
    names = {t["name"] for t in result_of(alice.request("tools/list"))["tools"]}
    assert "whoami" in names, names
    assert upstream_authorization(alice).startswith("Bearer "), "connected: whoami reaches fx"
