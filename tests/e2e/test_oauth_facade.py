"""The authorization-server façade (issue 8) end to end: MCP clients register with and get tokens
from Gatehouse itself, while users sign in at the enterprise IdP through OpenID Connect.

Real parts: the IdP is tests/node/oidc-as.mjs started `--entra-like` (no dynamic registration, no
RFC 8707 resource indicators — a `resource` sent to it is refused —, no RFC 8414 metadata) with an
Entra-shaped issuer (`--issuer-path /e2e-tenant/v2.0`: the `entra` flavor insists on a v2.0
issuer), and the static client `gatehouse-facade` as Gatehouse's own OIDC client; the upstream is the project's
fixture (its `echo` tool); the clients are the official Python MCP SDK (`OAuthClientProvider`,
with a client ID metadata document and with dynamic registration) and plain httpx for everything
a well-behaved SDK would never send. Client ID metadata documents are served by a small server in
this file, over https (the SDK accepts only https client ids; the gateway trusts the test CA
through SSL_CERT_FILE, which rustls-native-certs reads) and over plain http on 127.0.0.1 (the
façade's test mode, `cimd.allow_private_addresses: true`).

The user agent is headless: `Facade.login` follows the authorization redirects with a cookie jar,
through the IdP's headless login back to /oauth/callback, reads the consent page and posts the
decision, and returns the query of the final redirect to the client.

Contract details assumed beyond the brief are marked ASSUMED.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import secrets
import ssl
import threading
import time
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import anyio
import pytest

try:
    import httpx2 as httpx  # what the MCP SDK 2.x installs
except ImportError:  # pragma: no cover
    pytest.fail("httpx2 is missing: run `bash scripts/setup.sh` (it comes with mcp==2.3.0)", pytrace=False)

from mcp import ClientSession
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientMetadata

from conftest import AuthServer, Proc, fixture_bin, free_port, gateway_bin
from test_oauth import PROTOCOL, MemoryStorage, RawSession, assert_in_order, jwt_claims, text_of

IDP_CLIENT = ("gatehouse-facade", "facade-secret")  # Gatehouse's client at the IdP
IDP_EXCHANGER = ("gatehouse-exchanger", "exchanger-secret")  # may ask the IdP for ID-JAGs
# Clients of the façade. `gatehouse-exchanger` has the same id as the IdP's exchanger, because the
# IdP puts the exchanging client's own id in the ID-JAG's client_id claim (see oidc-as.mjs).
STATIC_CLIENT = "static-client"
STATIC_REDIRECT = "http://127.0.0.1/callback"
AGENT = ("gatehouse-exchanger", "agent-secret")
OTHER_AGENT = ("other-agent", "other-agent-secret")
CIMD_MAX_BYTES = 5120
CIMD_TIMEOUT = 2.0
ID_JAG_TYP = "oauth-id-jag+jwt"
GT_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
TT_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
TT_ID_JAG = "urn:ietf:params:oauth:token-type:id-jag"


@pytest.fixture
def anyio_backend():
    return "asyncio"


def query_of(url: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def jwt_header(token: str) -> dict:
    seg = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def result_of(resp) -> dict:
    """The JSON-RPC result of a response, sent as JSON or as an SSE stream."""
    assert resp.status_code == 200, f"{resp.status_code} {resp.headers} {resp.text[:1000]}"
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        messages = [json.loads(line[5:]) for line in resp.text.splitlines() if line.startswith("data:") and line[5:].strip()]
        body = next(m for m in reversed(messages) if "result" in m or "error" in m)
    else:
        body = resp.json()
    assert "result" in body, body
    return body["result"]


def aud_list(claims: dict) -> list:
    aud = claims.get("aud")
    return aud if isinstance(aud, list) else [aud]


def assert_oauth_error(resp, status: int, error: str | set[str]) -> dict:
    """An RFC 6749 JSON error answer with this status and error code (or one of them)."""
    assert resp.status_code == status, f"expected {status} {error}, got {resp.status_code} {resp.headers} {resp.text[:1000]}"
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    body = resp.json()
    wanted = {error} if isinstance(error, str) else error
    assert body.get("error") in wanted, body
    assert isinstance(body.get("error_description", ""), str), body
    return body


# ---------------------------------------------------------------- a test CA for the https CIMD server


def make_test_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Gatehouse e2e test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1")), x509.DNSName("localhost")]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem, cert_pem, key_pem = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return ca_pem, cert_pem, key_pem


# ---------------------------------------------------------------- the client metadata document server


@dataclass
class Doc:
    """One document: `body` (a dict is sent as JSON), served after `delay` seconds; without
    `content_length` the body is close-delimited (HTTP/1.0, no Content-Length header)."""

    body: dict | bytes
    status: int = 200
    delay: float = 0.0
    content_length: bool = True


class DocServer:
    """Serves client metadata documents on 127.0.0.1, over http and https (same documents, one
    port each); counts requests per path and accepted connections per listener."""

    def __init__(self, cert: Path, key: Path):
        self.docs: dict[str, Doc] = {}
        self.hits: Counter = Counter()
        self.connections: Counter = Counter()
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self):  # noqa: N802
                path = self.path.split("?", 1)[0]
                with outer.lock:
                    outer.hits[path] += 1
                    doc = outer.docs.get(path)
                try:
                    if doc is None:
                        self.send_error(404)
                        return
                    if doc.delay:
                        time.sleep(doc.delay)
                    body = doc.body if isinstance(doc.body, bytes) else json.dumps(doc.body).encode()
                    self.send_response(doc.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Cache-Control", "no-store")
                    if doc.content_length:
                        self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (OSError, ssl.SSLError):
                    pass  # the gateway gave up (timeout, size): nothing to tell anyone

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            tls: ssl.SSLContext | None = None
            name = "http"

            def verify_request(self, request, client_address):
                with outer.lock:
                    outer.connections[self.name] += 1
                return True

            def get_request(self):
                sock, addr = super().get_request()
                if self.tls is not None:
                    # The handshake happens on first read, in the handler's thread.
                    sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                return sock, addr

            def handle_error(self, request, client_address):
                pass  # TLS failures and dropped connections are expected in some tests

        self.http = Server(("127.0.0.1", 0), Handler)
        self.https = Server(("127.0.0.1", 0), Handler)
        self.https.name = "https"
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.https.tls = ctx
        self.threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (self.http, self.https)]
        for t in self.threads:
            t.start()

    def url(self, path: str, tls: bool = False) -> str:
        server = self.https if tls else self.http
        return f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}{path}"

    def add(self, path: str, doc: Doc | None = None, tls: bool = False, **metadata) -> str:
        """Serves `doc`, or a valid public-client document for its own URL updated with
        `metadata`; returns the URL (the client_id)."""
        url = self.url(path, tls)
        if doc is None:
            body = {
                "client_id": url,
                "client_name": "Facade E2E (CIMD)",
                "redirect_uris": [f"http://127.0.0.1:{free_port()}/callback"],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
            }
            body.update(metadata)
            doc = Doc(body)
        with self.lock:
            self.docs[path] = doc
        return url

    def close(self):
        for s in (self.http, self.https):
            s.shutdown()
            s.server_close()


# ---------------------------------------------------------------- the consent page


class ConsentForm(HTMLParser):
    """The forms of a page with their inputs and buttons."""

    def __init__(self):
        super().__init__()
        self.forms: list[dict] = []
        self.current: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self.current = {"method": a.get("method", "get").lower(), "action": a.get("action", ""), "fields": []}
            self.forms.append(self.current)
        elif tag in ("input", "button") and self.current is not None:
            kind = a.get("type", "submit" if tag == "button" else "text").lower()
            self.current["fields"].append({"tag": tag, "type": kind, "name": a.get("name", ""), "value": a.get("value", "")})

    def handle_endtag(self, tag):
        if tag == "form":
            self.current = None


def parse_consent_page(page: str) -> tuple[str, str]:
    """(action, ticket) of the page's consent form; asserts the contract's shape."""
    parser = ConsentForm()
    parser.feed(page)
    forms = [f for f in parser.forms if f["method"] == "post" and f["action"] == "/oauth/consent"]
    assert len(forms) == 1, f"expected one <form method=post action=/oauth/consent>, found {parser.forms}\n{page[:3000]}"
    fields = forms[0]["fields"]
    tickets = [f for f in fields if f["name"] == "ticket" and f["type"] == "hidden" and f["value"]]
    assert len(tickets) == 1, f"no hidden, non-empty ticket input: {fields}"
    decisions = {f["value"] for f in fields if f["name"] == "decision" and f["type"] == "submit"}
    assert decisions == {"allow", "deny"}, f"expected submit buttons decision=allow and decision=deny: {fields}"
    return forms[0]["action"], tickets[0]["value"]


def page_text(page: str) -> str:
    return html.unescape(page)


# ---------------------------------------------------------------- the stack


@dataclass
class LoginResult:
    """The end of one headless authorization: the final redirect to the client and its query."""

    query: dict
    location: str
    consent_page: str | None = None
    hops: list[str] = field(default_factory=list)  # every URL requested, in order
    cookies: dict = field(default_factory=dict)  # the gateway's cookies when the form was posted

    def idp_authorization_request(self, idp_issuer: str) -> dict:
        """The query of the request the user agent made to the IdP's authorization endpoint."""
        found = [h for h in self.hops if h.startswith(idp_issuer + "/auth?")]
        assert len(found) == 1, self.hops
        return query_of(found[0])


