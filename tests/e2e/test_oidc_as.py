"""Self-check of tests/node/oidc-as.mjs, the oidc-provider authorization server the OAuth tests
(test_oauth.py) run against: discovery, DCR + authorization code + PKCE + RFC 8707 resource (JWT
access tokens), login_hint accounts, the /test/mint backdoor, introspection, revocation,
client credentials, and a clean exit on SIGTERM. The server comes from the `oidc_as` fixture
(conftest.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import signal
import time
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import pytest

try:
    import httpx2 as httpx  # what the MCP SDK 2.x installs
except ImportError:  # pragma: no cover
    pytest.fail("httpx2 is missing: run `bash scripts/setup.sh` (it comes with mcp==2.3.0)", pytrace=False)

from conftest import free_port

RESOURCE_SCOPES = {"mcp:tools", "mcp:admin", "crm:read", "crm:write"}


def b64url_json(segment: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def decode_jwt_unverified(token: str) -> tuple[dict, dict]:
    header, payload, _sig = token.split(".")
    return b64url_json(header), b64url_json(payload)


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_headless(issuer: str, params: dict, max_hops: int = 10) -> dict:
    """Follows the authorization redirects (with cookies) until one leaves the issuer; returns the
    query of that final Location (code, state, iss — or error, error_description)."""
    meta = httpx.get(f"{issuer}/.well-known/oauth-authorization-server").json()
    url = meta["authorization_endpoint"] + "?" + urlencode(params)
    issuer_netloc = urlsplit(issuer).netloc
    with httpx.Client(follow_redirects=False, timeout=10) as ua:
        for _ in range(max_hops):
            resp = ua.get(url)
            assert resp.status_code in (302, 303), f"{url}: {resp.status_code} {resp.text[:500]}"
            url = urljoin(url, resp.headers["location"])
            if urlsplit(url).netloc != issuer_netloc:
                return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()} | {"_location": url}
    raise AssertionError("too many redirects")


def register_public_client(issuer: str, redirect_uri: str, application_type: str = "web") -> dict:
    resp = httpx.post(
        f"{issuer}/reg",
        json={
            "client_name": "smoke",
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            "application_type": application_type,
            "scope": "openid offline_access mcp:tools crm:read",
        },
    )
    assert resp.status_code == 201, resp.text
    client = resp.json()
    assert client["token_endpoint_auth_method"] == "none"
    assert "client_secret" not in client
    return client


def introspect(issuer: str, token: str, auth=("gatehouse-introspector", "introspector-secret")) -> httpx.Response:
    return httpx.post(f"{issuer}/token/introspection", data={"token": token}, auth=auth)


def mint(issuer: str, **body) -> dict:
    resp = httpx.post(f"{issuer}/test/mint", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()


def verify_jwt(issuer: str, token: str, audience: str) -> dict:
    """Verifies signature (JWKS), iss, aud and exp with PyJWT; returns the claims."""
    import jwt  # PyJWT, with cryptography

    jwks = httpx.get(httpx.get(f"{issuer}/.well-known/openid-configuration").json()["jwks_uri"]).json()
    header = jwt.get_unverified_header(token)
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
    return jwt.decode(token, key=key.key, algorithms=[header["alg"]], audience=audience, issuer=issuer)


# ---------------------------------------------------------------- checks


def check_discovery(issuer: str) -> None:
    oidc = httpx.get(f"{issuer}/.well-known/openid-configuration")
    oauth = httpx.get(f"{issuer}/.well-known/oauth-authorization-server")
    assert oidc.status_code == 200 and oauth.status_code == 200
    assert oidc.json() == oauth.json()
    meta = oauth.json()
    assert meta["issuer"] == issuer
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert {"openid", "offline_access"} | RESOURCE_SCOPES <= set(meta["scopes_supported"])
    for key in ("registration_endpoint", "introspection_endpoint", "revocation_endpoint", "jwks_uri", "token_endpoint"):
        assert meta[key].startswith(issuer + "/"), key
    assert {"authorization_code", "client_credentials", "refresh_token"} <= set(meta["grant_types_supported"])
    jwks = httpx.get(meta["jwks_uri"]).json()
    assert sorted(k["alg"] for k in jwks["keys"]) == ["ES256", "RS256"]
    assert all("d" not in k for k in jwks["keys"]), "private key material in the JWKS"


def check_dcr_authcode_pkce_jwt(issuer: str, application_type: str = "web", host: str = "127.0.0.1") -> dict:
    """DCR (public client, loopback redirect) + authorization code + PKCE + resource indicator."""
    port = free_port()
    redirect_uri = f"http://{host}:{port}/callback"
    client = register_public_client(issuer, redirect_uri, application_type)
    resource = f"http://127.0.0.1:{free_port()}/mcp"
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(8)
    result = authorize_headless(
        issuer,
        {
            "response_type": "code",
            "client_id": client["client_id"],
            "redirect_uri": redirect_uri,
            "scope": "openid offline_access mcp:tools crm:read",
            "resource": resource,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": state,
            "prompt": "consent",
            "login_hint": "alice",
        },
    )
    assert result["_location"].startswith(redirect_uri + "?"), result
    assert result["state"] == state and result["iss"] == issuer and "code" in result, result
    tok = httpx.post(
        f"{issuer}/token",
        data={
            "grant_type": "authorization_code",
            "code": result["code"],
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
            "client_id": client["client_id"],
        },
    )
    assert tok.status_code == 200, tok.text
    body = tok.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] <= 300
    # the token response's scope is the access token's: only the resource's scopes
    assert set(body["scope"].split()) == {"mcp:tools", "crm:read"}, body["scope"]
    assert "refresh_token" in body and "id_token" in body
    header, claims = decode_jwt_unverified(body["access_token"])
    assert header["alg"] == "ES256" and header["typ"] == "at+jwt", header
    assert claims["aud"] == resource
    assert claims["sub"] == "alice" and claims["client_id"] == client["client_id"]
    assert claims["iss"] == issuer
    assert set(claims["scope"].split()) == {"mcp:tools", "crm:read"}
    assert claims["groups"] == ["engineering", "sales"]
    for c in ("exp", "iat", "jti"):
        assert c in claims, c
    verified = verify_jwt(issuer, body["access_token"], resource)
    assert verified == claims

    # the refresh token yields a new JWT for the same resource
    ref = httpx.post(
        f"{issuer}/token",
        data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": client["client_id"]},
    )
    assert ref.status_code == 200, ref.text
    assert decode_jwt_unverified(ref.json()["access_token"])[1]["aud"] == resource
    # structured tokens cannot be introspected (oidc-provider answers 400 unsupported_token_type)
    assert introspect(issuer, body["access_token"]).status_code == 400
    return {"client": client, "token": body, "header": header, "claims": claims}


def check_login_hint(issuer: str) -> None:
    """login_hint bob -> bob's groups; an unknown login_hint -> error=access_denied."""
    port = free_port()
    redirect_uri = f"http://localhost:{port}/cb"
    client = register_public_client(issuer, redirect_uri, "native")
    resource = "http://127.0.0.1:1/mcp"
    base = {
        "response_type": "code",
        "client_id": client["client_id"],
        "redirect_uri": redirect_uri,
        "scope": "mcp:tools",
        "resource": resource,
    }
    verifier, challenge = pkce_pair()
    ok = authorize_headless(issuer, base | {"login_hint": "bob", "code_challenge": challenge, "code_challenge_method": "S256"})
    tok = httpx.post(
        f"{issuer}/token",
        data={"grant_type": "authorization_code", "code": ok["code"], "redirect_uri": redirect_uri,
              "code_verifier": verifier, "client_id": client["client_id"]},
    )
    assert tok.status_code == 200, tok.text
    claims = decode_jwt_unverified(tok.json()["access_token"])[1]
    assert claims["sub"] == "bob" and claims["groups"] == ["contractors"] and claims["aud"] == resource
    _v, challenge = pkce_pair()
    denied = authorize_headless(issuer, base | {"login_hint": "mallory", "code_challenge": challenge, "code_challenge_method": "S256"})
    assert denied["error"] == "access_denied" and "code" not in denied, denied
    # PKCE is required even for confidential clients
    no_pkce = authorize_headless(issuer, base | {"client_id": "test-client", "redirect_uri": "http://127.0.0.1/callback"})
    assert no_pkce["error"] == "invalid_request" and "PKCE" in no_pkce["error_description"], no_pkce


