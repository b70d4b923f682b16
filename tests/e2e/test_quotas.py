"""Quotas with real processes: a caller over its rate or its concurrent calls gets 429 with
Retry-After and a JSON-RPC error naming the quota; two gateways sharing the machine's Redis
(127.0.0.1:6379) hold one combined rate; a Redis stopped mid-test gives the configured
fail mode, in the answers, in /readyz and in the metrics."""

import json
import re
import secrets
import subprocess
import threading
import time

import httpx2 as httpx

from conftest import free_port, gateway_bin, wait_for_port
from test_oauth import PROTOCOL, RawSession, result_of


def start(processes, tmp_path, yaml: str) -> tuple[str, str]:
    """A gateway; returns its MCP base URL and its ops base URL."""
    config = tmp_path / f"gatehouse-{secrets.token_hex(4)}.yaml"
    config.write_text("listen: 127.0.0.1:0\nops: { listen: 127.0.0.1:0 }\naudit: { flush_interval: 100ms }\n" + yaml)
    gw = processes([gateway_bin(), "serve", "--config", config], env={"RUST_LOG": "gatehouse=debug,info"})
    ops = gw.read_line_starting("gatehouse ops listening on ")
    return gw.read_line_starting("gatehouse listening on "), ops


def call(s: RawSession, tool: str = "echo", args: dict | None = None):
    return s.request("tools/call", {"name": tool, "arguments": args or {"text": "hi"}})


def server_yaml(fixture: str, quotas: str) -> str:
    return f"""servers:
  - {{ name: main, path: /mcp, upstreams: [fx] }}
upstreams:
  fx: {{ kind: http, url: "{fixture}", protocol: "{PROTOCOL}" }}
quotas:
{quotas}"""


def test_over_its_rate_a_caller_gets_429_naming_the_quota(processes, fixture_http, tmp_path):
    base, ops = start(processes, tmp_path, server_yaml(fixture_http(), """  rules:
    - { name: per-caller, rate: { requests: 3, per: 1m } }
    - { name: one-slow-call, tools: slow, concurrent: 1 }
"""))
    s = RawSession(base + "/mcp", None).open()
    for _ in range(3):
        result_of(call(s))
    refused = call(s)
    assert refused.status_code == 429, refused.text
    retry = int(refused.headers["retry-after"])
    assert 15 <= retry <= 20, retry
    error = refused.json()["error"]
    assert error["code"] == -32008 and "per-caller" in error["message"], error
    data = error["data"]
    assert data["quota"] == "per-caller" and data["kind"] == "rate" and data["limit"] == 3, data
    assert data["retryAfterSeconds"] == retry and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["resetsAt"]), data
    # Listings count too: a runaway loop of tools/list is held back the same way.
    assert s.request("tools/list").status_code == 429
    # A 2026-07-28 client of the same address shares the caller's bucket.
    stateless = httpx.post(base + "/mcp", timeout=10, json={
        "jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x"},
                                                                     "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}}},
        headers={"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2026-07-28",
                 "Mcp-Method": "tools/call", "Mcp-Name": "echo"})
    assert stateless.status_code == 429 and stateless.json()["error"]["data"]["quota"] == "per-caller", stateless.text

    metrics = httpx.get(f"{ops}/metrics", timeout=10).text
    assert re.search(r'gatehouse_quota_refusals_total\{rule="per-caller",kind="rate"\} [3-9]', metrics), metrics
    time.sleep(0.5)
    config = next(tmp_path.glob("gatehouse-*.yaml"))
    out = subprocess.run([str(gateway_bin()), "audit", "--config", str(config), "--since", "all", "--json"],
                         capture_output=True, text=True, timeout=30)
    records = [json.loads(line) for line in out.stdout.splitlines()]
    refusals = [r for r in records if r["decision"] == "quota"]
    assert refusals and all(r["rule"] == "per-caller (rate)" and r["outcome"] == "refused" and r["error_code"] == 429
                            for r in refusals), refusals


def test_concurrent_calls_over_the_limit_get_429_until_one_ends(processes, fixture_http, tmp_path):
    base, _ = start(processes, tmp_path, server_yaml(fixture_http(), """  rules:
    - { name: one-slow-call, tools: slow, concurrent: 1 }
"""))
    first, second = RawSession(base + "/mcp", None).open(), RawSession(base + "/mcp", None).open()
    answers = {}
    t = threading.Thread(target=lambda: answers.setdefault("slow", call(first, "slow", {"ms": 3000})))
    t.start()
    time.sleep(1.0)
    busy = call(second, "slow", {"ms": 1})
    assert busy.status_code == 429, busy.text
    assert busy.json()["error"]["data"]["kind"] == "concurrent" and busy.headers["retry-after"] == "1"
    # Other tools are not limited by that rule.
    result_of(call(second))
    t.join()
    result_of(answers["slow"])
    result_of(call(second, "slow", {"ms": 1}))