def gateway_yaml(port: int, idp_issuer: str, fixture_url: str, allow_private: bool = True,
                 public_url: str | None = None, store_url: str | None = None) -> str:
    store = f'store: {{ url: "{store_url}" }}\n' if store_url else ""
    return f"""listen: 127.0.0.1:{port}
ops: {{ listen: 127.0.0.1:0 }}
public_url: {public_url or f"http://127.0.0.1:{port}"}
{store}oauth_server:
  idp: {{ flavor: entra, issuer: "{idp_issuer}", client_id: {IDP_CLIENT[0]}, client_secret: {{ env: FACADE_IDP_SECRET }}, scopes: [openid, profile, email] }}
  keys: [ {{ id: k1, key: {{ env: FACADE_SEAL_KEY }} }} ]
  access_token_ttl: 5m
  scopes: [mcp:tools, mcp:admin]
  clients:
    - {{ client_id: {STATIC_CLIENT}, name: Static, redirect_uris: ["{STATIC_REDIRECT}"] }}
    - {{ client_id: {AGENT[0]}, name: Agent, redirect_uris: ["{STATIC_REDIRECT}"], secret: {{ env: AGENT_SECRET }} }}
    - {{ client_id: {OTHER_AGENT[0]}, name: Other agent, redirect_uris: ["{STATIC_REDIRECT}"], secret: {{ env: OTHER_AGENT_SECRET }} }}
  cimd: {{ enabled: true, allow_private_addresses: {str(allow_private).lower()}, max_bytes: {CIMD_MAX_BYTES}, timeout: {int(CIMD_TIMEOUT)}s }}
  registration: {{ enabled: true, per_ip_per_hour: 50 }}
  id_jag: {{ trusted: [ {{ issuer: "{idp_issuer}" }} ] }}
servers:
  - {{ name: main, path: /mcp, upstreams: [fx], auth: {{ issuers: [gatehouse], scopes: [] }} }}
upstreams:
  fx: {{ kind: http, url: "{fixture_url}", protocol: "{PROTOCOL}" }}
"""


