"""Reasoning over HTTP: the OpenAI backend reads both field names, and the API server sends both.

A test SSE server on 127.0.0.1 streams reasoning as vLLM does now (`reasoning`) and as
older vLLM, SGLang and DeepSeek do (`reasoning_content`); the API server is read with
the official openai client, through the fields it does not model (`model_extra`).
"""

from __future__ import annotations

import json

import openai
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from glm_client.events import Done, ReasoningDelta, TextDelta
from glm_client.messages import Message
from glm_client.remote.openai import OpenAIClient
from glm_client.server import serve_in_thread


def chunk(delta: dict, finish_reason: str | None = None) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    return "data: " + json.dumps({"choices": [choice]}) + "\n\n"


@pytest.fixture(scope="module")
def thinking_server():
    """Streams "Two and two." as reasoning under the field the path names, then "Four." as content."""
    app = FastAPI()
    bodies: list[dict] = []

    @app.post("/{field}/v1/chat/completions")
    async def completions(field: str, request: Request) -> StreamingResponse:
        bodies.append(await request.json())
        events = [
            chunk({"role": "assistant", "content": ""}),
            chunk({field: "Two and "}),
            chunk({field: "two.", "content": None}),
            chunk({"content": "Four."}),
            chunk({}, "stop"),
            "data: [DONE]\n\n",
        ]
        return StreamingResponse(iter(events), media_type="text/event-stream")

    with serve_in_thread(app) as url:
        yield url, bodies


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
def test_the_backend_reads_reasoning_under_either_name(thinking_server, field: str) -> None:
    url, _ = thinking_server
    events = list(OpenAIClient(f"{url}/{field}/v1", model="m").stream([Message.user("2+2?")]))
    assert [(type(e).__name__, e.text) for e in events if isinstance(e, TextDelta | ReasoningDelta)] == [
        ("ReasoningDelta", "Two and "),
        ("ReasoningDelta", "two."),
        ("TextDelta", "Four."),
    ]
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "stop"


def test_the_backend_sends_the_switch_and_the_history_s_thinking(thinking_server) -> None:
    url, bodies = thinking_server
    bodies.clear()
    earlier = Message.assistant("Hi!")
    earlier.reasoning = "Be friendly."
    backend = OpenAIClient(f"{url}/reasoning/v1", model="m", thinking_switch=True)
    backend.chat([Message.user("Hello"), earlier, Message.user("2+2?")], enable_thinking=False)
    backend.chat([Message.user("2+2?")])
    assert bodies[0]["chat_template_kwargs"] == {"enable_thinking": False}
    assert bodies[0]["messages"][1] == {"role": "assistant", "content": "Hi!", "reasoning_content": "Be friendly."}
    assert "chat_template_kwargs" not in bodies[1]  # not set: the server's template decides
    assert backend.info.thinking_switch


def test_openai_itself_gets_neither_the_switch_nor_reasoning_content() -> None:
    earlier = Message.assistant("Hi!")
    earlier.reasoning = "Be friendly."
    body = OpenAIClient("https://api.openai.com/v1", model="gpt-4o-mini").request_body(
        [Message.user("Hello"), earlier], enable_thinking=True
    )
    assert "chat_template_kwargs" not in body and "reasoning_content" not in body["messages"][1]


# --- the project's API server -------------------------------------------------------------------
THOUGHT = [ReasoningDelta("Two and "), ReasoningDelta("two."), TextDelta("Four.")]


@pytest.fixture
def api(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server[1] + "/v1", api_key="unused", max_retries=0, timeout=30)


def test_a_streamed_reply_carries_reasoning_under_both_names_and_never_in_content(server, api) -> None:
    scripted, _ = server
    scripted.queue(list(THOUGHT))
    stream = api.chat.completions.create(model="m", messages=[{"role": "user", "content": "2+2?"}], stream=True)
    content, old_name, new_name = [], [], []
    for part in stream:
        if not part.choices:
            continue
        delta = part.choices[0].delta
        content.append(delta.content or "")
        old_name.append((delta.model_extra or {}).get("reasoning_content") or "")
        new_name.append(getattr(delta, "reasoning", None) or "")
    assert "".join(content) == "Four."
    assert "".join(old_name) == "".join(new_name) == "Two and two."


def test_a_plain_reply_carries_reasoning_in_the_message(server, api) -> None:
    scripted, _ = server
    scripted.queue(list(THOUGHT))
    reply = api.chat.completions.create(model="m", messages=[{"role": "user", "content": "2+2?"}])
    message = reply.choices[0].message
    assert message.content == "Four."
    assert message.model_extra["reasoning_content"] == "Two and two." == getattr(message, "reasoning", None)


def test_a_reply_without_thinking_has_no_reasoning_field(server, api) -> None:
    scripted, _ = server
    scripted.queue("Four.")
    message = api.chat.completions.create(model="m", messages=[{"role": "user", "content": "2+2?"}]).choices[0].message
    assert "reasoning_content" not in (message.model_extra or {})


def test_the_switch_and_earlier_thinking_reach_the_model(server, api) -> None:
    scripted, _ = server
    scripted.queue("ok")
    api.chat.completions.create(
        model="m",
        messages=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!", "reasoning_content": "Be friendly."},
            {"role": "user", "content": "2+2?"},
        ],
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )
    messages, _, params = scripted.requests[0]
    assert params["enable_thinking"] is False and messages[1].reasoning == "Be friendly."


def test_a_switch_that_is_not_a_boolean_is_a_bad_request(server, api) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        api.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "Hi"}],
            extra_body={"chat_template_kwargs": {"enable_thinking": "yes"}},
        )
    assert "enable_thinking must be true or false" in str(caught.value)


def test_the_backend_and_the_server_agree(server) -> None:
    scripted, url = server
    scripted.queue(list(THOUGHT))
    events = list(OpenAIClient(url + "/v1").stream([Message.user("2+2?")]))
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "Two and two."
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Four."
