"""Interceptors with real processes: the gateway POSTs each tools/call, prompts/get and
resources/read to hook servers written here (Python's http.server on loopback), in the order
configured. A validator's deny reaches the client as a JSON-RPC error and the upstream is never
called; a mutator replaces the arguments sent upstream or the result the client gets; a
validator that tries to mutate, a hook that is slow, down, failing or talking nonsense is
refused (fail closed) or ignored (fail open) as `on_error` says. The hook sees the method, the
target, the server, the upstream and a null principal, with secret-looking arguments redacted
(and a mutator handing "[redacted]" back keeps the original value upstream); listings and the
handshake never reach hooks."""

import json
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from answers import error_of, result_of, text_of
from conftest import free_port, gateway_bin
from test_oauth import PROTOCOL, RawSession
from test_quotas import start

# ---------------------------------------------------------------- helpers


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The request body, sent with Content-Length or chunked."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        out = b""
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while handler.rfile.readline().strip():
                    pass
                return out
            out += handler.rfile.read(size)
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


def serve(handler_class) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def reply(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str = "application/json",
          extra: dict | None = None) -> None:
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            handler.send_header(k, v)
        handler.end_headers()
        handler.wfile.write(body)
    except OSError:
        pass  # the gateway gave up waiting (a timeout test)


@dataclass
class Seen:
    path: str
    content_type: str
    raw: bytes
    payload: dict | None


class Hook:
    """A hook server: records every POST and answers what `answer(path, payload)` returns — a
    dict (sent as 200 JSON) or a (status, body bytes) pair."""

    def __init__(self):
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.answer = lambda path, payload: {"decision": "allow"}
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = read_body(self)
                try:
                    payload = json.loads(raw)
                except ValueError:
                    payload = None
                with hook.lock:
                    hook.seen.append(Seen(self.path, self.headers.get("Content-Type", ""), raw, payload))
                answer = hook.answer(self.path, payload)
                if isinstance(answer, dict):
                    reply(self, 200, json.dumps(answer).encode())
                else:
                    reply(self, answer[0], answer[1])

            def log_message(self, *args):
                pass

        self.server = serve(Handler)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def payloads(self, path: str | None = None) -> list[dict]:
        with self.lock:
            return [s.payload for s in self.seen if path is None or s.path == path]

    def slow(self, path, payload):
        """Answers allow only when the test ends (or after 5 s)."""
        self.release.wait(5)
        return {"decision": "allow"}

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    h = Hook()
    yield h
    h.close()




def echo(s: RawSession, args: dict | None = None):
    return s.request("tools/call", {"name": "echo", "arguments": {"text": "hi"} if args is None else args})


class UpstreamCalls:
    """The fixture's count of tools/call requests, asked directly (not through the gateway),
    less the `stats` calls made to ask it."""

    def __init__(self, fixture_url: str):
        self.session = RawSession(fixture_url, None).open()
        self.asked = 0

    def __call__(self) -> int:
        self.asked += 1
        stats = json.loads(text_of(result_of(self.session.request("tools/call", {"name": "stats", "arguments": {}}))))
        return stats["calls"] - self.asked


def interceptor(name: str, url: str, **options) -> dict:
    return {"name": name, "url": url, **options}


def gateway(processes, tmp_path, upstream_url: str, servers: dict[str, list[dict]]) -> tuple[str, str]:
    """A gateway with one server per entry (name → interceptors; the path is /<name>), each on
    the one upstream `fx`. Returns the MCP base URL and the ops base URL."""
    entries = [{"name": name, "path": f"/{name}", "upstreams": ["fx"], "interceptors": hooks}
               for name, hooks in servers.items()]
    upstreams = {"fx": {"kind": "http", "url": upstream_url, "protocol": PROTOCOL}}
    # JSON is YAML: the configuration is written in flow style.
    return start(processes, tmp_path, f"servers: {json.dumps(entries)}\nupstreams: {json.dumps(upstreams)}\n")


# ---------------------------------------------------------------- decisions


