"""Step-up end to end with an authorization server that holds a registered client to the scopes it
registered with (oidc-provider does so for RFC 7591 `scope`: asking for any other scope it knows
ends in error=invalid_scope), and the official Python MCP SDK's OAuth client, which registers with
the scope of the first 401 challenge. `servers[].auth.challenge_scopes: all` makes that first
challenge name every scope the server can require, so the registration allows them all."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from test_oauth import (
    INTROSPECTOR,
    PROTOCOL,
    AuthorizationRefused,
    OAuthClient,
    RawSession,
    assert_in_order,
    jwt_claims,
    text_of,
    www_authenticate,
)


@pytest.fixture
def anyio_backend():
    return "asyncio"


def servers_yaml(issuer: str, fixture_url: str) -> str:
    """The same server twice: the default challenge, and `challenge_scopes: all`."""
    server = """    upstreams: [fx]
    auth:
      scopes: [mcp:tools]
      require:
        - tools: "slow"
          scopes: [crm:write]
"""
    return f"""auth:
  issuers:
    idp:
      issuer: {issuer}
      algorithms: [ES256, RS256]
      introspection:
        client_id: gatehouse-introspector
        client_secret: {{ env: GH_INTROSPECTION_SECRET }}
servers:
  - name: default
    path: /mcp
{server}  - name: all
    path: /all/mcp
{server}      challenge_scopes: all
upstreams:
  fx: {{ kind: http, url: "{fixture_url}" }}
"""


def requested_scopes(authorization_url: str) -> set[str]:
    return set(parse_qs(urlsplit(authorization_url).query)["scope"][0].split())


@pytest.mark.anyio
async def test_step_up_with_a_client_held_to_its_registered_scopes(oidc_as, start_gateway, fixture_http):
    issuer = oidc_as.issuer
    base = start_gateway(servers_yaml(issuer, fixture_http()), env={"GH_INTROSPECTION_SECRET": INTROSPECTOR[1]})

    # What each server's first challenge names, raw.
    def first_challenge(path: str) -> dict:
        resp = RawSession(base + path, None).post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}}})
        assert resp.status_code == 401, resp.text
        return www_authenticate(resp)

    assert first_challenge("/mcp")["scope"] == "mcp:tools"
    assert first_challenge("/all/mcp")["scope"] == "mcp:tools crm:write"

    # Off (the default): the SDK registers with the first challenge's scope; the call to `slow`
    # gets 403 insufficient_scope, the SDK steps up with the union of scopes, and the AS refuses
    # the registered client crm:write. The call fails: this is what the option is for.
    off = OAuthClient(base + "/mcp")
    with pytest.raises(BaseExceptionGroup) as excinfo:
        async with off.session() as session:
            assert text_of(await session.call_tool("echo", {"text": "x"})) == "x"
            await session.call_tool("slow", {"ms": 1})
    assert excinfo.group_contains(AuthorizationRefused, match="invalid_scope"), excinfo.value
    [registered] = off.registrations
    assert set(registered["scope"].split()) == {"mcp:tools", "offline_access"}, registered
    assert ("POST", base + "/mcp", 403) in off.exchanges
    assert len(off.user.authorization_urls) == 2, "the SDK did try to step up"
    assert {"mcp:tools", "crm:write"} <= requested_scopes(off.user.authorization_urls[1])
    assert len(off.storage.tokens) == 1, "the AS issued no stepped-up token"

    # On: the registration names every scope the server can require, the first authorization
    # asks for them, and the same call goes through with the first token (no 403 to recover
    # from). Same SDK, same AS, same upstream, same rule.
    resource = base + "/all/mcp"
    on = OAuthClient(resource)
    async with on.session() as session:
        assert text_of(await session.call_tool("echo", {"text": "x"})) == "x"
        result = await session.call_tool("slow", {"ms": 1})
        assert not result.is_error and text_of(result) == "slept 1ms", result
    [registered] = on.registrations
    assert set(registered["scope"].split()) == {"mcp:tools", "crm:write", "offline_access"}, registered
    assert len(on.user.authorization_urls) == 1, on.user.authorization_urls
    assert {"mcp:tools", "crm:write"} <= requested_scopes(on.user.authorization_urls[0])
    assert [e for e in on.exchanges if e[2] == 403] == [], on.exchanges
    assert_in_order(on.exchanges, [
        ("POST", resource, 401),
        ("GET", f"{base}/.well-known/oauth-protected-resource/all/mcp", 200),
        ("POST", f"{issuer}/reg", 201),
        ("POST", f"{issuer}/token", 200),
        ("POST", resource, 200),
    ])
    [token] = on.storage.tokens
    claims = jwt_claims(token.access_token)
    assert set(claims["scope"].split()) == {"mcp:tools", "crm:write"} and claims["aud"] == resource, claims
