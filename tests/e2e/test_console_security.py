"""The admin console's security properties over plain HTTP (issue 18), against the real test IdP
(tests/node/oidc-as.mjs) and the project's fixture as a catalog-governed upstream.

The user agent is headless: the sign-in follows the redirects through the IdP's headless login
(the account is chosen by `login_hint`), and the console's cookies are carried by hand, because
they are `Secure` and a cookie jar would not send them over http (a browser does, to 127.0.0.1).

What is checked: the session cookie's attributes, the CSP and framing headers on every page, a
form without (or with a wrong) CSRF token or from another origin refused, a reader refused an
action, a hostile tool description (`<script>`, bidi override) shown as inert visible text, the
sign-out ending the session even for a copy of its cookie, and the refusal of an account that is
neither administrator nor reader.
"""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import urljoin

import httpx2 as httpx  # what the MCP SDK 2.x installs
import pytest

from conftest import fixture_bin, free_port, gateway_bin

HOSTILE = "<script>alert(1)</script>\u202eevil"


def register_console_client(issuer: str) -> tuple[str, str]:
    """Registers the console's OIDC client at the IdP by dynamic registration (a native client:
    its loopback redirect URI matches any port)."""
    r = httpx.post(
        f"{issuer}/reg",
        json={
            "application_type": "native",
            "redirect_uris": ["http://127.0.0.1/admin/callback"],
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic",
            "scope": "openid profile email",
        },
    )
    assert r.status_code == 201, r.text
    body = r.json()
    return body["client_id"], body["client_secret"]


@pytest.fixture
def console(processes, oidc_as, tmp_path):
    client_id, secret = register_console_client(oidc_as.issuer)
    port = free_port()
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
upstreams:
  fx:
    kind: stdio
    command: "{fixture_bin()}"
    args: ["stdio", "--tool-description-suffix", "{HOSTILE.encode('unicode_escape').decode()}"]
admin:
  groups: [engineering]
  console:
    idp: {{ flavor: oidc, issuer: "{oidc_as.issuer}", client_id: "{client_id}", client_secret: {{ env: CONSOLE_SECRET }} }}
"""
    )
    p = processes(
        [gateway_bin(), "serve", "--config", config],
        env={"RUST_LOG": "gatehouse=debug,info", "CONSOLE_SECRET": secret},
    )
    assert p.read_line_starting("gatehouse listening on ") == base
    return base


def set_cookies(resp: httpx.Response) -> dict[str, str]:
    """`Set-Cookie` headers by cookie name (the whole header, attributes included)."""
    return {h.split("=", 1)[0]: h for h in resp.headers.get_list("set-cookie")}


def value(header: str) -> str:
    return header.split(";", 1)[0].split("=", 1)[1]


def sign_in(base: str, account: str) -> httpx.Response:
    """Signs `account` in; returns the console's answer to the IdP's redirect back."""
    gw = httpx.Client(follow_redirects=False, timeout=10)
    r = gw.get(f"{base}/admin/login", params={"login_hint": account})
    assert r.status_code in (302, 303), r.text
    login_cookie = set_cookies(r)["__Host-gatehouse-console-login"]
    idp = httpx.Client(follow_redirects=False, timeout=10)
    location = r.headers["location"]
    for _ in range(10):
        if location.startswith(f"{base}/admin/callback"):
            break
        r = idp.get(location)
        assert r.status_code in (302, 303), (r.status_code, r.text[:500])
        location = urljoin(location, r.headers["location"])
    else:
        pytest.fail(f"the IdP never sent the browser back: {location}")
    return gw.get(location, headers={"cookie": f"__Host-gatehouse-console-login={value(login_cookie)}"})


class Staff:
    """A signed-in staff member's session cookie."""

    def __init__(self, base: str, account: str):
        self.base = base
        r = sign_in(base, account)
        assert r.status_code in (302, 303) and r.headers["location"] == "/admin/", (r.status_code, r.text[:500])
        self.set_cookie = set_cookies(r)["__Host-gatehouse-console"]
        self.cookie = f"__Host-gatehouse-console={value(self.set_cookie)}"
        self.http = httpx.Client(base_url=base, headers={"cookie": self.cookie}, timeout=30, follow_redirects=False)

    def page(self, path: str, **params) -> httpx.Response:
        r = self.http.get(path, params=params)
        assert r.status_code == 200, (path, r.status_code, r.text[:500])
        return r

    def csrf(self, html: str) -> str:
        m = re.search(r'name="csrf" value="([^"]+)"', html)
        assert m, "every page carries the sign-out form with its CSRF token"
        return unescape(m.group(1))