def start_facade_gateway(start, directory: Path, idp: AuthServer, fixture_url: str, ca_pem: Path,
                         allow_private: bool = True, public_url: str | None = None,
                         store_url: str | None = None, seal_key: str | None = None) -> tuple[str, Proc]:
    """A gateway with the façade on a free port, its configuration and store in `directory`
    (or `store_url`, shared with other replicas, which then also share `public_url` and
    `seal_key`). Returns its own URL."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = directory / "gatehouse.yaml"
    config.write_text(gateway_yaml(port, idp.issuer, fixture_url, allow_private, public_url, store_url))
    env = {
        "RUST_LOG": "gatehouse=debug,info",
        "FACADE_IDP_SECRET": IDP_CLIENT[1],
        "FACADE_SEAL_KEY": seal_key or base64.b64encode(secrets.token_bytes(32)).decode(),
        "AGENT_SECRET": AGENT[1],
        "OTHER_AGENT_SECRET": OTHER_AGENT[1],
        # Trust the test CA for https client metadata documents (read by rustls-native-certs).
        "SSL_CERT_FILE": str(ca_pem),
    }
    gw = start([gateway_bin(), "serve", "--config", config], env=env, cwd=directory)
    gw.ops_base = gw.read_line_starting("gatehouse ops listening on ")
    gw.read_line_starting("gatehouse listening on ")
    return f"http://127.0.0.1:{port}", gw


@dataclass
class Facade:
    base: str  # the gateway's public_url = the façade's issuer
    idp: AuthServer
    docs: DocServer
    gateway: Proc
    fixture_url: str
    ca_pem: Path
    tmp: Path

    @property
    def resource(self) -> str:
        return self.base + "/mcp"

    def authorize_url(self, **params) -> str:
        return f"{self.base}/oauth/authorize?{urlencode(params)}"

    def get_authorize(self, **params) -> httpx.Response:
        return httpx.get(self.authorize_url(**params), follow_redirects=False, timeout=15)

    def token(self, data: dict, auth: tuple[str, str] | None = None) -> httpx.Response:
        return httpx.post(f"{self.base}/oauth/token", data=data, auth=auth, timeout=15)

    def login(self, authorize_url: str, decision: str = "allow") -> LoginResult:
        """The headless user agent: follows redirects (cookies kept) from the façade's authorize
        URL through the IdP and back to /oauth/callback, answers the consent page with
        `decision`, and returns the query of the redirect to the client. A redirect that leaves
        both the gateway and the IdP before any consent page (an error sent back to the client)
        ends it too."""
        ours = {urlsplit(self.base).netloc, urlsplit(self.idp.issuer).netloc}
        hops: list[str] = []
        url, page = authorize_url, None
        with httpx.Client(follow_redirects=False, timeout=15) as ua:
            for _ in range(12):
                hops.append(url)
                resp = ua.get(url)
                if resp.status_code in (302, 303):
                    url = urljoin(url, resp.headers["location"])
                    if urlsplit(url).netloc not in ours:
                        return LoginResult(query_of(url), url, page, hops)
                    continue
                assert resp.status_code == 200, f"{url}: {resp.status_code} {resp.headers} {resp.text[:1000]}"
                assert url.startswith(f"{self.base}/oauth/callback?"), f"a page, but not the consent page: {url}"
                assert resp.headers.get("content-type", "").startswith("text/html"), resp.headers
                page = resp.text
                action, ticket = parse_consent_page(page)
                jar = {c.name: c.value for c in ua.cookies.jar if c.domain in ("127.0.0.1", "127.0.0.1.local")}
                post = ua.post(urljoin(url, action), data={"ticket": ticket, "decision": decision},
                               headers={"Origin": self.base})
                hops.append(urljoin(url, action))
                assert post.status_code in (302, 303), f"consent POST: {post.status_code} {post.text[:1000]}"
                url = urljoin(url, post.headers["location"])
                assert urlsplit(url).netloc not in ours, f"after consent, expected the client's redirect URI: {url}"
                return LoginResult(query_of(url), url, page, hops, jar)
        raise AssertionError(f"no redirect to the client within 12 hops: {hops}")

    def code_for(self, client_id: str = STATIC_CLIENT, redirect_uri: str = STATIC_REDIRECT,
                 **extra) -> tuple[str, str, LoginResult]:
        """A fresh authorization code for `client_id` (alice, PKCE S256): (code, verifier, login)."""
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(12)
        params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
                  "code_challenge": challenge, "code_challenge_method": "S256", "state": state,
                  "resource": self.resource, "scope": "mcp:tools", **extra}
        result = self.login(self.authorize_url(**params))
        assert "code" in result.query, result
        assert result.query["state"] == state and result.query["iss"] == self.base, result.query
        assert result.location.startswith(redirect_uri + "?"), result.location
        return result.query["code"], verifier, result

    def tokens_for_static_client(self) -> dict:
        code, verifier, _ = self.code_for()
        resp = self.token({"grant_type": "authorization_code", "client_id": STATIC_CLIENT, "code": code,
                           "redirect_uri": STATIC_REDIRECT, "code_verifier": verifier})
        assert resp.status_code == 200, resp.text
        return resp.json()

    def id_jag(self, audience: str | None = None, resource: str | None = None, sub: str = "alice") -> str:
        """An ID-JAG from the IdP through its real token exchange (RFC 8693), requested by
        gatehouse-exchanger: its client_id claim is therefore `gatehouse-exchanger`."""
        subject = httpx.post(f"{self.idp.issuer}/test/mint", json={"sub": sub, "resource": self.resource,
                                                                  "scope": "mcp:tools"}, timeout=10)
        assert subject.status_code == 200, subject.text
        resp = httpx.post(f"{self.idp.issuer}/token", auth=IDP_EXCHANGER, timeout=10, data={
            "grant_type": GT_TOKEN_EXCHANGE, "subject_token": subject.json()["access_token"],
            "subject_token_type": TT_ACCESS_TOKEN, "requested_token_type": TT_ID_JAG,
            "audience": audience or self.base, "resource": resource or self.resource})
        assert resp.status_code == 200 and resp.json()["issued_token_type"] == TT_ID_JAG, resp.text
        return resp.json()["access_token"]

    def jwt_bearer(self, assertion: str, auth: tuple[str, str] = AGENT, **extra) -> httpx.Response:
        return self.token({"grant_type": GT_JWT_BEARER, "assertion": assertion, **extra}, auth=auth)


@pytest.fixture(scope="module")
def ca_files(tmp_path_factory):
    return make_test_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def docs(ca_files):
    ca_pem, cert, key = ca_files
    server = DocServer(cert, key)
    # The servers themselves work (so a CIMD failure below is the gateway's): the https one with
    # a client that trusts only the test CA.
    probe = server.add("/probe.json", Doc({"ok": True}))
    assert httpx.get(probe, timeout=5).json() == {"ok": True}
    ctx = ssl.create_default_context(cafile=str(ca_pem))
    assert httpx.get(server.url("/probe.json", tls=True), verify=ctx, timeout=5).json() == {"ok": True}
    yield server
    server.close()


@pytest.fixture(scope="module")
def facade(module_processes, oidc_as_entra_like, docs, ca_files, tmp_path_factory) -> Facade:
    """IdP (--entra-like) + fixture upstream + a gateway with the façade, for the whole module."""
    fx = module_processes([fixture_bin(), "http", "--port", "0"]).read_line_starting("READY ")
    tmp = tmp_path_factory.mktemp("facade")
    base, gw = start_facade_gateway(module_processes, tmp / "gw", oidc_as_entra_like, fx, ca_files[0])
    return Facade(base, oidc_as_entra_like, docs, gw, fx, ca_files[0], tmp)


@pytest.fixture(autouse=True)
def _logs_on_failure(request, module_processes):
    """Prints the module's processes' stderr when a test of this module fails."""
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(module_processes.stderr_tails())


# ---------------------------------------------------------------- the SDK's client, headless


class SdkClient:
    """OAuthClientProvider + memory storage + the headless user + a log of the SDK's requests."""

    def __init__(self, facade: Facade, client_name: str, client_metadata_url: str | None = None,
                 redirect_uri: str | None = None):
        self.facade = facade
        self.redirect_uri = redirect_uri or f"http://127.0.0.1:{free_port()}/callback"
        self.storage = MemoryStorage()
        self.exchanges: list[tuple[str, str, int]] = []
        self.authorization_urls: list[str] = []
        self.logins: list[LoginResult] = []
        self.pending: AuthorizationCodeResult | None = None
        self.provider = OAuthClientProvider(
            server_url=facade.resource,
            client_metadata=OAuthClientMetadata(
                client_name=client_name,
                redirect_uris=[self.redirect_uri],
                grant_types=["authorization_code", "refresh_token"],
                response_types=["code"],
                token_endpoint_auth_method="none",
            ),
            storage=self.storage,
            redirect_handler=self.redirect_handler,
            callback_handler=self.callback_handler,
            client_metadata_url=client_metadata_url,
        )

    async def redirect_handler(self, url: str) -> None:
        self.authorization_urls.append(url)
        result = await anyio.to_thread.run_sync(self.facade.login, url)
        self.logins.append(result)
        assert result.location.startswith(self.redirect_uri + "?"), result.location
        q = result.query
        assert "code" in q, f"the authorization ended without a code: {q}"
        # Do not serve the redirect URI: what it would receive is in the Location header.
        self.pending = AuthorizationCodeResult(code=q["code"], state=q.get("state"), iss=q.get("iss"))

    async def callback_handler(self) -> AuthorizationCodeResult:
        assert self.pending is not None, "callback before the redirect reached the redirect URI"
        result, self.pending = self.pending, None
        return result

    async def _record(self, response) -> None:
        self.exchanges.append((response.request.method, str(response.request.url).split("?", 1)[0], response.status_code))

    @asynccontextmanager
    async def session(self):
        http = httpx.AsyncClient(auth=self.provider, timeout=30, event_hooks={"response": [self._record]})
        async with http, streamable_http_client(self.facade.resource, http_client=http) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=20) as session:
                await session.initialize()
                yield session


def check_sdk_flow(facade: Facade, client: SdkClient, client_name: str, expected_client_id: str) -> dict:
    """What both SDK tests check after the session: one authorization through the IdP, the consent
    page, the token's claims. Returns the access token's claims."""
    base, idp = facade.base, facade.idp
    assert len(client.authorization_urls) == 1, client.authorization_urls
    q = query_of(client.authorization_urls[0])
    assert client.authorization_urls[0].startswith(f"{base}/oauth/authorize?"), client.authorization_urls
    assert q["client_id"] == expected_client_id and q["redirect_uri"] == client.redirect_uri, q
    assert q["resource"] == facade.resource and q["code_challenge_method"] == "S256", q

    [login] = client.logins
    # Gatehouse sent the browser to the IdP with its own client, PKCE, state and nonce, and no
    # `resource` (the --entra-like IdP would have refused it with invalid_target).
    at_idp = login.idp_authorization_request(idp.issuer)
    assert at_idp["client_id"] == IDP_CLIENT[0] and at_idp["redirect_uri"] == f"{base}/oauth/callback", at_idp
    assert at_idp["code_challenge_method"] == "S256" and at_idp["code_challenge"] != q["code_challenge"], at_idp
    assert at_idp["state"] and at_idp["state"] != q["state"] and at_idp.get("nonce"), at_idp
    assert "resource" not in at_idp and set(at_idp["scope"].split()) == {"openid", "profile", "email"}, at_idp
    assert f"alice grants {IDP_CLIENT[0]}" in idp.log(), idp.log()[-2000:]

    # The consent page names the client and the resource.
    text = page_text(login.consent_page or "")
    assert client_name in text, text[:3000]
    assert facade.resource in text, text[:3000]
    assert login.query["iss"] == base, login.query

    assert len(client.storage.tokens) == 1, client.storage.tokens
    token = client.storage.tokens[0]
    assert token.refresh_token, token
    header, claims = jwt_header(token.access_token), jwt_claims(token.access_token)
    assert header["alg"] == "ES256" and header["typ"] == "at+jwt", header
    assert claims["iss"] == base and facade.resource in aud_list(claims), claims
    assert claims["sub"] == "alice" and claims["client_id"] == expected_client_id, claims
    assert claims["groups"] == ["engineering", "sales"], claims
    return claims