def check_mint_and_introspect(issuer: str) -> dict:
    resource = "http://127.0.0.1:1234/mcp"
    opaque = mint(issuer, sub="alice", scope="mcp:tools crm:read", resource=resource, format="opaque", ttl=60)
    assert opaque["expires_in"] == 60 and opaque["format"] == "opaque"
    assert opaque["access_token"].count(".") == 0
    resp = introspect(issuer, opaque["access_token"])
    assert resp.status_code == 200, resp.text
    info = resp.json()
    now = time.time()
    assert info["active"] is True
    assert info["sub"] == "alice" and info["client_id"] == "test-client"
    assert info["scope"] == "mcp:tools crm:read" and info["aud"] == resource
    assert info["groups"] == ["engineering", "sales"] and info["iss"] == issuer
    assert now + 50 < info["exp"] <= now + 61 and info["token_type"] == "Bearer"
    # client_secret_post works for the introspector too
    post = httpx.post(f"{issuer}/token/introspection", data={
        "token": opaque["access_token"], "client_id": "gatehouse-introspector", "client_secret": "introspector-secret"})
    assert post.json()["active"] is True
    # nonsense and wrong credentials
    assert introspect(issuer, "not-a-token-" + secrets.token_urlsafe(8)).json() == {"active": False}
    assert introspect(issuer, opaque["access_token"], auth=("gatehouse-introspector", "wrong")).status_code == 401

    jwt_tok = mint(issuer, sub="bob", scope="mcp:admin", resource=resource, format="jwt", ttl=120)
    assert jwt_tok["expires_in"] == 120 and jwt_tok["format"] == "jwt"
    claims = verify_jwt(issuer, jwt_tok["access_token"], resource)
    assert claims["sub"] == "bob" and claims["groups"] == ["contractors"] and claims["scope"] == "mcp:admin"
    assert claims["exp"] - claims["iat"] == 120 and claims["client_id"] == "test-client"

    # revocation makes the opaque token inactive
    rev = httpx.post(f"{issuer}/token/revocation", data={"token": opaque["access_token"]}, auth=("test-client", "test-secret"))
    assert rev.status_code == 200, rev.text
    assert introspect(issuer, opaque["access_token"]).json() == {"active": False}

    bad = httpx.post(f"{issuer}/test/mint", json={"format": "jwt"})
    assert bad.status_code == 400
    return {"introspection": info, "jwt_claims": claims}


