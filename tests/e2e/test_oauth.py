"""OAuth end to end with real components: the oidc-provider authorization server
(tests/node/oidc-as.mjs), the gateway as resource server, the project's fixture as upstream, and
the official Python MCP SDK's OAuth client (discovery, DCR, authorization code + PKCE, RFC 8707
resource, SEP-2350 step-up) driven headlessly.

mcp-remote (npm) is not covered: it is not installed and opens a browser for the authorization.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest

try:
    import httpx2 as httpx  # what the MCP SDK 2.x installs
except ImportError:  # pragma: no cover
    pytest.fail("httpx2 is missing: run `bash scripts/setup.sh` (it comes with mcp==2.3.0)", pytrace=False)

from mcp import ClientSession, types
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from conftest import free_port

INTROSPECTOR = ("gatehouse-introspector", "introspector-secret")
PROTOCOL = "2025-11-25"


@pytest.fixture
def anyio_backend():
    return "asyncio"


def gateway_yaml(issuer: str, fixture_url: str) -> str:
    return f"""auth:
  cache_max_ttl: 1s
  issuers:
    idp:
      issuer: {issuer}
      algorithms: [ES256, RS256]
      introspection:
        client_id: gatehouse-introspector
        client_secret: {{ env: GH_INTROSPECTION_SECRET }}
servers:
  - name: main
    path: /mcp
    upstreams: [fx]
    auth:
      scopes: [mcp:tools]
      require:
        - tools: "slow"
          scopes: [crm:write]
  - name: opaque
    path: /opaque/mcp
    upstreams: [fx]
    auth:
      scopes: [mcp:tools]
upstreams:
  fx: {{ kind: http, url: "{fixture_url}", protocol: "{PROTOCOL}" }}
