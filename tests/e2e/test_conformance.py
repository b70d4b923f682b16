"""The official MCP conformance suite, run against Gatehouse with the project's fixture server
behind it: the suite judges the gateway as if it were the MCP server.

- 0.1.16 (stable): every active scenario must pass, through an HTTP and through a stdio upstream.
- 0.2.0 alpha with --spec-version 2026-07-28: every active scenario must pass (the gateway
  bridges the stateless protocol to a session-based upstream).
"""

import re
import subprocess

import pytest

from conftest import NODE_MODULES, node22, stdio_fixture_yaml

STABLE = NODE_MODULES / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
NEXT = NODE_MODULES / "conformance-next" / "dist" / "index.js"


def run_suite(cli, url: str, *extra: str) -> tuple[int, int, str]:
    out = subprocess.run(
        [str(node22()), str(cli), "server", "--url", url, *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    text = out.stdout + out.stderr
    m = re.search(r"Total: (\d+) passed, (\d+) failed", text)
    assert m, f"no summary from the suite (exit {out.returncode}):\n{text[-4000:]}"
    return int(m.group(1)), int(m.group(2)), text


def failures(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.lstrip().startswith("✗")]


def http_config(fixture_url: str) -> str:
    return f"""servers:
  - name: conformance
    path: /mcp
    upstreams: [fx]
upstreams:
  fx:
    kind: http
    url: {fixture_url}
    protocol: "2025-11-25"
"""


def test_stable_suite_through_an_http_upstream(start_gateway, fixture_http):
    base = start_gateway(http_config(fixture_http()))
    # The suite's DNS-rebinding scenario needs a localhost URL.
    url = base.replace("127.0.0.1", "localhost") + "/mcp"
    passed, failed, text = run_suite(STABLE, url)
    assert failed == 0, "\n".join(failures(text)) + "\n" + text[-3000:]
    assert passed >= 39, text[-2000:]
    for scenario in ["tools-call-sampling", "tools-call-elicitation", "tools-call-with-progress", "dns-rebinding-protection"]:
        assert f"✓ {scenario}" in text, f"{scenario} did not pass:\n{text[-3000:]}"


def test_stable_suite_through_a_stdio_upstream(start_gateway):
    yaml = "servers:\n  - { name: conformance, path: /mcp, upstreams: [fx] }\nupstreams:\n" + stdio_fixture_yaml("fx")
    base = start_gateway(yaml)
    passed, failed, text = run_suite(STABLE, base.replace("127.0.0.1", "localhost") + "/mcp")
    assert failed == 0, "\n".join(failures(text)) + "\n" + text[-3000:]
    assert passed >= 39


def test_2026_07_28_suite_bridged_to_a_session_based_upstream(start_gateway, fixture_http):
    base = start_gateway(http_config(fixture_http()))
    passed, failed, text = run_suite(NEXT, base.replace("127.0.0.1", "localhost") + "/mcp", "--spec-version", "2026-07-28")
    assert failed == 0, "\n".join(failures(text)) + "\n" + text[-3000:]
    assert passed >= 41
    for scenario in ["http-header-validation", "caching", "sep-2164-resource-not-found"]:
        if scenario in text:
            assert f"✓ {scenario}" in text, f"{scenario} did not pass"


def test_2026_07_28_stateless_scenario(start_gateway, fixture_http):
    """server-stateless (outside the active suite): everything the gateway can be judged on
    passes; the only failures are checks the suite cannot run without fixture tools for
    input-required flows, which it reports as "Not testable"."""
    base = start_gateway(http_config(fixture_http()))
    out = subprocess.run(
        [str(node22()), str(NEXT), "server", "--url", base.replace("127.0.0.1", "localhost") + "/mcp",
         "--scenario", "server-stateless", "--spec-version", "2026-07-28"],
        capture_output=True, text=True, timeout=120,
    )
    text = out.stdout + out.stderr
    m = re.search(r"Passed: (\d+)/(\d+), (\d+) failed", text)
    assert m, text[-3000:]
    passed = int(m.group(1))
    assert passed >= 24, text[-3000:]
    failed_lines = [l for l in text.split("=== Failed Checks ===")[-1].splitlines() if "Error:" in l]
    untestable = [l for l in failed_lines if "Not testable" in l]
    assert len(failed_lines) == len(untestable), "\n".join(failed_lines)