def check_client_credentials(issuer: str) -> None:
    resource = "http://127.0.0.1:1234/opaque/mcp"
    resp = httpx.post(f"{issuer}/token", data={"grant_type": "client_credentials", "scope": "mcp:tools", "resource": resource},
                      auth=("test-client", "test-secret"))
    assert resp.status_code == 200, resp.text
    info = introspect(issuer, resp.json()["access_token"]).json()
    assert info["active"] is True and info["aud"] == resource and info["client_id"] == "test-client"
    assert "sub" not in info and "groups" not in info


# ---------------------------------------------------------------- tests


def test_discovery(oidc_as):
    check_discovery(oidc_as.issuer)


@pytest.mark.parametrize("application_type,host", [("web", "127.0.0.1"), ("native", "localhost")])
def test_dcr_authorization_code_pkce_jwt(oidc_as, application_type, host):
    check_dcr_authcode_pkce_jwt(oidc_as.issuer, application_type=application_type, host=host)


def test_login_hint(oidc_as):
    check_login_hint(oidc_as.issuer)


def test_mint_introspect_revoke(oidc_as):
    check_mint_and_introspect(oidc_as.issuer)


def test_client_credentials(oidc_as):
    check_client_credentials(oidc_as.issuer)


def test_exits_0_on_sigterm(oidc_as):
    proc = oidc_as.proc.proc
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0, oidc_as.log()[-2000:]
    assert "SIGTERM, exiting" in oidc_as.log()