# ---------------------------------------------------------------- the IdP the façade stands in front of


def test_the_entra_like_idp_lacks_what_the_facade_makes_up_for(oidc_as_entra_like):
    """What the tests below rely on, checked without the gateway: `--entra-like` has no RFC 8414
    metadata, no registration, refuses `resource`; Gatehouse's client there works on any loopback
    port and its ID tokens carry sub, groups and email; ID-JAGs can be asked for the façade."""
    issuer = oidc_as_entra_like.issuer
    assert httpx.get(f"{issuer}/.well-known/oauth-authorization-server", timeout=10).status_code == 404
    meta = httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=10).json()
    assert "registration_endpoint" not in meta, meta
    assert meta["issuer"] == issuer and meta["authorization_endpoint"] == issuer + "/auth", meta
    origin = "http://" + urlsplit(issuer).netloc
    if issuer != origin:  # an Entra-shaped issuer: nothing answers outside its path
        assert httpx.get(f"{origin}/.well-known/openid-configuration", timeout=10).status_code == 404
    assert httpx.post(f"{issuer}/reg", json={"redirect_uris": ["http://127.0.0.1/cb"]}, timeout=10).status_code == 404
    assert {"openid", "profile", "email"} <= set(meta["scopes_supported"]), meta
    cc = httpx.post(meta["token_endpoint"], auth=("test-client", "test-secret"), timeout=10,
                    data={"grant_type": "client_credentials", "resource": "http://127.0.0.1:1/mcp"})
    assert_oauth_error(cc, 400, "invalid_target")

    redirect_uri = f"http://127.0.0.1:{free_port()}/oauth/callback"  # registered without a port
    verifier, challenge = pkce_pair()
    params = {"response_type": "code", "client_id": IDP_CLIENT[0], "redirect_uri": redirect_uri,
              "scope": "openid profile email", "state": "st", "nonce": "n-1", "code_challenge": challenge,
              "code_challenge_method": "S256"}
    refused = httpx.get(meta["authorization_endpoint"] + "?" + urlencode(params | {"resource": "http://127.0.0.1:1/mcp"}),
                        timeout=10)
    assert_oauth_error(refused, 400, "invalid_target")
    url = meta["authorization_endpoint"] + "?" + urlencode(params)
    with httpx.Client(timeout=10) as ua:
        for _ in range(8):
            resp = ua.get(url)
            assert resp.status_code in (302, 303), f"{url}: {resp.status_code} {resp.text[:500]}"
            url = urljoin(url, resp.headers["location"])
            if url.startswith(redirect_uri):
                break
    q = query_of(url)
    assert q.get("state") == "st" and q.get("iss") == issuer and "code" in q, q
    tok = httpx.post(meta["token_endpoint"], auth=IDP_CLIENT, timeout=10, data={
        "grant_type": "authorization_code", "code": q["code"], "redirect_uri": redirect_uri, "code_verifier": verifier})
    assert tok.status_code == 200, tok.text
    id_token = jwt_claims(tok.json()["id_token"])
    assert id_token["iss"] == issuer and id_token["aud"] == IDP_CLIENT[0] and id_token["nonce"] == "n-1", id_token
    assert id_token["sub"] == "alice" and id_token["groups"] == ["engineering", "sales"], id_token
    assert id_token["email"] == "alice@example.com", id_token

    gateway = f"http://127.0.0.1:{free_port()}"
    subject = httpx.post(f"{issuer}/test/mint", json={"resource": gateway + "/mcp"}, timeout=10).json()["access_token"]
    jag = httpx.post(meta["token_endpoint"], auth=IDP_EXCHANGER, timeout=10, data={
        "grant_type": GT_TOKEN_EXCHANGE, "subject_token": subject, "subject_token_type": TT_ACCESS_TOKEN,
        "requested_token_type": TT_ID_JAG, "audience": gateway, "resource": gateway + "/mcp"})
    assert jag.status_code == 200, jag.text
    assert jwt_header(jag.json()["access_token"])["typ"] == ID_JAG_TYP
    claims = jwt_claims(jag.json()["access_token"])
    assert claims["iss"] == issuer and claims["aud"] == gateway and claims["resource"] == gateway + "/mcp", claims
    assert claims["client_id"] == IDP_EXCHANGER[0] and claims["sub"] == "alice" and claims["scope"] == "mcp:tools", claims


# ---------------------------------------------------------------- metadata


def test_metadata_names_gatehouse_as_the_authorization_server(facade):
    base = facade.base
    prm = httpx.get(f"{base}/.well-known/oauth-protected-resource/mcp", timeout=10)
    assert prm.status_code == 200, prm.text
    assert prm.json()["resource"] == facade.resource and prm.json()["authorization_servers"] == [base], prm.json()

    oauth = httpx.get(f"{base}/.well-known/oauth-authorization-server", timeout=10)
    oidc = httpx.get(f"{base}/.well-known/openid-configuration", timeout=10)
    assert oauth.status_code == 200 and oidc.status_code == 200, (oauth.text, oidc.text)
    meta = oauth.json()
    for key, value in oidc.json().items():  # the OIDC path serves the same RFC 8414 metadata
        assert meta.get(key) == value, (key, value, meta.get(key))
    assert meta["issuer"] == base
    assert meta["authorization_endpoint"] == f"{base}/oauth/authorize"
    assert meta["token_endpoint"] == f"{base}/oauth/token"
    assert meta["registration_endpoint"] == f"{base}/oauth/register"
    assert meta["revocation_endpoint"] == f"{base}/oauth/revoke"
    assert meta["jwks_uri"] == f"{base}/oauth/jwks"
    assert meta["response_types_supported"] == ["code"]
    assert set(meta["grant_types_supported"]) == {"authorization_code", "refresh_token", GT_JWT_BEARER}, meta
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert set(meta["token_endpoint_auth_methods_supported"]) == {"none", "client_secret_basic", "client_secret_post"}
    assert meta["client_id_metadata_document_supported"] is True
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert "mcp:tools" in meta["scopes_supported"], meta
    # The façade issues no ID tokens: its metadata (on the OpenID path too) does not say it does.
    for never in ("id_token_signing_alg_values_supported", "subject_types_supported"):
        assert never not in meta, (never, meta)

    jwks = httpx.get(meta["jwks_uri"], timeout=10).json()
    assert jwks["keys"] and all(k["kty"] == "EC" and k.get("crv") == "P-256" for k in jwks["keys"]), jwks
    assert all("d" not in k and k.get("kid") for k in jwks["keys"]), "private key material or no kid in the JWKS"


# ---------------------------------------------------------------- the SDK: CIMD and DCR


