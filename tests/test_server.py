"""The API server under uvicorn on 127.0.0.1, driven by the official `openai` client.

A scripted model makes replies exact; the real embedded model checks that the
server adds nothing and mixes nothing (greedy replies equal the in-process ones).
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from glm_client import Done, Message, TextDelta, ToolCall, ToolCallStart
from glm_client.server import create_app, serve_in_thread
from glm_client.testing import ScriptedClient

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {"type": "object", "properties": {"city_name": {"type": "string"}}, "required": ["city_name"]},
    },
}
WEATHER_CALL = [
    TextDelta("Let me check. "),
    ToolCallStart("get_weather"),
    ToolCall("get_weather", {"city_name": "Paris"}),
]
USER = [{"role": "user", "content": "Hi"}]


class EndlessClient(ScriptedClient):
    """Streams 'tick ' every 10 ms until stopped; notes when its generator is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = threading.Event()
        self.sent = 0

    def stream(self, messages, tools=None, *, cancel=None, **params):
        try:
            for _ in range(3000):
                if cancel is not None and cancel.is_set():
                    yield Done("cancelled")
                    return
                time.sleep(0.01)
                self.sent += 1
                yield TextDelta("tick ")
            yield Done("stop")
        finally:
            self.closed.set()


class EchoClient(ScriptedClient):
    """Echoes the last user message word by word, slowly, so concurrent streams interleave."""

    def stream(self, messages, tools=None, *, cancel=None, **params):
        for word in messages[-1].content.split():
            time.sleep(0.005)
            yield TextDelta(word + " ")
        yield Done("stop")


@pytest.fixture
def api(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server[1] + "/v1", api_key="unused", max_retries=0, timeout=30)


def test_health_and_models(server, api):
    _, url = server
    assert httpx.get(url + "/health").json() == {"status": "ok", "model": "scripted"}
    assert [model.id for model in api.models.list()] == ["scripted"]


def test_a_chat_completion_returns_the_reply_and_usage(server, api):
    client, _ = server
    client.queue("Hello there, friend!")
    completion = api.chat.completions.create(model="any", messages=[*USER])
    choice = completion.choices[0]
    assert choice.message.content == "Hello there, friend!" and choice.message.role == "assistant"
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None
    assert completion.object == "chat.completion" and completion.model == "scripted"
    # ScriptedClient counts one prompt token per message and one completion token per chunk.
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (
        1,
        7,
        8,
    )


def test_sampling_parameters_reach_the_model(server, api):
    client, _ = server
    client.queue("a", "b")
    api.chat.completions.create(
        model="m",
        messages=[{"role": "system", "content": "Be brief."}, *USER],
        temperature=0.2,
        top_p=0.9,
        max_tokens=7,
        stop="END",
        seed=42,
        extra_body={"repetition_penalty": 1.05, "loop_stop_tokens": 0},
    )
    api.chat.completions.create(model="m", messages=USER, max_completion_tokens=5, stop=["x", "y"])
    (messages, tools, first), (_, _, second) = client.requests
    assert first == {
        "temperature": 0.2,
        "top_p": 0.9,
        "repetition_penalty": 1.05,
        "loop_stop_tokens": 0,
        "max_new_tokens": 7,
        "seed": 42,
        "stop": ["END"],
    }
    assert second == {"max_new_tokens": 5, "stop": ["x", "y"]}
    assert [(m.role, m.content) for m in messages] == [("system", "Be brief."), ("user", "Hi")] and tools is None


def test_a_streamed_reply_arrives_in_chunks_and_ends_with_usage(server, api):
    client, _ = server
    client.queue("Streaming works fine.")
    chunks = list(
        api.chat.completions.create(model="m", messages=USER, stream=True, stream_options={"include_usage": True})
    )
    deltas = [chunk.choices[0].delta.content for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]
    assert "".join(deltas) == "Streaming works fine." and len(deltas) == 7
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 7


