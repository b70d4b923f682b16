"""The shipped examples (examples/*.yaml) work: each passes `gatehouse check` as shipped, then runs
against local stand-ins and answers one real MCP call (initialize + tools/call) made with the
credentials that deployment expects.

A file in examples/ without a case in CASES fails `test_every_example_has_a_case`, so a new
example cannot ship untested.

How an example is made local (`localize`), the same for every file:
  - https://login.example.com/…, https://login.microsoftonline.com/…, https://accounts.google.com
        → the test IdP (tests/node/oidc-as.mjs) in the shape the example is for;
  - https://<anything>.example/mcp (upstreams)  → the fixture server (fixtures/mcp-fixture, `echo`);
  - https://gatehouse.example.com (public_url)  → http://127.0.0.1:<the gateway's port>;
  - listen ports 8080 / 9464                     → a free port / port 0 on 127.0.0.1;
  - `command: npx` + server-everything           → node + the installed server-everything;
  - client ids of the gateway at the IdP         → the test IdP's clients (CASES[..].rewrites);
  - store: a relative sqlite file stays (the configuration sits in a temp folder); the
    PostgreSQL one of replicas.yaml is a fresh database on 127.0.0.1:5432, dropped afterwards.
Secrets named by `{ env: VAR }` are given dummy values for `check` and real ones for the run.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx  # what the MCP SDK 2.x installs
import pytest

from conftest import ROOT, AuthServer, everything_js, fixture_bin, free_port, gateway_bin, start_oidc_as
from test_oauth import RawSession, mint, result_of
from test_oauth_facade import IDP_CLIENT, IDP_EXCHANGER, Facade

EXAMPLES = ROOT / "examples"
POSTGRES = "postgres://postgres@127.0.0.1:5432"


def key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def env_vars(text: str) -> set[str]:
    return set(re.findall(r"\{\s*env:\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}", text))


def dummy_env(text: str) -> dict:
    """A dummy for every variable the file names: a valid sealing key fits every secret field,
    and DATABASE_URL must look like a store URL."""
    env = {name: key() for name in env_vars(text)}
    if "DATABASE_URL" in env:
        env["DATABASE_URL"] = "postgres://gatehouse@127.0.0.1:5432/gatehouse"
    return env


@dataclass
class Case:
    idp: str | None  # which IdP fixture: "plain", "entra", "google" or None
    call: str  # how the call is made: none, minted, alias, api_key, catalog, facade, replicas
    tool: str = "echo"
    args: dict = field(default_factory=lambda: {"text": "hello from the example"})
    expect: str = "hello from the example"
    rewrites: dict = field(default_factory=dict)  # per-file literal replacements
    env: dict = field(default_factory=dict)  # real values for the run
    idp2: str | None = None  # a second IdP, in place of login.microsoftonline.com (tenants)


FACADE_REWRITES_ENV = {"GATEHOUSE_IDP_SECRET": IDP_CLIENT[1]}

CASES = {
    "gatehouse.yaml": Case(None, "none", args={"message": "hi"}, expect="hi"),
    "resource-server.yaml": Case("plain", "minted"),
    "audience-alias.yaml": Case("plain", "alias"),
    "api-keys.yaml": Case(None, "api_key"),
    "catalog.yaml": Case(None, "catalog"),
    "replicas.yaml": Case(None, "replicas"),
    "token-exchange.yaml": Case(
        "plain", "minted", tool="crm__echo",
        rewrites={"client_id: gatehouse, client_secret: { env: GATEHOUSE_IDP_SECRET }":
                  f"client_id: {IDP_EXCHANGER[0]}, client_secret: {{ env: GATEHOUSE_IDP_SECRET }}"},
        env={"GATEHOUSE_IDP_SECRET": IDP_EXCHANGER[1]}),
    "tenants.yaml": Case("plain", "tenants", idp2="entra"),
    # The virtual tool's name, and a result the guardrails redact (email: redact).
    "guarded.yaml": Case(None, "none", tool="announce", args={"text": "write to ops@corp.example"},
                         expect="write to [REDACTED:email]"),
    "facade-entra.yaml": Case(
        "entra", "facade",
        rewrites={"client_id: 11111111-1111-1111-1111-111111111111": f"client_id: {IDP_CLIENT[0]}"},
        env=FACADE_REWRITES_ENV),
    "facade-google.yaml": Case(
        "google", "facade",
        rewrites={"client_id: 1234567890-abcdef.apps.googleusercontent.com": f"client_id: {IDP_CLIENT[0]}"},
        env=FACADE_REWRITES_ENV),
}


def test_every_example_has_a_case():
    shipped = sorted(p.name for p in EXAMPLES.glob("*.yaml"))
    assert shipped, "examples/ holds no configuration"
    assert sorted(CASES) == shipped, "every file in examples/ needs a case in CASES (and only those)"


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_passes_check_as_shipped(name):
    path = EXAMPLES / name
    text = path.read_text()
    assert text.startswith("#"), f"{name} must start with a comment saying what it is for"
    for line in text.splitlines():
        # A secret in the YAML: any `secret:`/`key:` whose value is not an env or file source.
        for m in re.finditer(r"\b(?:client_secret|secret|key):\s*(.*)", line.split("#")[0]):
            assert re.match(r"\{\s*(env|file):", m.group(1)), f"{name}: inline secret in {line!r}"
    out = subprocess.run([gateway_bin(), "check", "--config", path], env={**os.environ, **dummy_env(text)},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"{name}: {out.stdout}{out.stderr}"
    assert ": OK (" in out.stdout, out.stdout


# ---------------------------------------------------------------- the local stand-ins


@pytest.fixture(scope="module")
def idps(module_processes, oidc_as_entra_like) -> dict[str, AuthServer]:
    """The test IdP in each shape the examples are written for, started once for the module."""
    return {
        "plain": start_oidc_as(module_processes),
        "entra": oidc_as_entra_like,
        # Google: OIDC discovery only, no DCR, no RFC 8707, and a Workspace domain in `hd`.
        "google": start_oidc_as(module_processes, "--no-registration", "--no-resource-indicators",
                                "--no-rfc8414", "--hd", "example.com"),
    }


@pytest.fixture(scope="module")
def fixture_url(module_processes) -> str:
    return module_processes([fixture_bin(), "http", "--port", "0"]).read_line_starting("READY ")


def localize(text: str, case: Case, issuer: str | None, fixture: str, port: int, issuer2: str | None = None) -> str:
    for old, new in case.rewrites.items():
        assert old in text, f"rewrite {old!r} no longer matches the example"
        text = text.replace(old, new)
    if issuer2:
        text = re.sub(r'https://login\.microsoftonline\.com[^"\s,}]*', issuer2, text)
    if issuer:
        text = re.sub(r'https://(login\.example\.com|login\.microsoftonline\.com)[^"\s,}]*', issuer, text)
        text = text.replace("https://accounts.google.com", issuer)
    text = re.sub(r"https://[a-z0-9.-]+\.example/mcp", fixture, text)
    text = text.replace("https://gatehouse.example.com", f"http://127.0.0.1:{port}")
    text = re.sub(r"listen: [0-9.]+:8080", f"listen: 127.0.0.1:{port}", text)
    text = re.sub(r"listen: [0-9.]+:9464", "listen: 127.0.0.1:0", text)
    text = text.replace("command: npx", "command: node")
    text = text.replace('args: ["-y", "@modelcontextprotocol/server-everything"]', f'args: ["{everything_js()}"]')
    assert ".example" not in re.sub(r"#.*", "", text).replace("example.com]", "").replace("hd: example.com", ""), \
        f"a placeholder was left:\n{text}"
    return text


def serve(processes, config: Path, env: dict) -> str:
    p = processes([gateway_bin(), "serve", "--config", config], env={"RUST_LOG": "gatehouse=debug,info", **env},
                  cwd=config.parent)
    return p.read_line_starting("gatehouse listening on ") + "/mcp"


def gatehouse(config: Path, env: dict, *args: str) -> str:
    out = subprocess.run([gateway_bin(), *args, "--config", config], env={**os.environ, **env},
                         capture_output=True, text=True, timeout=60, cwd=config.parent)
    assert out.returncode == 0, f"gatehouse {' '.join(args)}: {out.stdout}{out.stderr}"
    return out.stdout


@pytest.fixture
def postgres_db():
    """A fresh database on the local PostgreSQL, dropped after the test."""
    name = f"gh_examples_{os.getpid()}_{secrets.token_hex(4)}"
    psql = ["psql", f"{POSTGRES}/test", "-v", "ON_ERROR_STOP=1", "-qc"]
    made = subprocess.run([*psql, f"CREATE DATABASE {name}"], capture_output=True, text=True, timeout=30)
    assert made.returncode == 0, f"PostgreSQL must run on 127.0.0.1:5432 with a database `test`: {made.stderr}"
    yield f"{POSTGRES}/{name}"
    subprocess.run([*psql, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], capture_output=True, timeout=30)


def call(url: str, token: str | None, case: Case) -> None:
    s = RawSession(url, token).open()
    result = result_of(s.request("tools/call", {"name": case.tool, "arguments": case.args}))
    text = "".join(c.get("text", "") for c in result["content"])
    assert case.expect in text and not result.get("isError"), result


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_runs_against_local_stand_ins(name, idps, fixture_url, processes, tmp_path, request):
    case = CASES[name]
    original = (EXAMPLES / name).read_text()
    idp = idps[case.idp] if case.idp else None
    port = free_port()
    text = localize(original, case, idp.issuer if idp else None, fixture_url, port,
                    idps[case.idp2].issuer if case.idp2 else None)
    env = {**dummy_env(original), **case.env}
    config = tmp_path / name
    base = f"http://127.0.0.1:{port}"

    if case.call == "replicas":
        env["DATABASE_URL"] = request.getfixturevalue("postgres_db")
        # The same file on both replicas, each on its own port.
        second = free_port()
        config.write_text(text)
        (tmp_path / "b.yaml").write_text(text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{second}"))
        a = serve(processes, config, env)
        b = serve(processes, tmp_path / "b.yaml", env)
        s = RawSession(a, None).open()
        s.url = b  # continued on the other replica: the sealed id opens there too
        result = result_of(s.request("tools/call", {"name": case.tool, "arguments": case.args}))
        assert case.expect in result["content"][0]["text"], result
        # And the store really is that database: the replicas made their tables in it.
        tables = subprocess.run(["psql", env["DATABASE_URL"], "-Atc",
                                 "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"],
                                capture_output=True, text=True, timeout=30)
        assert tables.returncode == 0 and int(tables.stdout) > 0, tables
        return

    if case.call == "tenants":
        config.write_text(text)
        serve(processes, config, env)
        acme, beta = f"{base}/acme/mcp", f"{base}/beta/mcp"
        entra = idps[case.idp2].issuer
        tid = "22222222-2222-2222-2222-222222222222"
        alice = mint(idp.issuer, sub="alice", resource=acme, scope="mcp:tools")["access_token"]
        bob = mint(entra, sub="bob", resource=beta, scope="mcp:tools", tid=tid)["access_token"]
        call(acme, alice, case)
        call(beta, bob, case)
        # Each tenant's token is refused by the other's server, even minted for it.
        for url, token in ((beta, mint(idp.issuer, sub="alice", resource=beta, scope="mcp:tools")["access_token"]),
                           (acme, mint(entra, sub="bob", resource=acme, scope="mcp:tools", tid=tid)["access_token"]),
                           (beta, mint(entra, sub="eve", resource=beta, scope="mcp:tools", tid="another-directory")["access_token"])):
            assert RawSession(url, token).post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}).status_code == 401
        return

    config.write_text(text)
    token = None
    if case.call == "api_key":
        out = gatehouse(config, env, "keys", "create", "--subject", "build-bot", "--scopes", "mcp:tools")
        token = re.search(r"ghk_[A-Za-z0-9_-]+", out).group(0)
    elif case.call == "catalog":
        gatehouse(config, env, "catalog", "add", "tools", "--by", "e2e")
    url = serve(processes, config, env)
    if case.call == "catalog":
        # Registered but not approved: the tool is held back, as the example promises.
        s = RawSession(url, None).open()
        held = s.request("tools/call", {"name": case.tool, "arguments": case.args}).json()
        assert "error" in held or held["result"].get("isError"), held
        gatehouse(config, env, "catalog", "approve", "tools", "--by", "e2e")
        deadline = time.monotonic() + 10  # a CLI decision reaches a running gateway within 2 s
        while time.monotonic() < deadline:
            body = RawSession(url, None).open().request("tools/call", {"name": case.tool, "arguments": case.args}).json()
            if "result" in body:
                break
            time.sleep(0.25)
    elif case.call == "minted":
        token = mint(idp.issuer, sub="alice", resource=url, scope="mcp:tools")["access_token"]
    elif case.call == "alias":
        # The IdP without RFC 8707 puts the configured audience, not the resource URI, in `aud`.
        token = mint(idp.issuer, sub="alice", resource="api://gatehouse", scope="mcp:tools")["access_token"]
        assert RawSession(url, mint(idp.issuer, sub="alice", resource="api://other",
                                    scope="mcp:tools")["access_token"]).post(
            {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}).status_code == 401
    elif case.call == "facade":
        # The headless login the façade tests do: the façade's authorize URL, the IdP's login,
        # the consent page, the code exchanged for Gatehouse's own token.
        facade = Facade(base, idp, None, None, fixture_url, None, tmp_path)
        code, verifier, _ = facade.code_for(client_id="vscode", redirect_uri="http://127.0.0.1/callback")
        resp = facade.token({"grant_type": "authorization_code", "client_id": "vscode", "code": code,
                             "redirect_uri": "http://127.0.0.1/callback", "code_verifier": verifier})
        assert resp.status_code == 200, resp.text
        token = resp.json()["access_token"]
    if case.call != "none" and case.call != "catalog":
        # The deployment is really protected: no credential, no call.
        assert httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
                          headers={"Accept": "application/json, text/event-stream"}, timeout=10).status_code == 401
    call(url, token, case)
    if name == "token-exchange.yaml":
        # The consent upstream: a user who has not connected it is handed a link (URL-mode
        # elicitation, -32042) to the gateway's consent page instead of a result.
        s = RawSession(url, token).open()
        body = s.request("tools/call", {"name": "saas__echo", "arguments": case.args}).json()
        assert body.get("error", {}).get("code") == -32042, body
        link = body["error"]["data"]["elicitations"][0]["url"]
        assert link.startswith(f"{base}/connect/"), link