def test_a_deny_reaches_the_client_and_the_upstream_is_not_called(processes, fixture_http, tmp_path, hook):
    fixture = fixture_http()
    hook.answer = lambda path, p: ({"decision": "deny", "reason": "no forbidden words"}
                                   if p["arguments"].get("text") == "forbidden" else {"decision": "allow"})
    base, _ = gateway(processes, tmp_path, fixture, {"main": [interceptor("dlp", hook.url(), role="validator")]})
    s = RawSession(base + "/main", None).open()
    upstream_calls = UpstreamCalls(fixture)
    before = upstream_calls()

    denied = echo(s, {"text": "forbidden"})
    error = error_of(denied)
    assert error["code"] == -32006, error
    assert 'denied by interceptor "dlp": no forbidden words' in error["message"], error
    data = error.get("data") or {}
    assert {k: data.get(k) for k in ("deniedBy", "interceptor", "reason")} == {
        "deniedBy": "interceptor", "interceptor": "dlp", "reason": "no forbidden words"}, error
    assert upstream_calls() == before, "a denied call must not reach the upstream"
    assert len(hook.payloads()) == 1

    assert text_of(result_of(echo(s, {"text": "fine"}))) == "fine"
    assert upstream_calls() == before + 1, "an allowed call reaches the upstream"
    assert len(hook.payloads()) == 2


def test_a_deny_in_the_response_phase_withholds_the_result(processes, fixture_http, tmp_path, hook):
    fixture = fixture_http()
    hook.answer = lambda path, p: {"decision": "deny", "reason": "result withheld"}
    base, _ = gateway(processes, tmp_path, fixture, {
        "main": [interceptor("outbound", hook.url(), role="validator", phases=["response"])]})
    s = RawSession(base + "/main", None).open()
    upstream_calls = UpstreamCalls(fixture)
    before = upstream_calls()

    denied = echo(s, {"text": "confidential-output-4711"})
    error = error_of(denied)
    assert error["code"] == -32006 and 'denied by interceptor "outbound": result withheld' in error["message"], error
    assert "confidential-output-4711" not in denied.text
    assert upstream_calls() == before + 1, "the response phase runs after the upstream answered"
    [seen] = hook.payloads()
    assert seen["phase"] == "response" and text_of(seen["result"]) == "confidential-output-4711", seen


def test_a_mutator_replaces_the_arguments_sent_upstream(processes, fixture_http, tmp_path, hook):
    hook.answer = lambda path, p: {"decision": "allow", "arguments": {"text": "rewritten: " + p["arguments"]["text"]}}
    base, _ = gateway(processes, tmp_path, fixture_http(), {
        "main": [interceptor("rewriter", hook.url(), role="mutator")]})
    s = RawSession(base + "/main", None).open()
    assert text_of(result_of(echo(s, {"text": "hi"}))) == "rewritten: hi"


def test_a_mutator_replaces_the_result_the_client_gets(processes, fixture_http, tmp_path, hook):
    def answer(path, p):
        if p["phase"] != "response":
            return {"decision": "allow"}
        return {"decision": "allow", "result": {"content": [{"type": "text", "text": "replaced: " + text_of(p["result"])}]}}

    hook.answer = answer
    base, _ = gateway(processes, tmp_path, fixture_http(), {
        "main": [interceptor("rewriter", hook.url(), role="mutator", phases=["request", "response"])]})
    s = RawSession(base + "/main", None).open()
    assert text_of(result_of(echo(s, {"text": "hi"}))) == "replaced: hi"
    request, response = hook.payloads()
    assert request["phase"] == "request" and request["result"] is None, request
    assert response["phase"] == "response" and response["role"] == "mutator", response
    assert response["arguments"] == {"text": "hi"}, "the response phase carries the call's arguments"
    assert text_of(response["result"]) == "hi", response


def test_a_mutator_handing_back_redacted_keeps_the_original_value(processes, fixture_http, tmp_path, hook):
    hook.answer = lambda path, p: {"decision": "allow", "arguments": {**p["arguments"], "text": "changed"}}
    base, _ = gateway(processes, tmp_path, fixture_http(), {"main": [interceptor("rewriter", hook.url(), role="mutator")]})
    s = RawSession(base + "/main", None).open()
    args = {"text": "original", "api_token": "s3cr3t", "login": {"Password": "hunter2", "user": "ada"}}
    # The fixture's `arguments` tool answers with the arguments it received.
    result = result_of(s.request("tools/call", {"name": "arguments", "arguments": args}))
    [seen] = hook.payloads()
    assert seen["arguments"] == {"text": "original", "api_token": "[redacted]",
                                 "login": {"Password": "[redacted]", "user": "ada"}}, seen
    sent = {"text": "changed", "api_token": "s3cr3t", "login": {"Password": "hunter2", "user": "ada"}}
    assert json.loads(text_of(result)) == sent, "the hook's change applies; what it could not see keeps its value"