def test_the_raw_stream_is_server_sent_events_ending_with_done(server):
    client, url = server
    client.queue("ok")
    body = {"messages": USER, "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2].removeprefix("data: "))["choices"][0]["finish_reason"] == "stop"


def test_a_tool_call_comes_back_as_tool_calls(server, api):
    client, _ = server
    client.queue(WEATHER_CALL)
    completion = api.chat.completions.create(model="m", messages=USER, tools=[WEATHER_TOOL])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me check. "
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city_name": "Paris"})
    _, tools, params = client.requests[0]
    assert tools == [WEATHER_TOOL] and "force_tool" not in params  # "auto": the model decides


def test_a_streamed_tool_call_arrives_as_tool_call_deltas(server, api):
    client, _ = server
    client.queue([*WEATHER_CALL, ToolCall("get_weather", {"city_name": "Oslo"})])
    chunks = list(api.chat.completions.create(model="m", messages=USER, tools=[WEATHER_TOOL], stream=True))
    calls: dict[int, dict] = {}
    for chunk in chunks:
        for part in chunk.choices[0].delta.tool_calls or []:
            call = calls.setdefault(part.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = call["id"] or part.id
            call["name"] += part.function.name or ""
            call["arguments"] += part.function.arguments or ""
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        ("get_weather", {"city_name": "Paris"}),
        ("get_weather", {"city_name": "Oslo"}),
    ]
    assert all(c["id"].startswith("call_") for c in calls.values()) and calls[0]["id"] != calls[1]["id"]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("tool_choice", "force_tool", "tools_offered"),
    [
        ("required", "any", True),
        ({"type": "function", "function": {"name": "get_weather"}}, "get_weather", True),
        ("none", None, False),
    ],
)
def test_tool_choice_becomes_force_tool(server, api, tool_choice, force_tool, tools_offered):
    client, _ = server
    client.queue(WEATHER_CALL if force_tool else "No tools.")
    completion = api.chat.completions.create(model="m", messages=USER, tools=[WEATHER_TOOL], tool_choice=tool_choice)
    _, tools, params = client.requests[0]
    assert params.get("force_tool") == force_tool and (tools is not None) == tools_offered
    assert completion.choices[0].finish_reason == ("tool_calls" if force_tool else "stop")


def test_legacy_functions_get_a_function_call(server, api):
    client, _ = server
    client.queue(WEATHER_CALL)
    completion = api.chat.completions.create(
        model="m", messages=USER, functions=[WEATHER_TOOL["function"]], function_call={"name": "get_weather"}
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "function_call" and choice.message.tool_calls is None
    assert choice.message.function_call.name == "get_weather"
    assert json.loads(choice.message.function_call.arguments) == {"city_name": "Paris"}
    _, tools, params = client.requests[0]
    assert tools == [WEATHER_TOOL] and params == {"force_tool": "get_weather"}


def test_tool_results_in_the_history_reach_the_model(server, api):
    client, _ = server
    client.queue("It is sunny in Paris.")
    history = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city_name": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"weather": "sunny"}'},
    ]
    api.chat.completions.create(model="m", messages=history, tools=[WEATHER_TOOL])
    messages, _, _ = client.requests[0]
    assert [m.role for m in messages] == ["user", "assistant", "observation"]
    assert messages[1].tool_calls[0].arguments == {"city_name": "Paris"} and messages[1].tool_calls[0].id == "call_1"
    assert messages[2].tool_call_id == "call_1" and messages[2].content == '{"weather": "sunny"}'


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        (b'{"messages": [', None, "not valid JSON"),
        (b"[1, 2]", None, "JSON object"),
        ({"messages": []}, "messages", "non-empty"),
        ({"model": "m"}, "messages", "non-empty"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0]", "Unknown message role 'wizard'"),
        ({"messages": USER, "n": 2}, "n", "n=1"),
        ({"messages": USER, "temperature": 5}, "temperature", "between 0 and 2"),
        ({"messages": USER, "max_tokens": "many"}, "max_tokens", "integer"),
        ({"messages": USER, "loop_stop_tokens": 8}, "loop_stop_tokens", "0 (off) or at least 32"),
        ({"messages": USER, "tool_choice": "required"}, "tool_choice", "needs at least one tool"),
        (
            {"messages": USER, "tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
            "not among",
        ),
    ],
)
def test_bad_requests_get_a_400_with_an_openai_error_body(server, body, param, words):
    _, url = server
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(url + "/v1/chat/completions", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and words in error["message"]
    assert set(error) == {"message", "type", "param", "code"}


def test_the_openai_client_sees_a_bad_request_error(server, api):
    with pytest.raises(openai.BadRequestError) as caught:
        api.chat.completions.create(model="m", messages=USER, n=3)
    assert caught.value.status_code == 400 and "n=1" in caught.value.message


def test_a_model_failure_is_a_500_or_an_error_event_in_the_stream(server, api):
    """The failure's own text stays in the server's log: it may name files, hosts or secrets."""
    client, _ = server
    client.queue([Done("error", error="The GPU caught fire.")])
    with pytest.raises(openai.InternalServerError) as caught:
        api.chat.completions.create(model="m", messages=USER)
    assert "internal error" in caught.value.message and "fire" not in caught.value.message

    client.queue([TextDelta("Half an "), TextDelta("answer"), Done("error", error="The GPU caught fire.")])
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in api.chat.completions.create(model="m", messages=USER, stream=True):
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "Half an answer" and "internal error" in caught.value.message
    assert "fire" not in caught.value.message


def test_an_api_key_is_required_when_set():
    with serve_in_thread(create_app(ScriptedClient(["welcome"]), api_key="s3cret")) as url:
        assert httpx.get(url + "/health").status_code == 200
        for key in ("wrong", None):
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            response = httpx.post(url + "/v1/chat/completions", json={"messages": USER}, headers=headers)
            assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        assert good.chat.completions.create(model="m", messages=USER).choices[0].message.content == "welcome"


def test_a_client_that_disconnects_stops_the_generation():
    client = EndlessClient()
    with serve_in_thread(create_app(client)) as url:
        body = {"messages": USER, "stream": True}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body) as response:
            for line in response.iter_lines():
                if "tick" in line:
                    break
        assert client.closed.wait(5), "the generator was not closed after the disconnect"
        sent = client.sent
        time.sleep(0.2)
        assert client.sent == sent < 100