def test_session_cookie_and_headers(console):
    alice = Staff(console, "alice")
    attrs = [a.strip().lower() for a in alice.set_cookie.split(";")[1:]]
    assert "secure" in attrs and "httponly" in attrs and "path=/" in attrs, attrs
    assert "samesite=lax" in attrs, attrs
    assert not any(a.startswith("domain") for a in attrs), "a __Host- cookie has no Domain"
    for path in ["/admin/", "/admin/upstreams", "/admin/audit", "/admin/access", "/admin/policy"]:
        r = alice.page(path)
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, csp
        assert "script-src" not in csp, "no script is allowed at all"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["cache-control"] == "no-store"
        assert "<script" not in r.text.lower()
    # Without a session: sent to sign in, never shown a page.
    r = httpx.get(f"{console}/admin/audit", follow_redirects=False)
    assert r.status_code in (302, 303) and r.headers["location"] == "/admin/login"


def test_forms_need_the_csrf_token_and_this_origin(console):
    alice = Staff(console, "alice")
    csrf = alice.csrf(alice.page("/admin/upstreams").text)
    url = "/admin/upstreams/fx/decide"
    form = {"decision": "approve", "reason": "looks fine"}
    for bad in [form, {**form, "csrf": "not-the-token"}]:
        r = alice.http.post(url, data=bad)
        assert r.status_code == 403 and "CSRF" in r.text, (r.status_code, r.text[:300])
    r = alice.http.post(url, data={**form, "csrf": csrf}, headers={"origin": "https://evil.example"})
    assert r.status_code == 403 and "another origin" in r.text
    r = alice.http.post(url, data={**form, "csrf": csrf}, headers={"sec-fetch-site": "cross-site"})
    assert r.status_code == 403
    # The catalog was not touched by any of them.
    assert "unregistered" in alice.page("/admin/upstreams").text
    # With the token, from this origin: registered, then approved (what the forms are for).
    r = alice.http.post("/admin/upstreams/fx/register", data={"csrf": csrf}, headers={"origin": console})
    assert r.status_code == 303, r.text
    assert "Registered" in unescape(alice.http.get(r.headers["location"]).text)


def test_hostile_upstream_text_is_inert_and_visible(console):
    alice = Staff(console, "alice")
    csrf = alice.csrf(alice.page("/admin/").text)
    r = alice.http.post("/admin/upstreams/fx/register", data={"csrf": csrf})
    assert r.status_code == 303
    page = alice.page("/admin/upstreams/fx/review", definition="echo").text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\u202e" not in page, "the bidi override is never sent raw"
    assert "U+202E" in page, "it is shown as a visible mark"
    # The scanner's finding about it is on the page too.
    assert "Scanner findings" in page