def test_a_validator_that_tries_to_mutate_is_a_hook_error(processes, fixture_http, tmp_path, hook):
    fixture = fixture_http()

    def answer(path, p):
        if path == "/arguments":
            return {"decision": "allow", "arguments": {"text": "sneaked in"}}
        return {"decision": "allow", "result": {"content": [{"type": "text", "text": "sneaked in"}]}}

    hook.answer = answer
    base, _ = gateway(processes, tmp_path, fixture, {
        "args": [interceptor("strict", hook.url("/arguments"), role="validator")],
        "result": [interceptor("strict", hook.url("/result"), role="validator", phases=["response"])],
    })
    upstream_calls = UpstreamCalls(fixture)
    before = upstream_calls()

    for path, reached_upstream in (("/args", 0), ("/result", 1)):
        s = RawSession(base + path, None).open()
        resp = echo(s)
        assert "sneaked in" not in resp.text, resp.text
        error = error_of(resp)
        assert error["code"] == -32000 and 'interceptor "strict"' in error["message"], (path, error)
        assert upstream_calls() == before + reached_upstream, path
        before += reached_upstream


def failure(kind: str, hook: Hook) -> str:
    """A hook URL that fails in the way `kind` names."""
    if kind == "down":
        return f"http://127.0.0.1:{free_port()}/hook"
    hook.answer = {
        "slow": hook.slow,
        "status-500": lambda path, p: (500, b'{"decision": "allow"}'),
        "not-json": lambda path, p: (200, b"allow, I guess"),
        "unknown-decision": lambda path, p: {"decision": "maybe"},
        "json-array": lambda path, p: (200, b'["deny"]'),
    }[kind]
    return hook.url()


@pytest.mark.parametrize("kind", ["slow", "down", "status-500", "not-json", "unknown-decision", "json-array"])
def test_a_failing_hook_fails_closed_or_open_as_configured(processes, fixture_http, tmp_path, hook, kind):
    fixture = fixture_http()
    url = failure(kind, hook)
    base, _ = gateway(processes, tmp_path, fixture, {
        "closed": [interceptor("guard", url, role="validator", timeout="300ms", on_error="deny")],
        "open": [interceptor("guard", url, role="validator", timeout="300ms", on_error="allow")],
    })
    upstream_calls = UpstreamCalls(fixture)
    before = upstream_calls()

    closed = RawSession(base + "/closed", None).open()
    t0 = time.monotonic()
    error = error_of(echo(closed))
    elapsed = time.monotonic() - t0
    assert error["code"] == -32000 and 'interceptor "guard" failed' in error["message"], error
    if kind == "slow":
        assert "timed out" in error["message"], error
    assert elapsed < 3.0, f"the hook's timeout is 300ms; the answer took {elapsed:.1f}s"
    assert upstream_calls() == before, "a call refused for a failed hook must not reach the upstream"

    opened = RawSession(base + "/open", None).open()
    t0 = time.monotonic()
    assert text_of(result_of(echo(opened, {"text": "fail open"}))) == "fail open"
    assert time.monotonic() - t0 < 3.0
    assert upstream_calls() == before + 1


# ---------------------------------------------------------------- what hooks see