def test_concurrent_streams_never_mix():
    prompts = [" ".join(f"{name}{i}" for i in range(30)) for name in ("alpha", "beta", "gamma", "delta")]
    with serve_in_thread(create_app(EchoClient())) as url:
        api = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)

        def ask(prompt: str) -> str:
            stream = api.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}], stream=True)
            return "".join(chunk.choices[0].delta.content or "" for chunk in stream)

        with ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(ask, prompts))
    assert [reply.split() for reply in replies] == [prompt.split() for prompt in prompts]


# --- the real embedded model ---------------------------------------------------------------


@pytest.fixture(scope="module")
def model_api(embedded_client):
    with serve_in_thread(create_app(embedded_client)) as url:
        yield openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=300)


@pytest.mark.model
def test_the_real_model_answers_the_same_through_the_server(embedded_client, model_api):
    """Greedy replies through HTTP equal the in-process ones, also with two streams at once."""
    questions = ["What is the capital of France?", "Name a color."]
    params = {"temperature": 0.0, "max_new_tokens": 6}
    expected = [embedded_client.chat([Message.user(q)], **params) for q in questions]

    def ask_streaming(question: str) -> str:
        stream = model_api.chat.completions.create(
            model="m", messages=[{"role": "user", "content": question}], temperature=0, max_tokens=6, stream=True
        )
        return "".join(chunk.choices[0].delta.content or "" for chunk in stream)

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(ask_streaming, questions)) == expected
    completion = model_api.chat.completions.create(
        model="m", messages=[{"role": "user", "content": questions[0]}], temperature=0, max_tokens=6
    )
    assert completion.choices[0].message.content == expected[0]
    assert completion.usage.completion_tokens <= 6 and completion.usage.prompt_tokens > 5


def _supports_force_tool(client) -> bool:
    events = list(client.stream([Message.user("Hi")], [WEATHER_TOOL], force_tool="any", max_new_tokens=1))
    return not (isinstance(events[-1], Done) and "force_tool" in (events[-1].error or ""))


@pytest.mark.model
def test_the_real_model_makes_a_forced_tool_call(embedded_client, model_api):
    if not _supports_force_tool(embedded_client):
        pytest.skip("LocalClient.stream does not support force_tool yet")
    completion = model_api.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "What's the weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=48,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls[0].function.name == "get_weather"
    assert isinstance(json.loads(choice.message.tool_calls[0].function.arguments), dict)