def test_a_reader_sees_but_cannot_act_and_others_are_refused(processes, oidc_as, tmp_path):
    client_id, secret = register_console_client(oidc_as.issuer)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = tmp_path / "reader.yaml"
    config.write_text(
        f"""
listen: 127.0.0.1:{port}
ops: {{ listen: 127.0.0.1:0 }}
store: {{ url: "sqlite://{tmp_path}/reader.db" }}
servers:
  - {{ name: main, path: /mcp, upstreams: [fx] }}
upstreams:
  fx: {{ kind: stdio, command: "{fixture_bin()}", args: [stdio] }}
admin:
  subjects: [nobody-here]
  console:
    idp: {{ issuer: "{oidc_as.issuer}", client_id: "{client_id}", client_secret: {{ env: CONSOLE_SECRET }} }}
    readers: {{ groups: [engineering] }}
"""
    )
    p = processes([gateway_bin(), "serve", "--config", config], env={"CONSOLE_SECRET": secret})
    assert p.read_line_starting("gatehouse listening on ") == base
    alice = Staff(base, "alice")  # engineering: a reader here
    access = alice.page("/admin/access").text
    assert "read-only" in access and "Create key" not in access
    csrf = alice.csrf(access)
    r = alice.http.post("/admin/access/keys", data={"csrf": csrf, "subject": "agent"})
    assert r.status_code == 403 and "not change anything" in r.text
    # bob (contractors) is neither administrator nor reader.
    r = sign_in(base, "bob")
    assert r.status_code == 403 and "Not an administrator" in r.text
    assert "__Host-gatehouse-console" not in set_cookies(r)


def test_sign_out_ends_the_session_for_every_copy_of_the_cookie(console):
    alice = Staff(console, "alice")
    copy = httpx.Client(base_url=console, headers={"cookie": alice.cookie}, follow_redirects=False)
    csrf = alice.csrf(alice.page("/admin/").text)
    r = alice.http.post("/admin/logout", data={"csrf": csrf})
    assert r.status_code == 200 and "Signed out" in r.text
    assert "max-age=0" in set_cookies(r)["__Host-gatehouse-console"].lower()
    r = copy.get("/admin/")
    assert r.status_code in (302, 303) and r.headers["location"] == "/admin/login"


def test_an_administrator_ends_an_mcp_session(console):
    mcp = httpx.Client(base_url=console, timeout=30)
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    r = mcp.post(
        "/mcp",
        headers=headers,
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "<b>agent\u202e", "version": "1"}},
        },
    )
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    alice = Staff(console, "alice")
    page = alice.page("/admin/access").text
    assert "&lt;b&gt;agent" in page and "U+202E" in page, "the client's name is shown inert"
    handle = re.search(r'action="/admin/access/sessions/end".*?name="id" value="([0-9a-f]+)"', page, re.S).group(1)
    assert sid not in page, "the session id itself is a credential and is never shown"
    r = alice.http.post("/admin/access/sessions/end", data={"csrf": alice.csrf(page), "id": handle})
    assert r.status_code == 303 and "done=" in r.headers["location"], r.text
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    r = mcp.post("/mcp", headers={**headers, "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"}, json=ping)
    assert r.status_code == 404, (r.status_code, r.text)


def test_the_console_can_be_served_on_the_ops_listener_only(processes, oidc_as, tmp_path):
    client_id, secret = register_console_client(oidc_as.issuer)
    port, ops_port = free_port(), free_port()
    config = tmp_path / "ops.yaml"
    config.write_text(
        f"""
listen: 127.0.0.1:{port}
ops: {{ listen: 127.0.0.1:{ops_port} }}
store: {{ url: "sqlite://{tmp_path}/ops.db" }}
servers:
  - {{ name: main, path: /mcp, upstreams: [fx] }}
upstreams:
  fx: {{ kind: stdio, command: "{fixture_bin()}", args: [stdio] }}
admin:
  groups: [engineering]
  console:
    listener: ops
    idp: {{ issuer: "{oidc_as.issuer}", client_id: "{client_id}", client_secret: {{ env: CONSOLE_SECRET }} }}
"""
    )
    p = processes([gateway_bin(), "serve", "--config", config], env={"CONSOLE_SECRET": secret})
    p.read_line_starting("gatehouse listening on ")
    ops = f"http://127.0.0.1:{ops_port}"
    # Not on the MCP listener at all.
    assert httpx.get(f"http://127.0.0.1:{port}/admin/login").status_code == 404
    alice = Staff(ops, "alice")
    assert "Overview" in alice.page("/admin/").text
    r = httpx.get(f"{ops}/admin/login", follow_redirects=False)
    assert f"redirect_uri=http%3A%2F%2F127.0.0.1%3A{ops_port}%2Fadmin%2Fcallback" in r.headers["location"]
