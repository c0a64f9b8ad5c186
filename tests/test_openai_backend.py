"""The OpenAI backend (`OpenAIClient`) against real HTTP servers on 127.0.0.1.

Mostly the project's own API server backed by a scripted model, so every event is
exact; a few deliberately broken servers for the failure paths; the Chat page on
this backend; and the real embedded model end to end.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from streamlit.testing.v1 import AppTest

import ui.model
from glm_client import Done, Message, TextDelta, ToolCall, ToolCallProgress, ToolCallStart
from glm_client.agent import run_turn
from glm_client.remote.openai import OpenAIClient, ReplyAssembler
from glm_client.server import create_app, serve_in_thread
from glm_client.testing import ScriptedClient

PAGE = str(Path(__file__).resolve().parent.parent / "modes" / "chat.py")
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city_name": {"type": "string"}}},
    },
}


class EndlessClient(ScriptedClient):
    """Streams 'tick ' every 10 ms until stopped; notes when its generator is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = threading.Event()

    def stream(self, messages, tools=None, *, cancel=None, **params):
        try:
            for _ in range(3000):
                if cancel is not None and cancel.is_set():
                    yield Done("cancelled")
                    return
                time.sleep(0.01)
                yield TextDelta("tick ")
            yield Done("stop")
        finally:
            self.closed.set()


@pytest.fixture
def server(server):
    """conftest's scripted model, and an OpenAIClient talking to it over HTTP."""
    model, url = server
    return model, OpenAIClient(url + "/v1")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_info_comes_from_the_server(server):
    _, backend = server
    info = backend.info
    assert (info.name, info.backend, info.context_length) == ("scripted", "openai", 4096)


def test_text_streams_as_deltas_and_ends_with_usage_and_timings(server):
    scripted, backend = server
    scripted.queue("Hello from the server!")
    events = list(backend.stream([Message.system("Be nice."), Message.user("Hi")]))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello from the server!"
    done = events[-1]
    assert isinstance(done, Done) and done.finish_reason == "stop" and done.error is None
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (2, 8)
    assert done.timings.ttft_s > 0 and done.timings.total_s >= done.timings.ttft_s
    assert backend.chat([Message.user("again")]) == "(no scripted reply left)"


def test_generation_parameters_are_mapped_to_the_request(server):
    scripted, backend = server
    scripted.queue("ok")
    backend.chat(
        [Message.user("Hi")],
        temperature=0.3,
        top_p=0.7,
        max_new_tokens=12,
        repetition_penalty=1.2,
        stop=["END"],
        seed=3,
        loop_stop_tokens=0,  # the local client's guard: never sent
    )
    assert scripted.requests[0][2] == {
        "temperature": 0.3,
        "top_p": 0.7,
        "repetition_penalty": 1.2,
        "max_new_tokens": 12,
        "seed": 3,
        "stop": ["END"],
    }


def test_openai_itself_gets_no_vendor_extensions():
    body = OpenAIClient("https://api.openai.com/v1", model="gpt-4o-mini").request_body(
        [Message.user("Hi")], repetition_penalty=1.1, max_new_tokens=5, force_tool="any", temperature=0.0
    )
    assert "repetition_penalty" not in body and body["max_tokens"] == 5 and body["temperature"] == 0.0
    assert body["model"] == "gpt-4o-mini" and body["tool_choice"] == "required"


def test_a_bad_parameter_is_refused_before_any_request(server):
    _, backend = server
    (done,) = list(backend.stream([Message.user("Hi")], temprature=0.5))
    assert done.finish_reason == "error" and "Unknown generation parameter(s): temprature" in done.error


def test_streamed_tool_calls_become_tool_call_events(server):
    scripted, backend = server
    scripted.queue(
        [
            TextDelta("Checking. "),
            ToolCallStart("get_weather"),
            ToolCall("get_weather", {"city_name": "Paris"}),
            ToolCall("get_weather", {"city_name": "Oslo"}),
        ]
    )
    events = list(backend.stream([Message.user("Weather?")], [WEATHER_TOOL], force_tool="get_weather"))
    assert events[0] == TextDelta("Checking. ")
    assert [e.name for e in events if isinstance(e, ToolCallStart)] == ["get_weather", "get_weather"]
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert [(c.name, c.arguments, c.parse_error) for c in calls] == [
        ("get_weather", {"city_name": "Paris"}, None),
        ("get_weather", {"city_name": "Oslo"}, None),
    ]
    assert calls[0].id.startswith("call_") and calls[0].id != calls[1].id
    assert events[-1].finish_reason == "tool_calls"
    _, tools, params = scripted.requests[0]
    assert tools == [WEATHER_TOOL] and params == {"force_tool": "get_weather"}