@pytest.mark.anyio
async def test_python_sdk_uses_a_client_metadata_document_behind_an_entra_like_idp(facade):
    """From nothing but the MCP URL: 401 -> RFC 9728 metadata -> the façade's metadata -> the
    client's metadata document as client_id (no registration) -> sign-in at the IdP -> consent ->
    token -> MCP calls."""
    name = "Facade E2E (CIMD via the SDK)"
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    cimd_url = facade.docs.add("/sdk-client.json", tls=True, client_name=name, redirect_uris=[redirect_uri])
    client = SdkClient(facade, name, client_metadata_url=cimd_url, redirect_uri=redirect_uri)
    async with client.session() as session:
        tools = {t.name for t in (await session.list_tools()).tools}
        assert "echo" in tools, sorted(tools)
        assert text_of(await session.call_tool("echo", {"text": "via cimd"})) == "via cimd"

    base = facade.base
    assert_in_order(client.exchanges, [
        ("POST", facade.resource, 401),
        ("GET", f"{base}/.well-known/oauth-protected-resource/mcp", 200),
        ("GET", f"{base}/.well-known/oauth-authorization-server", 200),
        ("POST", f"{base}/oauth/token", 200),
        ("POST", facade.resource, 200),
    ])
    assert not [e for e in client.exchanges if e[1].endswith("/oauth/register")], "CIMD, not DCR"
    assert client.storage.client_info.client_id == cimd_url
    assert facade.docs.hits["/sdk-client.json"] >= 1, "the gateway never fetched the metadata document"
    check_sdk_flow(facade, client, name, cimd_url)


@pytest.mark.anyio
async def test_python_sdk_registers_dynamically(facade):
    name = "Facade E2E (DCR via the SDK)"
    client = SdkClient(facade, name)
    async with client.session() as session:
        assert "echo" in {t.name for t in (await session.list_tools()).tools}
        assert text_of(await session.call_tool("echo", {"text": "via dcr"})) == "via dcr"

    base = facade.base
    assert_in_order(client.exchanges, [
        ("POST", facade.resource, 401),
        ("GET", f"{base}/.well-known/oauth-protected-resource/mcp", 200),
        ("GET", f"{base}/.well-known/oauth-authorization-server", 200),
        ("POST", f"{base}/oauth/register", 201),
        ("POST", f"{base}/oauth/token", 200),
        ("POST", facade.resource, 200),
    ])
    registered = client.storage.client_info.client_id
    assert registered, client.storage.client_info
    check_sdk_flow(facade, client, name, registered)


# ---------------------------------------------------------------- client metadata documents refused


def assert_refused_without_redirect(resp, errors=frozenset({"invalid_client"})) -> str:
    """The contract for a client that cannot be trusted: 400 JSON, never a redirect."""
    assert "location" not in resp.headers, f"redirected to {resp.headers['location']}"
    return assert_oauth_error(resp, 400, set(errors))["error_description"]


def authorize_cimd(facade: Facade, client_id: str, redirect_uri: str) -> httpx.Response:
    _v, challenge = pkce_pair()
    return facade.get_authorize(response_type="code", client_id=client_id, redirect_uri=redirect_uri,
                                code_challenge=challenge, code_challenge_method="S256", state="s1",
                                resource=facade.resource)


def test_cimd_document_whose_client_id_is_not_its_url_is_refused(facade):
    redirect = f"http://127.0.0.1:{free_port()}/callback"
    url = facade.docs.add("/mismatch.json", redirect_uris=[redirect])
    facade.docs.docs["/mismatch.json"].body["client_id"] = facade.docs.url("/someone-else.json")
    description = assert_refused_without_redirect(authorize_cimd(facade, url, redirect))
    assert facade.docs.hits["/mismatch.json"] == 1, "refused for its content, so it must have been fetched"
    assert "client_id" in description, description


def test_cimd_redirect_uri_not_in_the_document_is_refused(facade):
    redirect = f"http://127.0.0.1:{free_port()}/callback"
    url = facade.docs.add("/redirects.json", redirect_uris=[redirect])
    # Loopback redirect URIs match on any port (RFC 8252), so differ in host and path.
    description = assert_refused_without_redirect(
        authorize_cimd(facade, url, "https://attacker.example/callback"), {"invalid_request", "invalid_client"})
    assert "redirect" in description.lower(), description
    assert facade.docs.hits["/redirects.json"] == 1
    # Control: the same document with its own redirect URI goes on to the IdP.
    ok = authorize_cimd(facade, url, redirect)
    assert ok.status_code == 302 and ok.headers["location"].startswith(f"{facade.idp.issuer}/auth?"), (ok.status_code, ok.headers, ok.text)


@pytest.mark.parametrize("content_length", [True, False], ids=["content-length", "close-delimited"])
def test_cimd_document_larger_than_max_bytes_is_refused(facade, content_length):
    path = f"/big-{content_length}.json"
    redirect = f"http://127.0.0.1:{free_port()}/callback"
    url = facade.docs.add(path, redirect_uris=[redirect])
    doc = facade.docs.docs[path]
    doc.body["x_padding"] = "p" * CIMD_MAX_BYTES
    doc.content_length = content_length
    assert len(json.dumps(doc.body)) > CIMD_MAX_BYTES
    description = assert_refused_without_redirect(authorize_cimd(facade, url, redirect))
    assert facade.docs.hits[path] == 1
    assert "larger" in description or "large" in description or str(CIMD_MAX_BYTES) in description, description


def test_cimd_document_slower_than_the_timeout_is_refused(facade):
    redirect = f"http://127.0.0.1:{free_port()}/callback"
    url = facade.docs.add("/slow.json", redirect_uris=[redirect])
    facade.docs.docs["/slow.json"].delay = CIMD_TIMEOUT + 3
    started = time.monotonic()
    resp = authorize_cimd(facade, url, redirect)
    elapsed = time.monotonic() - started
    description = assert_refused_without_redirect(resp)
    assert facade.docs.hits["/slow.json"] == 1
    assert elapsed < CIMD_TIMEOUT + 2, f"the gateway waited {elapsed:.1f}s for a {CIMD_TIMEOUT}s timeout"
    assert "time" in description.lower() or "longer" in description.lower(), description


def test_cimd_on_a_private_address_is_refused_without_any_traffic(facade, processes):
    """With allow_private_addresses false (the default outside tests), a client_id URL on a
    loopback or private address is refused before anything is sent."""
    base, gw = start_facade_gateway(processes, facade.tmp / "strict", facade.idp, facade.fixture_url,
                                     facade.ca_pem, allow_private=False)
    strict = Facade(base, facade.idp, facade.docs, gw, facade.fixture_url, facade.ca_pem, facade.tmp)
    redirect = f"http://127.0.0.1:{free_port()}/callback"
    url = facade.docs.add("/private.json", tls=True, redirect_uris=[redirect])
    before = dict(facade.docs.connections)
    # A document server on loopback with its own port: refused for the port before anything
    # is resolved (only the default https port is fetched outside tests); without a port, a
    # private or loopback address (literal or resolved) is refused before any connection.
    for client_id, reason in ((url, "port"), ("https://10.0.0.1/client.json", "private"),
                              ("https://127.0.0.1/private.json", "private"),
                              ("https://localhost/private.json", "private")):
        started = time.monotonic()
        description = assert_refused_without_redirect(authorize_cimd(strict, client_id, redirect))
        assert reason in description, (client_id, description)
        if "localhost" in client_id:
            assert "127.0.0.1" not in description, "the resolved address leaked"
        assert time.monotonic() - started < CIMD_TIMEOUT, "refused without trying to connect"
    assert facade.docs.hits["/private.json"] == 0 and dict(facade.docs.connections) == before, \
        "the gateway connected to a private address"


# ---------------------------------------------------------------- the authorization endpoint


def test_unknown_client_or_unregistered_redirect_uri_gets_400_and_no_redirect(facade):
    _v, challenge = pkce_pair()
    common = {"response_type": "code", "code_challenge": challenge, "code_challenge_method": "S256",
              "state": "s", "resource": facade.resource}
    unknown = facade.get_authorize(client_id="no-such-client", redirect_uri=STATIC_REDIRECT, **common)
    assert_refused_without_redirect(unknown)
    elsewhere = facade.get_authorize(client_id=STATIC_CLIENT, redirect_uri="https://attacker.example/callback", **common)
    assert_refused_without_redirect(elsewhere, {"invalid_request", "invalid_client"})
    # control: the same request with the registered redirect URI goes on to the IdP
    ok = facade.get_authorize(client_id=STATIC_CLIENT, redirect_uri=STATIC_REDIRECT, **common)
    assert ok.status_code == 302 and ok.headers["location"].startswith(f"{facade.idp.issuer}/auth?"), (ok.status_code, ok.text)