def redis_yaml(fixture: str, url: str, prefix: str, on_outage: str, rules: str) -> str:
    return server_yaml(fixture, f"""  redis: {{ url: "{url}", key_prefix: "{prefix}", timeout: 200ms, on_outage: {on_outage} }}
  rules:
{rules}""")


def test_two_gateways_sharing_redis_hold_one_combined_rate(processes, fixture_http, tmp_path):
    rate, burst, seconds = 20, 5, 4.0
    prefix = f"gatehouse-e2e:{secrets.token_hex(4)}:"
    rules = f"    - {{ name: whole-server, per: [server], rate: {{ requests: {rate}, per: 1s, burst: {burst} }} }}\n"
    fixture = fixture_http()
    gateways = [start(processes, tmp_path, redis_yaml(fixture, "redis://127.0.0.1:6379", prefix, "closed", rules))[0]
                for _ in range(2)]
    allowed, refused, other = [0], [0], []
    lock = threading.Lock()
    sessions = [RawSession(g + "/mcp", None).open() for g in gateways for _ in range(3)]
    go = threading.Barrier(len(sessions) + 1)
    deadline = [0.0]

    def load(s: RawSession):
        body = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "hi"}}}
        with httpx.Client(headers=s.headers(), timeout=10) as client:
            # Connected before the clock starts, with a notification (requests count).
            assert client.post(s.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}).status_code == 202
            go.wait()
            while time.monotonic() < deadline[0]:
                r = client.post(s.url, json=body)
                with lock:
                    if r.status_code == 200 and "result" in r.json():
                        allowed[0] += 1
                    elif r.status_code == 429:
                        refused[0] += 1
                    else:
                        other.append((r.status_code, r.text))

    threads = [threading.Thread(target=load, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    deadline[0] = time.monotonic() + seconds
    go.wait()
    for t in threads:
        t.join()
    elapsed = seconds
    assert not other, other[:3]
    # A token bucket allows its burst at once, then its rate.
    expected = rate * elapsed + burst
    print(f"allowed {allowed[0]} of {allowed[0] + refused[0]} in {elapsed:.2f}s; configured {expected:.0f}")
    assert refused[0] > allowed[0], "the load must exceed the rate for the test to mean anything"
    assert abs(allowed[0] - expected) <= 0.1 * expected, (allowed[0], expected)


def test_a_redis_stopped_mid_test_gives_the_configured_fail_mode(processes, fixture_http, tmp_path):
    port = free_port()
    redis = processes(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                      capture_stdout=False)
    wait_for_port(port, redis.proc)
    url = f"redis://127.0.0.1:{port}"
    rules = "    - { name: per-caller, rate: { requests: 1000, per: 1s } }\n"
    fixture = fixture_http()
    closed, closed_ops = start(processes, tmp_path, redis_yaml(fixture, url, "c:", "closed", rules))
    opened, open_ops = start(processes, tmp_path, redis_yaml(fixture, url, "o:", "open", rules))
    sessions = {"closed": RawSession(closed + "/mcp", None).open(), "open": RawSession(opened + "/mcp", None).open()}
    for s in sessions.values():
        result_of(call(s))
    for ops in (closed_ops, open_ops):
        ready = httpx.get(f"{ops}/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["checks"]["quota store"] == "ok", ready.text

    redis.proc.kill()
    redis.proc.wait(timeout=5)
    down = call(sessions["closed"])
    assert down.status_code == 503, down.text
    assert "quota store" in down.json()["error"]["message"] and down.headers["retry-after"] == "1", down.text
    result_of(call(sessions["open"]))
    time.sleep(1.2)  # past the readiness verdict's cache
    closed_ready = httpx.get(f"{closed_ops}/readyz", timeout=10)
    assert closed_ready.status_code == 503 and "refused" in closed_ready.json()["checks"]["quota store"], closed_ready.text
    open_ready = httpx.get(f"{open_ops}/readyz", timeout=10)
    assert open_ready.status_code == 200 and "uncounted" in open_ready.json()["checks"]["quota store"], open_ready.text
    for ops in (closed_ops, open_ops):
        metrics = httpx.get(f"{ops}/metrics", timeout=10).text
        assert re.search(r"^gatehouse_quota_store_up 0$", metrics, re.M), metrics
        assert re.search(r"^gatehouse_quota_store_errors_total [1-9]", metrics, re.M), metrics

    # Redis back: counting resumes without a restart.
    redis = processes(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                      capture_stdout=False)
    wait_for_port(port, redis.proc)
    deadline = time.monotonic() + 10
    while call(sessions["closed"]).status_code != 200:
        assert time.monotonic() < deadline, "the gateway did not reconnect to Redis"
        time.sleep(0.2)
