"""The official Python MCP SDK client against the reference 'everything' server, once over stdio
and once over HTTP, federated behind one Gatehouse virtual server; both protocol generations
(the SDK's legacy handshake gives 2025-11-25, its auto mode negotiates 2026-07-28)."""

import anyio
import pytest
from mcp import Client, types

from conftest import stdio_everything_yaml

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def federated(everything_url: str) -> str:
    return (
        "servers:\n  - { name: federated, path: /mcp, upstreams: [stdio, http] }\nupstreams:\n"
        + stdio_everything_yaml("stdio")
        + f"  http:\n    kind: http\n    url: {everything_url}\n    timeouts: {{ request: 30s }}\n"
    )


def text_of(result) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_federated_stdio_and_http_everything(start_gateway, everything_http, mode):
    url = start_gateway(federated(everything_http)) + "/mcp"
    async with Client(url, mode=mode, read_timeout_seconds=30) as client:
        expected = "2025-11-25" if mode == "legacy" else "2026-07-28"
        assert client.protocol_version == expected

        tools = {t.name for t in (await client.list_tools()).tools}
        for prefix in ("stdio", "http"):
            assert f"{prefix}__echo" in tools, sorted(tools)
            assert f"{prefix}__get-sum" in tools, sorted(tools)
        assert not any(t == "echo" for t in tools), "names must be prefixed when federating"

        for prefix in ("stdio", "http"):
            r = await client.call_tool(f"{prefix}__echo", {"message": f"hello {prefix}"})
            assert text_of(r) == f"Echo: hello {prefix}"
            r = await client.call_tool(f"{prefix}__get-sum", {"a": 2, "b": 40})
            assert "42" in text_of(r)

        # Progress notifications relayed in order, from each transport.
        for prefix in ("stdio", "http"):
            seen = []

            async def on_progress(progress, total, message):
                seen.append((progress, total))

            r = await client.call_tool(
                f"{prefix}__trigger-long-running-operation",
                {"duration": 1, "steps": 4},
                progress_callback=on_progress,
            )
            assert "completed" in text_of(r).lower()
            assert [p for p, _ in seen] == [1, 2, 3, 4], seen
            assert all(t == 4 for _, t in seen)

        # Resources: URIs carry the upstream prefix and read back through the gateway.
        resources = (await client.list_resources()).resources
        by_prefix = {p: [r for r in resources if str(r.uri).startswith(p + "+")] for p in ("stdio", "http")}
        for prefix, items in by_prefix.items():
            assert items, f"no resources from {prefix}: {[str(r.uri) for r in resources]}"
            contents = (await client.read_resource(items[0].uri)).contents
            # The contents come back under the URI the client read, not the upstream's own.
            assert contents and str(contents[0].uri) == str(items[0].uri)

        templates = (await client.list_resource_templates()).resource_templates
        assert any(t.uri_template.startswith("stdio+") for t in templates)
        assert any(t.uri_template.startswith("http+") for t in templates)

        # Prompts with arguments.
        prompts = {p.name for p in (await client.list_prompts()).prompts}
        assert "stdio__args-prompt" in prompts and "http__args-prompt" in prompts, sorted(prompts)
        for prefix in ("stdio", "http"):
            got = await client.get_prompt(f"{prefix}__args-prompt", {"city": "Lisbon", "state": "PT"})
            assert "Lisbon" in str(got.messages[0].content)

        if mode == "legacy":
            await client.send_ping()  # ping no longer exists in 2026-07-28


async def test_single_stdio_upstream_is_not_prefixed(start_gateway):
    yaml = "servers:\n  - { name: solo, path: /mcp, upstreams: [everything] }\nupstreams:\n" + stdio_everything_yaml("everything")
    url = start_gateway(yaml) + "/mcp"
    async with Client(url, mode="legacy", read_timeout_seconds=30) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert "echo" in tools
        r = await client.call_tool("echo", {"message": "solo"})
        assert text_of(r) == "Echo: solo"
        resources = (await client.list_resources()).resources
        assert resources and not str(resources[0].uri).startswith("everything+")
        contents = (await client.read_resource(resources[0].uri)).contents
        assert str(contents[0].uri) == str(resources[0].uri)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_sampling_is_relayed_to_the_client(start_gateway, everything_http, mode):
    """legacy: the upstream's sampling request is relayed on the SSE stream; auto (2026-07-28):
    the gateway turns it into an InputRequiredResult and the SDK's retry resumes the call."""
    url = start_gateway(federated(everything_http)) + "/mcp"
    asked = []

    async def on_sampling(context, params):
        asked.append(("sampling", params.messages[0].content.text))
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="sampled-answer"), model="test-model")

    async def on_elicit(context, params):
        asked.append(("elicitation", params.message))
        return types.ElicitResult(action="accept", content={"color": "blue"})

    async with Client(url, mode=mode, read_timeout_seconds=30, sampling_callback=on_sampling, elicitation_callback=on_elicit) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        for prefix in ("stdio", "http"):
            name = f"{prefix}__trigger-sampling-request"
            assert name in tools, sorted(tools)
            r = await client.call_tool(name, {"prompt": f"question via {prefix}", "maxTokens": 10})
            assert "sampled-answer" in text_of(r), text_of(r)
    assert ("sampling", "question via stdio") in asked or any("stdio" in q for _, q in asked), asked
    assert any("http" in q for _, q in asked), asked