@pytest.mark.parametrize("change,error", [
    ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),  # PKCE missing
    ({"code_challenge_method": None}, "invalid_request"),  # ASSUMED: a challenge without its method is refused, not taken as plain
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"resource": "http://127.0.0.1:1/elsewhere"}, "invalid_target"),
    ({"scope": "files:read"}, "invalid_scope"),  # no scope of the request is offered: no empty grant
], ids=["no-pkce", "no-method", "plain", "response-type-token", "unknown-resource", "unknown-scope"])
def test_authorization_errors_go_back_to_the_client(facade, change, error):
    _v, challenge = pkce_pair()
    params = {"response_type": "code", "client_id": STATIC_CLIENT, "redirect_uri": STATIC_REDIRECT,
              "code_challenge": challenge, "code_challenge_method": "S256", "state": "st-42",
              "resource": facade.resource, "scope": "mcp:tools"}
    params.update(change)
    resp = facade.get_authorize(**{k: v for k, v in params.items() if v is not None})
    assert resp.status_code == 302, f"{resp.status_code} {resp.text[:500]}"
    location = resp.headers["location"]
    assert location.startswith(STATIC_REDIRECT + "?"), location
    q = query_of(location)
    assert q.get("error") == error and "code" not in q, q
    assert q.get("error_description") and q.get("state") == "st-42" and q.get("iss") == facade.base, q


def test_consent_denied_sends_access_denied_to_the_client(facade):
    _v, challenge = pkce_pair()
    result = facade.login(facade.authorize_url(
        response_type="code", client_id=STATIC_CLIENT, redirect_uri=STATIC_REDIRECT, code_challenge=challenge,
        code_challenge_method="S256", state="deny-me", resource=facade.resource, scope="mcp:tools"),
        decision="deny")
    assert result.consent_page is not None, "the IdP sign-in must come before the consent page"
    assert "Static" in page_text(result.consent_page), "the static client's name"
    assert result.location.startswith(STATIC_REDIRECT + "?"), result.location
    q = result.query
    assert q.get("error") == "access_denied" and "code" not in q, q
    assert q.get("state") == "deny-me" and q.get("iss") == facade.base, q


def test_consent_form_replayed_gets_no_code(facade):
    """The consent ticket is bound to the browser that signed in (a cookie) and is single-use:
    the form posted again, from elsewhere (no cookies) or by the same browser (its cookie), yields
    no code: any 4xx, or a redirect carrying an error rather than a code, passes."""
    verifier, challenge = pkce_pair()
    url = facade.authorize_url(response_type="code", client_id=STATIC_CLIENT, redirect_uri=STATIC_REDIRECT,
                               code_challenge=challenge, code_challenge_method="S256", state="once",
                               resource=facade.resource, scope="mcp:tools")
    result = facade.login(url)
    assert "code" in result.query, result.query
    _action, ticket = parse_consent_page(result.consent_page)
    assert result.cookies, "the gateway set no cookie on the browser"
    cookie = "; ".join(f"{k}={v}" for k, v in result.cookies.items())
    for headers in ({"Origin": facade.base}, {"Origin": facade.base, "Cookie": cookie}):
        again = httpx.post(f"{facade.base}/oauth/consent", data={"ticket": ticket, "decision": "allow"},
                           headers=headers, follow_redirects=False, timeout=10)
        if again.status_code in (302, 303):
            assert "code" not in query_of(again.headers["location"]), again.headers["location"]
        else:
            assert 400 <= again.status_code < 500, f"{again.status_code} {again.text[:500]}"


# ---------------------------------------------------------------- the token endpoint


