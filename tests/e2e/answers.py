"""Reading a gateway's answer in tests: the JSON-RPC message of an HTTP response, whether it
came as JSON or as an SSE stream (the last result or error event), and its parts."""

import json


def message_of(resp) -> dict:
    """The JSON-RPC answer of an HTTP response, sent as JSON or as an SSE stream."""
    assert resp.status_code == 200, f"{resp.status_code} {resp.headers} {resp.text[:2000]}"
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        answers = []
        for event in resp.text.replace("\r\n", "\n").split("\n\n"):
            data = "\n".join(line[5:].removeprefix(" ") for line in event.split("\n") if line.startswith("data:"))
            if data:
                msg = json.loads(data)
                if "result" in msg or "error" in msg:
                    answers.append(msg)
        assert answers, resp.text[:2000]
        return answers[-1]
    return resp.json()


def result_of(resp) -> dict:
    msg = message_of(resp)
    assert "result" in msg, str(msg)[:2000]
    return msg["result"]


def error_of(resp) -> dict:
    msg = message_of(resp)
    assert "error" in msg, str(msg)[:2000]
    return msg["error"]


def text_of(result: dict) -> str:
    return "".join(c["text"] for c in result["content"] if c.get("type") == "text")
