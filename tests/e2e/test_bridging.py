"""The official Python MCP SDK client, in both of its generations (legacy: 2025-11-25 sessions;
auto: 2026-07-28), through the gateway's default configuration in front of the project's fixture
serving both generations, only sessions, or only 2026-07-28: what the upstream asks of the client
(sampling, elicitation, two rounds) reaches the SDK's callbacks and its answers complete the call."""

import pytest
from mcp import Client, types

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def default_config(url: str) -> str:
    return f"servers:\n  - {{ name: main, path: /mcp, upstreams: [fx] }}\nupstreams:\n  fx: {{ kind: http, url: \"{url}\" }}\n"


def text_of(result) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


@pytest.mark.parametrize("generations", ["both", "sessions", "stateless"])
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_the_sdk_is_asked_and_answers_through_the_gateway(start_gateway, fixture_http, mode, generations):
    upstream = fixture_http("--generations", generations)
    url = start_gateway(default_config(upstream)) + "/mcp"
    asked = []

    async def on_sampling(context, params):
        asked.append(("sampling", params.messages[0].content.text))
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="sampled-answer"), model="test-model")

    async def on_elicit(context, params):
        asked.append(("elicitation", params.message))
        field = "color" if "color" in params.message else "name"
        return types.ElicitResult(action="accept", content={field: "teal" if field == "color" else "Ada"})

    async with Client(url, mode=mode, read_timeout_seconds=30, sampling_callback=on_sampling, elicitation_callback=on_elicit) as client:
        expected = "2025-11-25" if mode == "legacy" else "2026-07-28"
        assert client.protocol_version == expected

        r = await client.call_tool("sample", {})
        assert "sampled-answer" in text_of(r), text_of(r)
        r = await client.call_tool("test_input_required_result_multi_round", {})
        assert text_of(r) == "Hello, Ada! Your favorite color is teal.", text_of(r)
    assert [kind for kind, _ in asked] == ["sampling", "elicitation", "elicitation"], asked