def test_authorization_code_gives_a_verifiable_token_that_works_and_is_single_use(facade):
    import jwt  # PyJWT

    code, verifier, _login = facade.code_for()
    data = {"grant_type": "authorization_code", "client_id": STATIC_CLIENT, "code": code,
            "redirect_uri": STATIC_REDIRECT, "code_verifier": verifier}
    first = facade.token(data)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["token_type"] == "Bearer" and 0 < body["expires_in"] <= 300, body
    assert body["refresh_token"] and "mcp:tools" in body["scope"].split(), body
    assert "no-store" in first.headers.get("cache-control", "").lower(), "RFC 6749 §5.1: Cache-Control: no-store"

    token = body["access_token"]
    header = jwt_header(token)
    assert header["alg"] == "ES256" and header["typ"] == "at+jwt", header
    jwks = httpx.get(f"{facade.base}/oauth/jwks", timeout=10).json()
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
    claims = jwt.decode(token, key=key.key, algorithms=["ES256"], audience=facade.resource, issuer=facade.base)
    assert claims["sub"] == "alice" and claims["client_id"] == STATIC_CLIENT, claims
    assert claims["groups"] == ["engineering", "sales"], claims
    assert claims["exp"] - claims["iat"] <= 300, claims

    s = RawSession(facade.resource, token).open()
    assert "echo" in {t["name"] for t in result_of(s.request("tools/list"))["tools"]}
    assert result_of(s.request("tools/call", {"name": "echo", "arguments": {"text": "code"}}))["content"][0]["text"] == "code"

    assert_oauth_error(facade.token(data), 400, "invalid_grant")  # the same code again

    # Issued and refused tokens are counted.
    metrics = httpx.get(f"{facade.gateway.ops_base}/metrics", timeout=10).text
    for outcome in ("issued", "invalid_grant"):
        assert re.search(r'gatehouse_oauth_events_total\{event="token",outcome="%s"\} [1-9]' % outcome, metrics), \
            [l for l in metrics.splitlines() if "oauth" in l]

    # Discovery lists the protected server only for a token it accepts.
    anonymous = httpx.get(f"{facade.base}/v0/servers", timeout=10).json()
    assert anonymous["servers"] == [], anonymous
    listed = httpx.get(f"{facade.base}/v0/servers", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
    assert [e["server"]["remotes"][0]["url"] for e in listed["servers"]] == [facade.resource], listed
    assert listed["servers"][0]["_meta"]["io.gatehouse/protected"] is True, listed


def test_token_request_with_another_redirect_uri_is_invalid_grant(facade):
    code, verifier, _ = facade.code_for()
    # The same loopback host on another path: not the redirect URI the code was issued for.
    resp = facade.token({"grant_type": "authorization_code", "client_id": STATIC_CLIENT, "code": code,
                         "redirect_uri": "http://127.0.0.1/other", "code_verifier": verifier})
    assert_oauth_error(resp, 400, "invalid_grant")


def test_token_request_with_a_wrong_code_verifier_is_invalid_grant(facade):
    code, _verifier, _ = facade.code_for()
    resp = facade.token({"grant_type": "authorization_code", "client_id": STATIC_CLIENT, "code": code,
                         "redirect_uri": STATIC_REDIRECT, "code_verifier": pkce_pair()[0]})
    assert_oauth_error(resp, 400, "invalid_grant")


def test_unsupported_grant_type_and_missing_client(facade):
    assert_oauth_error(facade.token({"grant_type": "password", "client_id": STATIC_CLIENT,
                                     "username": "alice", "password": "x"}), 400, "unsupported_grant_type")
    # ASSUMED: an authorization_code request naming no client at all is invalid_request or invalid_client.
    resp = facade.token({"grant_type": "authorization_code", "code": "x", "redirect_uri": STATIC_REDIRECT,
                         "code_verifier": pkce_pair()[0]})
    assert resp.status_code in (400, 401) and resp.json()["error"] in ("invalid_request", "invalid_client"), resp.text


def test_refresh_tokens_rotate_and_a_replay_revokes_the_family(facade):
    tokens = facade.tokens_for_static_client()
    r1 = tokens["refresh_token"]
    refresh = lambda rt: facade.token({"grant_type": "refresh_token", "refresh_token": rt, "client_id": STATIC_CLIENT})  # noqa: E731

    second = refresh(r1)
    assert second.status_code == 200, second.text
    r2 = second.json()["refresh_token"]
    assert r2 and r2 != r1, "the refresh token must rotate"
    assert second.json()["access_token"] != tokens["access_token"]
    claims = jwt_claims(second.json()["access_token"])
    assert claims["sub"] == "alice" and facade.resource in aud_list(claims), claims

    assert_oauth_error(refresh(r1), 400, "invalid_grant")  # replay of the rotated token
    assert_oauth_error(refresh(r2), 400, "invalid_grant")  # ... revoked its whole family


def test_a_refused_refresh_leaves_the_token_working_and_scope_only_narrows(facade):
    """A refresh refused for its resource or for a scope wider than the grant is checked before
    the token is used up: the client's next correct refresh is not taken for a replay."""
    code, verifier, _ = facade.code_for(scope="mcp:tools mcp:admin")
    tokens = facade.token({"grant_type": "authorization_code", "client_id": STATIC_CLIENT, "code": code,
                           "redirect_uri": STATIC_REDIRECT, "code_verifier": verifier}).json()
    assert tokens["scope"].split() == ["mcp:tools", "mcp:admin"], tokens
    refresh = lambda rt, **extra: facade.token(  # noqa: E731
        {"grant_type": "refresh_token", "refresh_token": rt, "client_id": STATIC_CLIENT, **extra})

    r1 = tokens["refresh_token"]
    assert_oauth_error(refresh(r1, resource=f"{facade.base}/other"), 400, "invalid_target")
    assert_oauth_error(refresh(r1, scope="mcp:tools crm:write"), 400, "invalid_scope")
    narrow = refresh(r1, scope="mcp:tools")
    assert narrow.status_code == 200, f"the refused requests must not have used the token up: {narrow.text}"
    assert narrow.json()["scope"] == "mcp:tools", narrow.json()
    assert jwt_claims(narrow.json()["access_token"])["scope"] == "mcp:tools"
    # The successor keeps the grant's scope (RFC 6749 §6): narrowing once is not for good.
    again = refresh(narrow.json()["refresh_token"])
    assert again.status_code == 200, again.text
    assert again.json()["scope"].split() == ["mcp:tools", "mcp:admin"], again.json()


def test_a_client_registered_without_grant_types_gets_no_refresh_token(facade):
    redirect = f"http://127.0.0.1:{free_port()}/cb"
    reg = httpx.post(f"{facade.base}/oauth/register", timeout=10, json={
        "client_name": "No refresh", "redirect_uris": [redirect], "token_endpoint_auth_method": "none"})
    assert reg.status_code == 201, reg.text
    assert reg.json()["grant_types"] == ["authorization_code"], reg.json()  # RFC 7591 §2 default
    client_id = reg.json()["client_id"]
    code, verifier, _ = facade.code_for(client_id, redirect)
    ok = facade.token({"grant_type": "authorization_code", "client_id": client_id, "code": code,
                       "redirect_uri": redirect, "code_verifier": verifier})
    assert ok.status_code == 200 and ok.json()["access_token"], ok.text
    assert "refresh_token" not in ok.json(), ok.json()
    refused = facade.token({"grant_type": "refresh_token", "refresh_token": "anything", "client_id": client_id})
    assert_oauth_error(refused, 400, "unauthorized_client")


def test_a_client_authenticating_twice_is_refused(facade):
    data = {"grant_type": "refresh_token", "refresh_token": "not-a-token"}
    both = facade.token(data | {"client_secret": AGENT[1]}, auth=AGENT)
    assert_oauth_error(both, 400, "invalid_request")
    assert "twice" in both.json()["error_description"], both.json()
    # control: the same request authenticated once gets as far as the grant
    assert_oauth_error(facade.token(data, auth=AGENT), 400, "invalid_grant")
    assert_oauth_error(facade.token(data | {"client_id": AGENT[0], "client_secret": AGENT[1]}), 400, "invalid_grant")


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/revoke", "/oauth/register"])
def test_machine_endpoints_answer_browser_preflights(facade, path):
    origin = "https://app.example"
    pre = httpx.options(f"{facade.base}{path}", timeout=10, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert pre.status_code in (200, 204), f"{pre.status_code} {pre.text[:300]}"
    assert pre.headers.get("access-control-allow-origin") in ("*", origin), pre.headers
    assert "POST" in pre.headers.get("access-control-allow-methods", ""), pre.headers
    allowed = {h.strip().lower() for h in pre.headers.get("access-control-allow-headers", "").split(",")}
    assert {"authorization", "content-type"} <= allowed, pre.headers
    assert "access-control-allow-credentials" not in pre.headers, "no credentials mode: no cookies here"
    # The answer itself (an error, here) is readable by the page too.
    answer = httpx.post(f"{facade.base}{path}", content=b"{}" if path.endswith("register") else b"x=1",
                        headers={"Origin": origin, "Content-Type": "application/json" if path.endswith("register")
                                 else "application/x-www-form-urlencoded"}, timeout=10)
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.headers.get("access-control-allow-origin") in ("*", origin), answer.headers


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/revoke"])
def test_an_oversized_token_request_gets_an_oauth_json_error(facade, path):
    resp = httpx.post(f"{facade.base}{path}", timeout=10, data={
        "grant_type": "refresh_token", "client_id": STATIC_CLIENT, "refresh_token": "x" * (70 * 1024)})
    assert_oauth_error(resp, 413, "invalid_request")
    assert "larger than 65536 bytes" in resp.json()["error_description"], resp.json()


def test_revoked_refresh_token_is_dead(facade):
    tokens = facade.tokens_for_static_client()
    resp = httpx.post(f"{facade.base}/oauth/revoke", timeout=10, data={
        "token": tokens["refresh_token"], "token_type_hint": "refresh_token", "client_id": STATIC_CLIENT})
    assert resp.status_code == 200, resp.text
    again = facade.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": STATIC_CLIENT})
    assert_oauth_error(again, 400, "invalid_grant")
    # RFC 7009 §2.2: an unknown token is answered 200 as well
    assert httpx.post(f"{facade.base}/oauth/revoke", data={"token": "nonsense", "client_id": STATIC_CLIENT},
                      timeout=10).status_code == 200


def test_confidential_dcr_client_authenticates_and_its_name_is_escaped(facade):
    redirect = f"http://127.0.0.1:{free_port()}/cb"
    name = 'Agent <b id="x">Bold</b> & Co'
    reg = httpx.post(f"{facade.base}/oauth/register", timeout=10, json={
        "client_name": name, "redirect_uris": [redirect], "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"], "token_endpoint_auth_method": "client_secret_basic"})
    assert reg.status_code == 201, reg.text
    client_id, secret = reg.json()["client_id"], reg.json()["client_secret"]
    assert client_id and secret, reg.json()

    code, verifier, login = facade.code_for(client_id, redirect)
    page = login.consent_page
    assert '<b id="x">' not in page, "the client's name must be HTML-escaped on the consent page"
    assert name in page_text(page), page[:3000]
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect, "code_verifier": verifier}
    assert_oauth_error(facade.token(data, auth=(client_id, secret + "x")), 401, "invalid_client")
    ok = facade.token(data, auth=(client_id, secret))
    assert ok.status_code == 200, ok.text
    assert jwt_claims(ok.json()["access_token"])["client_id"] == client_id


# ---------------------------------------------------------------- ID-JAG (RFC 7523 jwt-bearer)