def test_the_hook_sees_the_call_with_secrets_redacted(processes, fixture_http, tmp_path, hook):
    base, _ = gateway(processes, tmp_path, fixture_http(), {"main": [interceptor("inspector", hook.url(), role="validator")]})
    s = RawSession(base + "/main", None).open()
    secrets = {"api_token": "s3cr3t", "API_KEY": "k-12345", "authorization": "Basic dXNlcjpwdw==",
               "nested": {"Password": "hunter2", "list": [{"client_secret": "cs-999"}], "kept": "visible"}}
    assert text_of(result_of(echo(s, {"text": "x", **secrets}))) == "x"
    result_of(s.request("prompts/get", {"name": "greet", "arguments": {"name": "Ada"}}))
    read = result_of(s.request("resources/read", {"uri": "fixture://doc/1"}))
    assert read["contents"][0]["text"] == "content of fixture://doc/1"

    with hook.lock:
        seen = list(hook.seen)
    assert [x.payload["method"] for x in seen] == ["tools/call", "prompts/get", "resources/read"], [x.payload for x in seen]
    for x in seen:
        assert x.content_type.split(";")[0].strip() == "application/json", x.content_type
        for value in ("s3cr3t", "k-12345", "dXNlcjpwdw==", "hunter2", "cs-999"):
            assert value.encode() not in x.raw, f"{value!r} reached the hook: {x.raw!r}"
    call, prompt, resource = (x.payload for x in seen)
    common = {"version": "gatehouse.interceptor/v1", "phase": "request", "role": "validator", "interceptor": "inspector",
              "server": "main", "tenant": None, "upstream": "fx", "principal": None, "result": None}
    for p in (call, prompt, resource):
        assert {k: p.get(k, "<missing>") for k in common} == common, p
        # The request's trace id, as its audit record and access log line name it.
        assert len(p["traceId"]) == 32 and int(p["traceId"], 16) >= 0, p
    assert call["target"] == "echo", call
    assert call["arguments"] == {"text": "x", "api_token": "[redacted]", "API_KEY": "[redacted]", "authorization": "[redacted]",
                                 "nested": {"Password": "[redacted]", "list": [{"client_secret": "[redacted]"}], "kept": "visible"}}, call
    assert prompt["target"] == "greet" and prompt["arguments"] == {"name": "Ada"}, prompt
    assert resource["target"] == "fixture://doc/1" and resource["arguments"] is None, resource


def test_listings_and_the_handshake_never_reach_hooks(processes, fixture_http, tmp_path, hook):
    hook.answer = lambda path, p: {"decision": "deny", "reason": "nothing gets through"}
    base, _ = gateway(processes, tmp_path, fixture_http(), {
        "main": [interceptor("wall", hook.url("/wall"), role="validator", phases=["request", "response"])],
        "tools-only": [interceptor("wall", hook.url("/tools-only"), role="validator", methods=["tools/call"])],
    })
    s = RawSession(base + "/main", None).open()
    tools = {t["name"] for t in result_of(s.request("tools/list"))["tools"]}
    assert {"echo", "stats", "big"} <= tools, tools
    assert result_of(s.request("prompts/list"))["prompts"]
    assert result_of(s.request("resources/list"))["resources"]
    result_of(s.request("resources/templates/list"))
    result_of(s.request("ping"))
    assert hook.payloads() == [], "listings, ping and initialize are not sent to hooks"
    # The wall does stand in the way of calls.
    assert error_of(echo(s))["code"] == -32006
    assert [p["method"] for p in hook.payloads("/wall")] == ["tools/call"]

    # `methods` limits what is sent: prompts and resources pass a hook that only sees tool calls.
    only = RawSession(base + "/tools-only", None).open()
    greeting = result_of(only.request("prompts/get", {"name": "greet", "arguments": {"name": "Ada"}}))
    assert greeting["messages"][0]["content"]["text"] == "Hello, Ada!", greeting
    assert result_of(only.request("resources/read", {"uri": "fixture://doc/2"}))["contents"][0]["text"] == "content of fixture://doc/2"
    assert error_of(echo(only))["code"] == -32006
    assert [p["method"] for p in hook.payloads("/tools-only")] == ["tools/call"]


def test_hooks_run_in_the_order_listed_each_seeing_the_one_before(processes, fixture_http, tmp_path, hook):
    def answer(path, p):
        if path == "/first":
            return {"decision": "allow", "arguments": {"text": p["arguments"]["text"] + "+first"}}
        return {"decision": "allow"}

    hook.answer = answer
    base, _ = gateway(processes, tmp_path, fixture_http(), {"main": [
        interceptor("first", hook.url("/first"), role="mutator"),
        interceptor("second", hook.url("/second"), role="validator"),
    ]})
    s = RawSession(base + "/main", None).open()
    assert text_of(result_of(echo(s, {"text": "hi"}))) == "hi+first"
    with hook.lock:
        order = [(x.path, x.payload["arguments"]["text"]) for x in hook.seen]
    assert order == [("/first", "hi"), ("/second", "hi+first")], \
        "hooks run in order, and a validator after a mutator checks what will be sent upstream"


# ---------------------------------------------------------------- configuration