"""


@pytest.fixture
def stack(oidc_as, start_gateway, fixture_http):
    """AS + fixture upstream + gateway; returns (AuthServer, gateway base URL)."""
    base = start_gateway(gateway_yaml(oidc_as.issuer, fixture_http()), env={"GH_INTROSPECTION_SECRET": INTROSPECTOR[1]})
    return oidc_as, base


def jwt_claims(token: str) -> dict:
    parts = token.split(".")
    assert len(parts) == 3, f"not a JWT: {token[:40]}…"
    seg = parts[1]
    return json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


def mint(issuer: str, **body) -> dict:
    resp = httpx.post(f"{issuer}/test/mint", json=body, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def www_authenticate(resp) -> dict:
    """The auth-params of a `Bearer k="v", …` challenge (values without escapes)."""
    header = resp.headers.get("www-authenticate", "")
    assert header.startswith("Bearer "), f"{resp.status_code} {header!r}"
    params, rest = {}, header[len("Bearer "):]
    while rest:
        key, _, rest = rest.strip().partition("=")
        assert rest.startswith('"'), header
        value, _, rest = rest[1:].partition('"')
        params[key.strip()] = value
        rest = rest.lstrip(", ")
    return params


# ---------------------------------------------------------------- raw MCP over HTTP


class RawSession:
    """initialize + notifications/initialized + requests, with an explicit bearer token."""

    def __init__(self, url: str, token: str | None, extra_headers: dict | None = None):
        self.url, self.token, self.extra, self.session_id, self.next_id = url, token, extra_headers or {}, None, 1

    def headers(self) -> dict:
        h = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json", **self.extra}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        if self.session_id:
            h["Mcp-Session-Id"] = self.session_id
            h["MCP-Protocol-Version"] = PROTOCOL
        return h

    def post(self, body: dict):
        return httpx.post(self.url, headers=self.headers(), json=body, timeout=10)

    def request(self, method: str, params: dict | None = None):
        self.next_id += 1
        return self.post({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params or {}})

    def open(self) -> "RawSession":
        resp = self.post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "e2e-oauth", "version": "1"}}})
        assert resp.status_code == 200, f"initialize: {resp.status_code} {resp.headers} {resp.text}"
        self.session_id = resp.headers.get("mcp-session-id")
        assert self.session_id, resp.headers
        ack = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert ack.status_code == 202, f"notifications/initialized: {ack.status_code} {ack.text}"
        return self


def result_of(resp) -> dict:
    assert resp.status_code == 200, f"{resp.status_code} {resp.headers} {resp.text}"
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert "result" in body, body
    return body["result"]


# ---------------------------------------------------------------- the SDK's OAuth client, headless


class MemoryStorage:
    """mcp.client.auth.TokenStorage in memory; keeps every token set, in order."""

    def __init__(self):
        self.tokens: list[OAuthToken] = []
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens[-1] if self.tokens else None

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens.append(tokens)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class AuthorizationRefused(Exception):
    """The AS sent the user agent to the redirect URI with an error instead of a code."""

    def __init__(self, query: dict):
        super().__init__(f"authorization refused: {query}")
        self.query = query


class HeadlessUser:
    """The user agent: follows the authorization redirects (cookie jar kept per authorization)
    until the AS sends it to the redirect URI, as a browser would after login and consent."""

    def __init__(self, redirect_uri: str, login_hint: str = "alice"):
        self.redirect_uri, self.login_hint = redirect_uri, login_hint
        self.authorization_urls: list[str] = []
        self.pending: AuthorizationCodeResult | None = None

    async def redirect_handler(self, url: str) -> None:
        self.authorization_urls.append(url)
        if "login_hint" not in parse_qs(urlsplit(url).query):  # the SDK does not send one
            url += "&login_hint=" + self.login_hint
        async with httpx.AsyncClient(follow_redirects=False, timeout=10) as ua:
            for _ in range(10):
                resp = await ua.get(url)
                assert resp.status_code in (302, 303), f"{url}: {resp.status_code} {resp.text[:500]}"
                url = urljoin(url, resp.headers["location"])
                if url.startswith(self.redirect_uri + "?"):
                    q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
                    if "code" not in q:
                        raise AuthorizationRefused(q)
                    self.pending = AuthorizationCodeResult(code=q["code"], state=q.get("state"), iss=q.get("iss"))
                    return
        raise AssertionError(f"no redirect to {self.redirect_uri} within 10 hops (last {url})")

    async def callback_handler(self) -> AuthorizationCodeResult:
        assert self.pending is not None, "callback before the redirect reached the redirect URI"
        result, self.pending = self.pending, None
        return result


class OAuthClient:
    """OAuthClientProvider + storage + user + a log of every HTTP exchange the SDK made."""

    def __init__(self, mcp_url: str):
        self.mcp_url = mcp_url
        self.redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
        self.storage = MemoryStorage()
        self.user = HeadlessUser(self.redirect_uri)
        self.exchanges: list[tuple[str, str, int]] = []  # (method, url without query, status)
        self.registrations: list[dict] = []  # bodies of the DCR requests the SDK sent
        self.provider = OAuthClientProvider(
            server_url=mcp_url,
            client_metadata=OAuthClientMetadata(
                client_name="gatehouse-e2e",
                redirect_uris=[self.redirect_uri],
                grant_types=["authorization_code", "refresh_token"],
                response_types=["code"],
                token_endpoint_auth_method="none",
            ),
            storage=self.storage,
            redirect_handler=self.user.redirect_handler,
            callback_handler=self.user.callback_handler,
        )

    async def _record(self, response) -> None:
        url = str(response.request.url).split("?", 1)[0]
        self.exchanges.append((response.request.method, url, response.status_code))
        if response.request.method == "POST" and url.endswith("/reg"):
            self.registrations.append(json.loads(response.request.content))

    def preregister(self, issuer: str, scope: str) -> OAuthClientInformationFull:
        """Registers the client out of band (as an administrator would, allowed `scope`) and puts
        it in the storage, so the SDK uses it instead of registering itself."""
        resp = httpx.post(f"{issuer}/reg", json={
            "client_name": "gatehouse-e2e (pre-registered)", "redirect_uris": [self.redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
            "token_endpoint_auth_method": "none", "application_type": "native", "scope": scope})
        assert resp.status_code == 201, resp.text
        info = OAuthClientInformationFull.model_validate(resp.json())
        info.issuer = issuer  # SEP-2352 binding, as the SDK records it after its own DCR
        self.storage.client_info = info
        return info

    def mark(self) -> int:
        return len(self.exchanges)

    @asynccontextmanager
    async def session(self):
        http = httpx.AsyncClient(auth=self.provider, timeout=30, event_hooks={"response": [self._record]})
        async with http, streamable_http_client(self.mcp_url, http_client=http) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=20) as session:
                await session.initialize()
                yield session


def assert_in_order(exchanges, expected) -> None:
    """Every (method, url, status) of `expected` occurs in `exchanges`, in this order."""
    pos = 0
    for want in expected:
        for i in range(pos, len(exchanges)):
            if exchanges[i] == want:
                pos = i + 1
                break
        else:
            raise AssertionError(f"{want} not found (in order) in:\n" + "\n".join(map(str, exchanges)))


# ---------------------------------------------------------------- tests


@pytest.mark.anyio
async def test_python_sdk_discovers_registers_and_authorizes_headlessly(stack):
    idp, base = stack
    issuer, resource = idp.issuer, base + "/mcp"
    client = OAuthClient(resource)
    async with client.session() as session:
        tools = {t.name for t in (await session.list_tools()).tools}
        assert {"echo", "slow", "whoami", "stats"} <= tools, sorted(tools)
        assert text_of(await session.call_tool("echo", {"text": "hi"})) == "hi"
        seen = json.loads(text_of(await session.call_tool("whoami", {})))
        assert "authorization" not in seen, seen

    # 401 -> RFC 9728 metadata -> AS metadata -> DCR -> (user agent) -> token -> retried request.
    assert_in_order(client.exchanges, [
        ("POST", resource, 401),
        ("GET", f"{base}/.well-known/oauth-protected-resource/mcp", 200),
        ("GET", f"{issuer}/.well-known/oauth-authorization-server", 200),
        ("POST", f"{issuer}/reg", 201),
        ("POST", f"{issuer}/token", 200),
        ("POST", resource, 200),
    ])
    assert len(client.user.authorization_urls) == 1, client.user.authorization_urls
    auth_url = client.user.authorization_urls[0]
    assert auth_url.startswith(f"{issuer}/auth?"), auth_url
    q = {k: v[0] for k, v in parse_qs(urlsplit(auth_url).query).items()}
    assert q["resource"] == resource and q["code_challenge_method"] == "S256", q
    assert q["client_id"] == client.storage.client_info.client_id and q["redirect_uri"] == client.redirect_uri
    assert "mcp:tools" in q["scope"].split() and "crm:write" not in q["scope"].split(), q["scope"]
    assert "alice grants" in idp.log(), idp.log()[-2000:]

    assert len(client.storage.tokens) == 1, client.storage.tokens
    token = client.storage.tokens[0]
    claims = jwt_claims(token.access_token)
    assert claims["aud"] == resource and claims["sub"] == "alice" and claims["iss"] == issuer, claims
    assert claims["client_id"] == client.storage.client_info.client_id
    assert set(claims["scope"].split()) == {"mcp:tools"}, claims["scope"]


@pytest.mark.anyio
async def test_python_sdk_steps_up_on_insufficient_scope(stack):
    """A client allowed every scope of the resource (pre-registered, see the next test for why):
    the first authorization asks for the 401's scope only; the call to `slow` gets 403
    insufficient_scope and the SDK re-authorizes with the union of scopes within that call."""
    idp, base = stack
    issuer, resource = idp.issuer, base + "/mcp"
    client = OAuthClient(resource)
    registered = client.preregister(issuer, "mcp:tools crm:write offline_access")
    async with client.session() as session:
        assert text_of(await session.call_tool("echo", {"text": "before"})) == "before"
        assert len(client.storage.tokens) == 1
        first = client.storage.tokens[0]
        assert set(first.scope.split()) == {"mcp:tools"}, first.scope
        assert set(jwt_claims(first.access_token)["scope"].split()) == {"mcp:tools"}

        mark = client.mark()
        result = await session.call_tool("slow", {"ms": 1})
        assert not result.is_error and text_of(result) == "slept 1ms", result
        after = client.exchanges[mark:]
        # the same call: 403 insufficient_scope -> re-authorization -> token -> retried call
        assert_in_order(after, [("POST", resource, 403), ("POST", f"{issuer}/token", 200), ("POST", resource, 200)])
        assert not client.registrations, "the pre-registered client must be used"

        # the scope asked for is the union of the earlier grant and the challenge
        assert len(client.user.authorization_urls) == 2, client.user.authorization_urls
        q = parse_qs(urlsplit(client.user.authorization_urls[1]).query)
        assert q["client_id"] == [registered.client_id] and q["resource"] == [resource], q
        assert {"mcp:tools", "crm:write"} <= set(q["scope"][0].split()), q["scope"]
        assert len(client.storage.tokens) == 2, client.storage.tokens
        second = client.storage.tokens[1]
        assert {"mcp:tools", "crm:write"} <= set(second.scope.split()), second.scope
        claims = jwt_claims(second.access_token)
        assert set(claims["scope"].split()) == {"mcp:tools", "crm:write"} and claims["aud"] == resource, claims
        assert claims["sub"] == "alice"

        # the stepped-up token still does everything the first one did, without another round
        mark = client.mark()
        assert text_of(await session.call_tool("echo", {"text": "after"})) == "after"
        assert text_of(await session.call_tool("slow", {"ms": 1})) == "slept 1ms"
        assert all(e[2] in (200, 202) for e in client.exchanges[mark:]), client.exchanges[mark:]
        assert len(client.storage.tokens) == 2


@pytest.mark.anyio
async def test_python_sdk_step_up_after_its_own_dcr_is_refused_by_the_as(stack):
    """Known SDK/AS interaction (not a gateway issue): the SDK registers (DCR) with the scope of the
    first challenge, `mcp:tools offline_access`; oidc-provider then allows that client those scopes
    only (RFC 7591 `scope`), so the step-up authorization for `crm:write` ends with
    error=invalid_scope and the call fails. If this test starts failing, the SDK (or the AS) changed:
    fold the step-up test above back onto the SDK's own registration. `challenge_scopes: all` is
    the gateway's answer to it (tests/e2e/test_step_up.py)."""
    idp, base = stack
    resource = base + "/mcp"
    client = OAuthClient(resource)
    with pytest.raises(BaseExceptionGroup) as excinfo:
        async with client.session() as session:
            assert text_of(await session.call_tool("echo", {"text": "x"})) == "x"
            await session.call_tool("slow", {"ms": 1})
    assert excinfo.group_contains(AuthorizationRefused, match="invalid_scope"), excinfo.value
    assert [r.get("scope") for r in client.registrations] == ["mcp:tools offline_access"], client.registrations
    assert len(client.user.authorization_urls) == 2
    assert {"mcp:tools", "crm:write"} <= set(parse_qs(urlsplit(client.user.authorization_urls[1]).query)["scope"][0].split())
    assert ("POST", resource, 403) in client.exchanges