def test_a_call_streamed_in_pieces_reports_its_progress_as_they_come():
    reply = ReplyAssembler()

    def part(function: dict) -> dict:
        return {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": function}]}}]}

    events = [
        *reply.feed(part({"name": "python", "arguments": ""})),
        *reply.feed(part({"arguments": '{"code": "print('})),
        *reply.feed(part({"arguments": '1)"}'})),
    ]
    assert events == [ToolCallStart("python"), ToolCallProgress(1), ToolCallProgress(2)]
    assert reply.tool_calls()[0].arguments == {"code": "print(1)"}


def test_a_tool_conversation_round_trips(server):
    scripted, backend = server
    call = ToolCall("get_weather", {"city_name": "Paris"}, id="call_abc")
    scripted.queue([call], "Sunny.")
    conversation = [Message.user("Weather in Paris?")]

    def executor(c: ToolCall) -> Message:
        return Message.observation('{"sky": "clear"}')

    list(run_turn(backend, conversation, executor, [WEATHER_TOOL]))
    assert [m.role for m in conversation] == ["user", "assistant", "observation", "assistant"]
    assert conversation[-1].content == "Sunny."
    sent = scripted.requests[1][0]  # what the model got in the second round, after HTTP both ways
    assert [m.role for m in sent] == ["user", "assistant", "observation"]
    assert sent[1].tool_calls[0].arguments == {"city_name": "Paris"}
    assert sent[2].tool_call_id == sent[1].tool_calls[0].id and sent[2].content == '{"sky": "clear"}'


def test_a_server_that_is_down_gives_one_clear_sentence():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    backend = OpenAIClient(url, model="my-model")
    assert backend.info.name == "my-model"
    (done,) = list(backend.stream([Message.user("Hi")]))
    assert done.finish_reason == "error"
    assert done.error == f"Cannot reach the model server at {url}: connection refused."


def test_a_password_in_the_base_url_is_never_shown():
    """http://user:pass@host/v1 works for requests, but repr, info and every error show ***@host."""
    port = closed_port()
    backend = OpenAIClient(f"http://bob:pa55word@127.0.0.1:{port}/v1", model="m")
    (done,) = list(backend.stream([Message.user("Hi")]))
    shown = [repr(backend), str(backend), str(backend.info), done.error]
    assert not any("pa55word" in text or "bob" in text for text in shown), shown
    assert backend.info.device == f"***@127.0.0.1:{port}"
    assert done.error == f"Cannot reach the model server at http://***@127.0.0.1:{port}/v1: connection refused."
    with serve_in_thread(create_app(ScriptedClient(["hi"]), api_key="right")) as url:
        secret_url = url.replace("http://", "http://bob:pa55word@") + "/v1"
        (done,) = list(OpenAIClient(secret_url, api_key="wrong").stream([Message.user("Hi")]))
        assert "refused the API key" in done.error and "pa55word" not in done.error and "***@" in done.error
    with serve_in_thread(create_app(ScriptedClient(["hi"]))) as url:
        secret_url = url.replace("http://", "http://bob:pa55word@") + "/v1"
        events = list(OpenAIClient(secret_url, model="m").stream([Message.user("Hi")]))
        assert events[0] == TextDelta("hi")  # requests still go to the real URL


def test_a_failure_mid_reply_keeps_the_partial_text(server):
    scripted, backend = server
    scripted.queue([TextDelta("Partial "), TextDelta("answer"), Done("error", error="Out of memory")])
    conversation = [Message.user("Tell me")]
    events = list(run_turn(backend, conversation))
    assert events[-1].finish_reason == "error"
    # our server keeps the model's own words in its log
    assert events[-1].error == (
        "The model server failed during the reply: The server had an internal error; its log has the details."
    )
    reply = conversation[-1]
    assert reply.role == "assistant" and reply.content == "Partial answer" and reply.meta["interrupted"]


def test_http_errors_carry_the_servers_message(server):
    _, backend = server
    (done,) = list(backend.stream([]))
    assert done.error.endswith("answered HTTP 400: messages must be a non-empty list of messages.")
    with serve_in_thread(create_app(ScriptedClient(), api_key="right")) as url:
        (done,) = list(OpenAIClient(url + "/v1", api_key="wrong").stream([Message.user("Hi")]))
    assert "refused the API key (HTTP 401)" in done.error and "OPENAI_API_KEY" in done.error


@pytest.fixture(scope="module")
def broken_server():
    app = FastAPI()

    def sse(*events: str) -> StreamingResponse:
        return StreamingResponse(iter(events), media_type="text/event-stream")

    @app.post("/malformed/v1/chat/completions")
    async def malformed() -> StreamingResponse:
        return sse('data: {"choices": [{"index": 0, "delta": {"content": "Hi"}}]}\n\n', "data: {oops\n\n")

    @app.post("/cut/v1/chat/completions")
    async def cut() -> StreamingResponse:
        return sse('data: {"choices": [{"index": 0, "delta": {"content": "Once upon"}}]}\n\n')

    @app.post("/slow/v1/chat/completions")
    async def slow() -> StreamingResponse:
        await asyncio.sleep(3)
        return sse("data: [DONE]\n\n")

    with serve_in_thread(app) as url:
        yield url


@pytest.mark.parametrize(
    ("path", "text", "message"),
    [
        ("malformed", "Hi", "sent a malformed stream event: '{oops'."),
        ("cut", "Once upon", "ended the stream before the reply was finished."),
        ("slow", "", "did not answer within 0.5 s."),
    ],
)
def test_broken_streams_end_in_a_clear_error(broken_server, path, text, message):
    backend = OpenAIClient(f"{broken_server}/{path}/v1", model="m", timeout=0.5)
    events = list(backend.stream([Message.user("Hi")]))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == text
    assert events[-1].finish_reason == "error"
    assert events[-1].error == f"The model server at {broken_server}/{path}/v1 {message}"


def test_cancel_closes_the_stream_and_stops_the_server():
    endless = EndlessClient()
    with serve_in_thread(create_app(endless)) as url:
        cancel = threading.Event()
        events = []
        for event in OpenAIClient(url + "/v1").stream([Message.user("Hi")], cancel=cancel):
            events.append(event)
            cancel.set()
        assert events[0] == TextDelta("tick ") and events[-1].finish_reason == "cancelled"
        assert endless.closed.wait(5), "the server kept generating after the client hung up"


# --- the Chat page on this backend ----------------------------------------------------------


def test_the_chat_page_works_on_the_openai_backend(server, monkeypatch):
    scripted, backend = server
    scripted.queue("Served over **HTTP**.")
    monkeypatch.setattr(ui.model, "get_client", lambda _name=None: backend)
    app = AppTest.from_file(PAGE, default_timeout=60)
    app.run()
    app.chat_input(key="chat_input").set_value("Hello server").run()
    assert not app.exception
    texts = [(m.name, " ".join(md.value for md in m.markdown)) for m in app.chat_message]
    assert texts == [("user", "Hello server"), ("assistant", "Served over **HTTP**.")]
    assert scripted.requests[-1][0][-1].content == "Hello server"


def test_the_chat_page_shows_a_down_server_as_one_sentence(monkeypatch):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    monkeypatch.setattr(ui.model, "get_client", lambda _name=None: OpenAIClient(url, model="m"))
    app = AppTest.from_file(PAGE, default_timeout=60)
    app.run()
    app.chat_input(key="chat_input").set_value("anyone there?").run()
    assert not app.exception
    assert [e.value for e in app.error] == [f"Cannot reach the model server at {url}: connection refused."]


# --- the real model ---------------------------------------------------------------------------


@pytest.mark.model
def test_the_real_model_over_http_answers_like_in_process(embedded_client):
    messages = [Message.user("What is 2 + 2?")]
    params = {"temperature": 0.0, "max_new_tokens": 6}
    with serve_in_thread(create_app(embedded_client)) as url:
        backend = OpenAIClient(url + "/v1")
        events = list(backend.stream(messages, **params))
    assert backend.info.name == embedded_client.info.name
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text and text == embedded_client.chat(messages, **params)
    done = events[-1]
    assert done.finish_reason in ("stop", "length") and 0 < done.usage.completion_tokens <= 6