def test_id_jag_from_the_trusted_idp_gives_an_access_token_that_works(facade):
    assertion = facade.id_jag()
    assert jwt_header(assertion)["typ"] == ID_JAG_TYP
    idp_claims = jwt_claims(assertion)
    assert idp_claims["aud"] == facade.base and idp_claims["client_id"] == AGENT[0], idp_claims
    assert idp_claims["resource"] == facade.resource, idp_claims

    # ASSUMED: the resource comes from the ID-JAG's `resource` claim; the request names none.
    resp = facade.jwt_bearer(assertion)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["token_type"] == "Bearer" and body["access_token"], body
    assert "mcp:tools" in body.get("scope", "").split(), body
    header, claims = jwt_header(body["access_token"]), jwt_claims(body["access_token"])
    assert header["alg"] == "ES256" and header["typ"] == "at+jwt", header
    assert claims["iss"] == facade.base and facade.resource in aud_list(claims), claims
    assert claims["sub"] == "alice" and claims["client_id"] == AGENT[0], claims

    s = RawSession(facade.resource, body["access_token"]).open()
    assert result_of(s.request("tools/call", {"name": "echo", "arguments": {"text": "jag"}}))["content"][0]["text"] == "jag"


def test_id_jag_is_redeemed_only_by_a_confidential_client_and_bounds_the_scopes(facade):
    assertion = facade.id_jag()
    # A public client (client_id alone) cannot redeem a bearer assertion, even one naming it.
    public = facade.token({"grant_type": GT_JWT_BEARER, "assertion": assertion, "client_id": STATIC_CLIENT})
    assert_oauth_error(public, 400, "unauthorized_client")
    # A request cannot widen what the assertion grants: asking for a scope outside it yields
    # none of it, and a resource other than the assertion's is refused.
    widened = facade.jwt_bearer(facade.id_jag(), scope="mcp:tools mcp:admin")
    assert widened.status_code == 200, widened.text
    assert widened.json()["scope"].split() == ["mcp:tools"], widened.json()
    elsewhere = facade.jwt_bearer(facade.id_jag(), resource=f"{facade.base}/other")
    assert_oauth_error(elsewhere, 400, "invalid_target")


def test_replicas_sharing_a_store_accept_each_others_tokens_and_refuse_a_second_use(facade, processes):
    """Two gateways behind one public URL, sharing a store and the sealing key: a token signed by
    one verifies at the other, and an ID-JAG redeemed at one is refused at the other."""
    shared = facade.tmp / "replicas" / "shared.db"
    shared.parent.mkdir(parents=True, exist_ok=True)
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    a_url, _a = start_facade_gateway(processes, facade.tmp / "replicas" / "a", facade.idp, facade.fixture_url,
                                     facade.ca_pem, store_url=f"sqlite://{shared}", seal_key=key)
    b_url, _b = start_facade_gateway(processes, facade.tmp / "replicas" / "b", facade.idp, facade.fixture_url,
                                     facade.ca_pem, public_url=a_url, store_url=f"sqlite://{shared}", seal_key=key)
    assertion = facade.id_jag(audience=a_url, resource=f"{a_url}/mcp")
    data = {"grant_type": GT_JWT_BEARER, "assertion": assertion}
    first = httpx.post(f"{a_url}/oauth/token", data=data, auth=AGENT, timeout=10)
    assert first.status_code == 200, first.text
    again = httpx.post(f"{b_url}/oauth/token", data=data, auth=AGENT, timeout=10)
    assert_oauth_error(again, 400, "invalid_grant")
    # Replica b verifies replica a's token (same keys from the shared store).
    init = httpx.post(f"{b_url}/mcp", headers={"Authorization": f"Bearer {first.json()['access_token']}",
                                               "Accept": "application/json, text/event-stream",
                                               "Content-Type": "application/json"},
                      json={"jsonrpc": "2.0", "id": 1, "method": "initialize",
                            "params": {"protocolVersion": PROTOCOL, "capabilities": {},
                                       "clientInfo": {"name": "replica-test", "version": "1"}}}, timeout=10)
    assert init.status_code == 200, init.text


def test_a_resource_at_the_token_endpoint_must_be_the_grants(facade):
    code, verifier, _ = facade.code_for()
    resp = facade.token({"grant_type": "authorization_code", "client_id": STATIC_CLIENT, "code": code,
                         "redirect_uri": STATIC_REDIRECT, "code_verifier": verifier,
                         "resource": f"{facade.base}/other"})
    assert_oauth_error(resp, 400, "invalid_target")


def wrong_typ(facade: Facade) -> tuple[str, tuple[str, str], dict]:
    # A JWT access token (typ at+jwt) the trusted IdP signed with its published key, with
    # aud = the façade's issuer, client_id = the agent, sub alice, scope mcp:tools: an ID-JAG in
    # all but its typ (and its missing `resource` claim, so the request names the resource).
    # Only the typ check can refuse it — this is the token-confusion case it exists for. A token
    # signed with an unpublished key would be refused by the signature check whatever its typ.
    minted = httpx.post(f"{facade.idp.issuer}/test/mint", timeout=10, json={
        "sub": "alice", "resource": facade.base, "scope": "mcp:tools", "client_id": AGENT[0], "format": "jwt"})
    assert minted.status_code == 200, minted.text
    token = minted.json()["access_token"]
    claims = jwt_claims(token)
    assert jwt_header(token)["typ"] == "at+jwt" and claims["aud"] == facade.base and claims["client_id"] == AGENT[0], claims
    return token, AGENT, {"resource": facade.resource}


def wrong_aud(facade: Facade) -> tuple[str, tuple[str, str], dict]:
    # A genuine ID-JAG from the trusted IdP (its real token exchange, its key), meant for another
    # authorization server: only the aud check can refuse it.
    token = facade.id_jag(audience="https://another-as.example")
    assert jwt_claims(token)["aud"] == "https://another-as.example"
    return token, AGENT, {}


def wrong_client(facade: Facade) -> tuple[str, tuple[str, str], dict]:
    # A genuine ID-JAG for the façade issued to gatehouse-exchanger, presented by another client
    # that authenticates correctly with its own secret: only the client_id check can refuse it.
    token = facade.id_jag()
    assert jwt_claims(token)["client_id"] == AGENT[0]
    return token, OTHER_AGENT, {}


@pytest.mark.parametrize("make", [wrong_typ, wrong_aud, wrong_client], ids=["typ", "aud", "client_id"])
def test_id_jag_with_a_wrong_claim_is_invalid_grant(facade, make):
    assertion, auth, extra = make(facade)
    assert_oauth_error(facade.jwt_bearer(assertion, auth=auth, **extra), 400, "invalid_grant")
    # control: a good ID-JAG, presented by its own client, is accepted (so the refusal above was
    # about the claim, not about jwt-bearer or client authentication in general)
    assert facade.jwt_bearer(facade.id_jag()).status_code == 200


def test_id_jag_signed_with_an_unpublished_key_is_invalid_grant(facade):
    """Every claim right (copied from a real ID-JAG, new jti) and the kid of the IdP's real key,
    but signed with a key the IdP does not publish: this tests the signature check only."""
    import jwt  # PyJWT
    from cryptography.hazmat.primitives.asymmetric import ec

    good = facade.id_jag()
    claims = jwt_claims(good) | {"jti": secrets.token_urlsafe(16)}
    header = jwt_header(good)
    forged = jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
                        headers={"typ": ID_JAG_TYP, "kid": header["kid"]})
    assert jwt_header(forged)["kid"] == header["kid"] and jwt_header(forged)["typ"] == ID_JAG_TYP
    assert_oauth_error(facade.jwt_bearer(forged), 400, "invalid_grant")
    assert facade.jwt_bearer(good).status_code == 200, "control: the real one is accepted"