def test_gateway_sends_a_403_insufficient_scope_challenge(stack):
    """What the SDK reacted to above, seen raw: the challenge names every scope the call needs."""
    idp, base = stack
    token = mint(idp.issuer, resource=base + "/mcp", scope="mcp:tools", format="jwt")["access_token"]
    s = RawSession(base + "/mcp", token).open()
    resp = s.request("tools/call", {"name": "slow", "arguments": {"ms": 1}})
    assert resp.status_code == 403, f"{resp.status_code} {resp.text}"
    challenge = www_authenticate(resp)
    assert challenge["error"] == "insufficient_scope", challenge
    assert challenge["scope"] == "mcp:tools crm:write", challenge
    assert challenge["resource_metadata"] == f"{base}/.well-known/oauth-protected-resource/mcp", challenge
    # and without any token: 401 with the metadata pointer and the base scope
    anon = RawSession(base + "/mcp", None).post({"jsonrpc": "2.0", "id": 9, "method": "initialize", "params": {
        "protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}}})
    assert anon.status_code == 401, anon.text
    challenge = www_authenticate(anon)
    assert challenge["scope"] == "mcp:tools" and challenge["resource_metadata"].endswith("/oauth-protected-resource/mcp"), challenge
    meta = httpx.get(challenge["resource_metadata"]).json()
    assert meta["resource"] == base + "/mcp" and meta["authorization_servers"] == [idp.issuer], meta
    assert meta["scopes_supported"] == ["mcp:tools", "crm:write"], meta


def test_token_and_cookies_never_reach_the_upstream(stack):
    idp, base = stack
    token = mint(idp.issuer, resource=base + "/mcp", scope="mcp:tools", format="jwt")["access_token"]
    cookie = "session=s3cr3t-cookie; other=1"
    s = RawSession(base + "/mcp", token, {"Cookie": cookie}).open()
    seen_text = result_of(s.request("tools/call", {"name": "whoami", "arguments": {}}))["content"][0]["text"]
    seen = {k.lower(): v for k, v in json.loads(seen_text).items()}
    assert "host" in seen and "mcp-session-id" in seen, seen  # it is the upstream's view of the request
    assert "authorization" not in seen and "cookie" not in seen, seen
    assert token not in seen_text and "s3cr3t-cookie" not in seen_text, seen
    assert seen["mcp-session-id"] != s.session_id, "the client's session id must not be passed through"


def test_opaque_token_is_introspected_and_revocation_takes_effect_after_cache_max_ttl(stack):
    idp, base = stack
    resource = base + "/opaque/mcp"  # oidc-as issues opaque tokens for resources containing /opaque
    minted = mint(idp.issuer, resource=resource, scope="mcp:tools")
    token = minted["access_token"]
    assert minted["format"] == "opaque" and "." not in token, minted
    s = RawSession(resource, token).open()
    tools = {t["name"] for t in result_of(s.request("tools/list"))["tools"]}
    assert {"echo", "whoami"} <= tools, tools
    assert result_of(s.request("tools/call", {"name": "echo", "arguments": {"text": "opaque"}}))["content"][0]["text"] == "opaque"

    revoked = httpx.post(f"{idp.issuer}/token/revocation", data={"token": token}, auth=INTROSPECTOR)
    assert revoked.status_code == 200, revoked.text
    active = httpx.post(f"{idp.issuer}/token/introspection", data={"token": token}, auth=INTROSPECTOR).json()
    assert active == {"active": False}, active
    time.sleep(1.5)  # auth.cache_max_ttl is 1s: no introspection answer is trusted longer
    resp = s.request("tools/list")
    assert resp.status_code == 401, f"revoked token still accepted after cache_max_ttl: {resp.status_code} {resp.text}"
    challenge = www_authenticate(resp)
    assert challenge["error"] == "invalid_token" and "not active" in challenge["error_description"], challenge

    # an opaque token for the other server's resource is refused there (audience from introspection)
    other = mint(idp.issuer, resource=base + "/mcp", scope="mcp:tools", format="opaque")["access_token"]
    resp = RawSession(resource, other).post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert resp.status_code == 401 and www_authenticate(resp)["error"] == "invalid_token", resp.text


def test_jwt_for_another_resource_is_refused(stack):
    idp, base = stack
    resource = base + "/mcp"
    # control: the same kind of token for this resource is accepted
    good = mint(idp.issuer, resource=resource, scope="mcp:tools", format="jwt")["access_token"]
    assert result_of(RawSession(resource, good).open().request("tools/list"))["tools"]

    elsewhere = "http://127.0.0.1:1/elsewhere"
    bad = mint(idp.issuer, resource=elsewhere, scope="mcp:tools", format="jwt")["access_token"]
    assert jwt_claims(bad)["aud"] == elsewhere
    resp = RawSession(resource, bad).post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}}})
    assert resp.status_code == 401, f"{resp.status_code} {resp.text}"
    challenge = www_authenticate(resp)
    assert challenge["error"] == "invalid_token", challenge
    assert "audience" in challenge["error_description"] and elsewhere in challenge["error_description"], challenge
    assert challenge["resource_metadata"] == f"{base}/.well-known/oauth-protected-resource/mcp", challenge