def check(tmp_path, hooks: list[dict]) -> subprocess.CompletedProcess:
    config = tmp_path / "check.yaml"
    servers = [{"name": "main", "path": "/mcp", "upstreams": ["fx"], "interceptors": hooks}]
    upstreams = {"fx": {"kind": "http", "url": "http://127.0.0.1:9/mcp"}}
    config.write_text(f"listen: 127.0.0.1:0\nops: {{ listen: 127.0.0.1:0 }}\nservers: {json.dumps(servers)}\n"
                      f"upstreams: {json.dumps(upstreams)}\n")
    return subprocess.run([str(gateway_bin()), "check", "--config", str(config)], capture_output=True, text=True, timeout=30)


def test_check_refuses_two_interceptors_of_one_name(tmp_path):
    ok = check(tmp_path, [interceptor("dlp", "http://127.0.0.1:9/a"), interceptor("dlp-2", "http://127.0.0.1:9/b")])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    out = check(tmp_path, [interceptor("dlp", "http://127.0.0.1:9/a"), interceptor("dlp", "http://127.0.0.1:9/b")])
    said = out.stdout + out.stderr
    assert out.returncode != 0, said
    assert "servers[0].interceptors" in said and "dlp" in said, said


# ---------------------------------------------------------------- who calls, and how many at once


def test_a_hook_is_told_who_calls_and_never_their_credential(processes, fixture_http, tmp_path, hook):
    import re
    import secrets

    config = tmp_path / f"gatehouse-{secrets.token_hex(4)}.yaml"
    servers = [{"name": "main", "path": "/main", "upstreams": ["fx"], "auth": {"api_keys": True},
                "interceptors": [interceptor("dlp", hook.url())]}]
    upstreams = {"fx": {"kind": "http", "url": fixture_http(), "protocol": PROTOCOL}}
    config.write_text("listen: 127.0.0.1:0\nops: { listen: 127.0.0.1:0 }\n"
                      f"servers: {json.dumps(servers)}\nupstreams: {json.dumps(upstreams)}\n")
    out = subprocess.run([str(gateway_bin()), "keys", "create", "--config", str(config), "--subject", "build-bot",
                          "--scopes", "mcp:tools", "--groups", "ci,release"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    key = re.search(r"ghk_[A-Za-z0-9_-]+", out.stdout).group(0)
    gw = processes([gateway_bin(), "serve", "--config", config], env={"RUST_LOG": "gatehouse=debug,info"})
    base = gw.read_line_starting("gatehouse listening on ")
    s = RawSession(base + "/main", key).open()
    assert text_of(result_of(echo(s, {"text": "hi"}))) == "hi"
    [seen] = hook.payloads()
    assert seen["principal"]["subject"] == "build-bot", seen
    assert sorted(seen["principal"]["groups"]) == ["ci", "release"], seen
    assert seen["principal"]["scopes"] == ["mcp:tools"], seen
    assert key not in json.dumps(seen), "the caller's credential never reaches a hook"


def test_a_hook_at_its_concurrency_cap_makes_the_next_call_wait_within_its_timeout(processes, fixture_http, tmp_path, hook):
    lock, busy, most = threading.Lock(), [0], [0]

    def answer(path, p):
        with lock:
            busy[0] += 1
            most[0] = max(most[0], busy[0])
        time.sleep(0.4)
        with lock:
            busy[0] -= 1
        return {"decision": "allow"}

    hook.answer = answer
    base, _ = gateway(processes, tmp_path, fixture_http(), {
        "main": [interceptor("one-at-a-time", hook.url(), max_concurrent=1, timeout="600ms")]})
    sessions = [RawSession(base + "/main", None).open() for _ in range(2)]
    answers: list = [None, None]

    def call(i):
        answers[i] = echo(sessions[i], {"text": f"call {i}"}).json()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert most[0] == 1, "the hook never saw more calls at once than its cap"
    ok = [a for a in answers if "result" in a]
    failed = [a for a in answers if "error" in a]
    # One call holds the only slot for 400 ms; the other waits for it, and the 600 ms timeout
    # (the wait included) runs out before its own 400 ms answer: refused, fail closed.
    assert len(ok) == 1 and len(failed) == 1, answers
    error = failed[0]["error"]
    assert error["code"] == -32000 and "timed out after 600ms" in error["message"], error
