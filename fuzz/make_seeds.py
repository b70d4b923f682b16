#!/usr/bin/env python3
"""Writes fuzz/seeds/<target>/ from the project's own test inputs and documentation, so that
each fuzz target starts from realistic input. Re-run after adding cases; crash inputs found
by fuzzing are kept beside these by hand (fuzz/seeds/<target>/crash-*)."""

import hashlib
import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / ("seed-" + hashlib.sha1(data).hexdigest()[:16])).write_bytes(data)


def rust_raw_strings(path):
    """The r#"..."# literals of a Rust source file that contain no format braces."""
    text = path.read_text()
    return [s for s in re.findall(r'r#"(.*?)"#', text, re.S) if "{{" not in s]


# JSON-RPC envelopes: every raw JSON literal the unit and integration tests use.
messages = set()
for f in [*ROOT.glob("tests/*.rs"), *ROOT.glob("src/**/*.rs")]:
    for s in rust_raw_strings(f):
        if s.lstrip().startswith(("{", "[")) and "jsonrpc" in s:
            messages.add(s)
for m in sorted(messages)[:60]:
    write("jsonrpc_envelope", m)

# Responses for the passthrough rewriter, behind its flags byte (see the target).
responses = [m for m in sorted(messages) if '"result"' in m or '"error"' in m]
responses += [
    '{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"x\\"}{"}]}}',
    '{ "result" : {\n "content": [ {"type":"text"} ] } ,\r\n "jsonrpc":"2.0" , "id" : 7 }\n',
    '{"jsonrpc":"2.0","id":"a","result":{"a":[1,{}]}}',
]
for i, r in enumerate(responses[:40]):
    write("passthrough_rewriter", bytes([i * 37 % 256]) + r.replace('"id":1', '"id":7').encode())

# SSE streams: a cut-count byte, then the stream (the parser's own unit-test streams).
streams = [
    b"id: 1\r\nevent: message\r\ndata: {\"a\"" + b":1}\r\n\r\n: comment\n\ndata: x\ndata: y\n\ndata\ndata:z\n\n",
    b"retry: 5\r\ndata: {\"a\":\r\ndata:  1}\r\n\r\n:c\rdata: b\r\r\nevent: x\n\n",
    b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n: keep-alive\n\n",
]
for s in streams:
    write("sse_parser", b"\x00" + s)
    write("sse_parser", b"\x03\x05\x09\x02" + s)

# Session ids: mode 1 seals the bytes as claims (see the target).
claims = {
    "s": "/mcp", "v": "2025-11-25", "c": {"name": "c", "version": "1"}, "k": {},
    "u": [["a", "upstream-session", "2025-11-25"], ["b", None, "2025-06-18"]],
    "t": 1700000000, "p": "0a1b2c",
}
write("session_open", b"\x01" + json.dumps(claims).encode())
write("session_open", b"\x00k1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")

# JWTs: a header and claims separated by a newline (see the target), and raw tokens.
for h, c in [
    ({"alg": "RS256", "kid": "k1", "typ": "JWT"}, {"iss": "https://idp.example", "sub": "u", "exp": 2000000000, "aud": "gw", "scope": "tools:read"}),
    ({"alg": "ES256", "typ": "at+jwt"}, {"iss": "i", "exp": 1, "nbf": 0, "iat": 0}),
    ({"alg": "none"}, {"iss": "i"}),
    ({"alg": "HS256"}, {"iss": "i"}),
]:
    write("jwt_reader", json.dumps(h) + "\n" + json.dumps(c))
write("jwt_reader", "eyJhbGciOiJub25lIn0.eyJpc3MiOiJpIn0.")

# URI templates: template, newline, URI (the matcher's unit-test cases).
for t, u in [
    ("test://static/resource/{id}", "test://static/resource/7"),
    ("file:///{a}/{b}.txt", "file:///x/y.txt"),
    ("file:///{+path}", "file:///etc/hosts"),
    ("api://items{?page,size}", "api://items?page=2&size=3"),
    ("doc://guide{#s}", "doc://guide#intro"),
    ("doc://a{/p}", "doc://a/b/c"),
    ("x://{.ext}{;m}{&q}", "x://.a;m=1&q=2"),
    ("file:///data/{n}", "file:///data/..%2F..%2Fetc%2Fpasswd"),
]:
    write("uri_template", t + "\n" + u)

# Configurations: the example file, the YAML blocks of the docs, and test configurations.
write("config_loader", (ROOT / "examples" / "gatehouse.yaml").read_text())
for doc in ROOT.glob("docs/*.md"):
    for block in re.findall(r"```yaml\n(.*?)```", doc.read_text(), re.S):
        write("config_loader", block)
for f in ROOT.glob("tests/*.rs"):
    for s in rust_raw_strings(f):
        if "servers:" in s or "upstreams:" in s:
            write("config_loader", s)
