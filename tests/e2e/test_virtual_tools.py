"""Tool virtualization with real processes: a server's `virtual` section renames upstream
tools, prompts and resources, overrides their descriptions, fixes arguments (hidden from the
schema, always sent, refused from the client), gives defaults (shown in the schema, used when
left out) and narrows arguments (enum subsets on the project's fixture and ranges on the
reference server-everything: shown in the schema, enforced before the upstream). The tools a
virtual tool comes from disappear under their own names; policy rules see the virtual names;
`gatehouse check` refuses inconsistent definitions, naming the field."""

import json
import re
import subprocess

import pytest

from answers import error_of, result_of, text_of
from conftest import gateway_bin
from test_oauth import PROTOCOL, RawSession
from test_quotas import start

SAY_DESCRIPTION = "Says the approved text back."

VIRTUAL = {
    "tools": [
        {"name": "say", "from": "echo", "upstream": "fx", "description": SAY_DESCRIPTION, "fixed": {"text": "fixed!"}},
        {"name": "shout", "from": "echo", "defaults": {"text": "default text"}},
    ],
    "prompts": [{"name": "simple", "from": "test_simple_prompt", "description": "A renamed simple prompt."}],
    "resources": [{"uri": "docs://static", "from": "test://static-text", "description": "The static text, renamed."}],
}


def call(s: RawSession, tool: str, args: dict):
    return s.request("tools/call", {"name": tool, "arguments": args})


def tools_of(s: RawSession) -> dict[str, dict]:
    return {t["name"]: t for t in result_of(s.request("tools/list"))["tools"]}


def all_of(s: RawSession, method: str, key: str) -> list[dict]:
    """Every item of a paginated listing."""
    items, params = [], {}
    while True:
        page = result_of(s.request(method, params))
        items += page[key]
        if not page.get("nextCursor"):
            return items
        params = {"cursor": page["nextCursor"]}


def config_text(servers: list[dict], upstreams: dict) -> str:
    # JSON is YAML: the configuration is written in flow style.
    return f"servers: {json.dumps(servers)}\nupstreams: {json.dumps(upstreams)}\n"


@pytest.fixture
def fixture_gateway(processes, fixture_http, tmp_path):
    """A gateway on the fixture with the virtual definitions above on /mcp, and the same on
    /guarded with a policy written against names: `say` denied, `echo` denied."""
    policy = {"default": "allow", "rules": [{"name": "no-say", "effect": "deny", "tools": "say"},
                                            {"name": "no-echo", "effect": "deny", "tools": "echo"}]}
    servers = [{"name": "main", "path": "/mcp", "upstreams": ["fx"], "virtual": VIRTUAL},
               {"name": "guarded", "path": "/guarded", "upstreams": ["fx"], "virtual": VIRTUAL, "policy": policy}]
    base, _ = start(processes, tmp_path, config_text(servers, {"fx": {"kind": "http", "url": fixture_http(), "protocol": PROTOCOL}}))
    return base


def assert_invalid_params(resp, *words: str) -> str:
    error = error_of(resp)
    assert error["code"] == -32602, error
    for w in words:
        assert w.lower() in error["message"].lower(), (w, error)
    return error["message"]


# ---------------------------------------------------------------- tools


def test_the_listing_shows_virtual_tools_in_place_of_their_source(fixture_gateway):
    tools = tools_of(RawSession(fixture_gateway + "/mcp", None).open())
    assert "echo" not in tools, "a tool that virtual tools come from is no longer listed"
    assert {"slow", "whoami", "big", "stats"} <= tools.keys(), "tools not virtualized are listed as before"

    say = tools["say"]
    assert say["description"] == SAY_DESCRIPTION, say
    assert "text" not in say["inputSchema"].get("properties", {}), "a fixed argument is hidden from the schema"
    assert "text" not in say["inputSchema"].get("required", []), say

    shout = tools["shout"]
    assert shout["description"].startswith("Echoes its text argument"), "without an override the description is the upstream's"
    assert shout["inputSchema"]["properties"]["text"].get("default") == "default text", shout
    assert shout["inputSchema"]["properties"]["text"].get("type") == "string", "the rest of the schema is kept"


def test_fixed_and_default_arguments_are_applied(fixture_gateway):
    s = RawSession(fixture_gateway + "/mcp", None).open()
    assert text_of(result_of(call(s, "say", {}))) == "fixed!"
    assert text_of(result_of(call(s, "shout", {}))) == "default text"
    assert text_of(result_of(call(s, "shout", {"text": "x"}))) == "x", "a default gives way to the client's value"

    assert_invalid_params(call(s, "say", {"text": "y"}), "text", "fixed")
    message = assert_invalid_params(call(s, "echo", {"text": "z"}), "unknown tool")
    assert "echo" in message


def test_policy_rules_see_the_virtual_names(fixture_gateway):
    s = RawSession(fixture_gateway + "/guarded", None).open()
    tools = tools_of(s)
    assert "say" not in tools and "shout" in tools, sorted(tools)
    assert_invalid_params(call(s, "say", {}))
    # `no-echo` names the upstream's tool, not `shout`, which comes from it.
    assert text_of(result_of(call(s, "shout", {}))) == "default text"


# ---------------------------------------------------------------- prompts and resources