@pytest.mark.anyio
async def test_python_sdk_gets_an_opaque_token_that_the_gateway_introspects(stack):
    """The real token endpoint, not /test/mint: for a resource containing /opaque the AS issues an
    opaque access token; the gateway accepts it through introspection."""
    idp, base = stack
    resource = base + "/opaque/mcp"
    client = OAuthClient(resource)
    async with client.session() as session:
        assert text_of(await session.call_tool("echo", {"text": "via introspection"})) == "via introspection"
    assert len(client.storage.tokens) == 1
    token = client.storage.tokens[0].access_token
    assert "." not in token, "expected an opaque token"
    info = httpx.post(f"{idp.issuer}/token/introspection", data={"token": token}, auth=INTROSPECTOR).json()
    assert info["active"] is True and info["aud"] == resource and info["sub"] == "alice", info
    assert_in_order(client.exchanges, [
        ("POST", resource, 401),
        ("GET", f"{base}/.well-known/oauth-protected-resource/opaque/mcp", 200),
        ("POST", f"{idp.issuer}/token", 200),
        ("POST", resource, 200),
    ])


def read_response(sock: socket.socket) -> tuple[str, dict, bytes]:
    """One HTTP/1.1 response with a Content-Length body: (status line, headers, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return status, headers, body


def test_a_401_sent_before_the_body_leaves_the_connection_usable_or_says_close(stack):
    """The 401 to a request without a token is the first step of every OAuth client; the client's
    next request (RFC 9728 metadata) reuses the keep-alive connection. A server that answers before
    reading the body and then drops the connection must say `Connection: close`, else clients such
    as httpx fail with "Server disconnected without sending a response" (this made the SDK tests
    above fail now and then, whenever the body reached the gateway after its answer)."""
    _idp, base = stack
    host, port = urlsplit(base).hostname, urlsplit(base).port
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(
            f"POST /mcp HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json, text/event-stream\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        status, headers, _ = read_response(sock)  # the gateway answers from the headers alone
        assert status.startswith("HTTP/1.1 401"), status
        time.sleep(0.1)  # the body arrives late, as it may from any client (deterministic worst case)
        sock.sendall(body)
        if "close" in headers.get("connection", "").lower():
            return  # announced: a client opens a new connection for its next request
        time.sleep(0.2)
        try:
            sock.sendall(f"GET /.well-known/oauth-protected-resource/mcp HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            status, _, meta = read_response(sock)
        except (OSError, AssertionError) as e:
            pytest.fail(f"the gateway closed the connection after its 401 without `Connection: close` "
                        f"(401 headers: {headers}); the next request on it failed: {e!r}")
        assert status.startswith("HTTP/1.1 200") and json.loads(meta)["resource"] == base + "/mcp", (status, meta)