def test_a_virtual_prompt_and_a_virtual_resource_answer_by_their_new_names(fixture_gateway):
    s = RawSession(fixture_gateway + "/mcp", None).open()
    prompts = {p["name"]: p for p in all_of(s, "prompts/list", "prompts")}
    assert prompts["simple"]["description"] == "A renamed simple prompt.", prompts.get("simple")
    got = result_of(s.request("prompts/get", {"name": "simple", "arguments": {}}))
    assert got["messages"][0]["content"]["text"] == "This is a simple prompt for testing.", got

    resources = {r["uri"]: r for r in all_of(s, "resources/list", "resources")}
    assert resources["docs://static"]["description"] == "The static text, renamed.", resources.get("docs://static")
    read = result_of(s.request("resources/read", {"uri": "docs://static"}))
    assert read["contents"][0]["text"] == "This is the content of the static text resource.", read

    # Like tools, the originals are no longer offered under their own names.
    assert "test_simple_prompt" not in prompts and "test://static-text" not in resources
    assert error_of(s.request("prompts/get", {"name": "test_simple_prompt", "arguments": {}}))["code"] == -32602
    assert error_of(s.request("resources/read", {"uri": "test://static-text"}))["code"] == -32002
    assert read["contents"][0]["uri"] == "docs://static", "the contents name the URI the client read, not the upstream's"


# ---------------------------------------------------------------- narrowed arguments


def test_narrowed_arguments_are_shown_and_enforced(processes, everything_http, tmp_path):
    virtual = {"tools": [
        {"name": "small-sum", "from": "get-sum", "narrow": {"a": {"minimum": 0, "maximum": 10}}},
        {"name": "good-news", "from": "get-annotated-message", "narrow": {"messageType": {"enum": ["success", "debug"]}},
         "description": "Only good news."},
    ]}
    servers = [{"name": "ev", "path": "/mcp", "upstreams": ["ev"], "virtual": virtual}]
    upstreams = {"ev": {"kind": "http", "url": everything_http, "timeouts": {"request": "30s"}}}
    base, _ = start(processes, tmp_path, config_text(servers, upstreams))
    s = RawSession(base + "/mcp", None).open()

    tools = tools_of(s)
    assert "get-sum" not in tools and "get-annotated-message" not in tools, sorted(tools)
    assert "echo" in tools, "tools not virtualized are listed as before"
    a = tools["small-sum"]["inputSchema"]["properties"]["a"]
    assert a.get("minimum") == 0 and a.get("maximum") == 10 and a.get("type") == "number", a
    assert "minimum" not in tools["small-sum"]["inputSchema"]["properties"]["b"], "only `a` is narrowed"
    kind = tools["good-news"]["inputSchema"]["properties"]["messageType"]
    assert kind.get("enum") == ["success", "debug"], kind

    for low, high in ((3, 4), (0, 1), (10, 5)):
        assert text_of(result_of(call(s, "small-sum", {"a": low, "b": high}))) == f"The sum of {low} and {high} is {low + high}."
    for bad, bound in ((11, "10"), (-1, "0"), (10.5, "10")):
        message = assert_invalid_params(call(s, "small-sum", {"a": bad, "b": 1}))
        assert re.search(r"\ba\b", message) and re.search(rf"\b{bound}\b", message), \
            f"the error names `a` and the bound it crossed ({bound}): {message}"

    assert "Operation completed successfully" in text_of(result_of(call(s, "good-news", {"messageType": "success"})))
    assert_invalid_params(call(s, "good-news", {"messageType": "error"}), "messageType", "success", "debug")
    # The upstream's original names are gone.
    assert_invalid_params(call(s, "get-sum", {"a": 11, "b": 1}), "unknown tool")


# ---------------------------------------------------------------- configuration


def check(tmp_path, tools: list[dict]) -> tuple[int, str]:
    config = tmp_path / "check.yaml"
    servers = [{"name": "main", "path": "/mcp", "upstreams": ["fx"], "virtual": {"tools": tools}}]
    config.write_text("listen: 127.0.0.1:0\nops: { listen: 127.0.0.1:0 }\n"
                      + config_text(servers, {"fx": {"kind": "http", "url": "http://127.0.0.1:9/mcp"}}))
    out = subprocess.run([str(gateway_bin()), "check", "--config", str(config)], capture_output=True, text=True, timeout=30)
    return out.returncode, out.stdout + out.stderr


def test_check_accepts_consistent_definitions(tmp_path):
    code, said = check(tmp_path, VIRTUAL["tools"] + [
        {"name": "pick", "from": "get-annotated-message", "defaults": {"messageType": "debug"},
         "narrow": {"messageType": {"enum": ["success", "debug"]}}},
        {"name": "small-sum", "from": "get-sum", "defaults": {"a": 2}, "narrow": {"a": {"minimum": 0, "maximum": 10}}},
    ])
    assert code == 0 and ": OK (" in said, said


@pytest.mark.parametrize("tools, field, words", [
    ([{"name": "pick", "from": "get-annotated-message", "defaults": {"messageType": "error"},
       "narrow": {"messageType": {"enum": ["success", "debug"]}}}],
     "servers[0].virtual.tools[0]", ["messageType"]),
    ([{"name": "small-sum", "from": "get-sum", "defaults": {"a": 11}, "narrow": {"a": {"minimum": 0, "maximum": 10}}}],
     "servers[0].virtual.tools[0]", ["a"]),
    ([{"name": "say", "from": "echo"}, {"name": "say", "from": "slow"}],
     "servers[0].virtual.tools[", ["say"]),
    ([{"name": "say", "from": "echo", "fixed": {"text": "a"}, "defaults": {"text": "b"}}],
     "servers[0].virtual.tools[0]", ["text"]),
], ids=["default-outside-enum", "default-outside-range", "name-twice", "fixed-and-default"])
def test_check_refuses_inconsistent_definitions(tmp_path, tools, field, words):
    code, said = check(tmp_path, tools)
    assert code != 0, said
    assert field in said, said
    for w in words:
        assert w in said, (w, said)
