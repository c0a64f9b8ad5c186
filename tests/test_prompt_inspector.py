"""The prompt inspector: `render_prompt` gives the ids the engine receives, each reply keeps
what the model wrote before parsing, and the pages show both for any round."""

from __future__ import annotations

import json

from chatglm3_tokenizer import train_sentencepiece
from streamlit.testing.v1 import AppTest

from glm_client import Done, LocalClient, Message, TextDelta, ToolCall
from glm_client.agent import round_prompt, run_turn
from glm_client.dialects.chatglm3 import ChatGLM3Dialect
from glm_client.engines.base import EngineInfo
from glm_client.remote.openai import OpenAIClient
from tests.pages import open_page
from tests.test_chatglm3_forced import SCHEMAS, RandomEngine

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
HISTORY = [
    Message.system("You are terse."),
    Message.user("Weather in Paris?"),
    Message.assistant("", [ToolCall("get_weather", {"city": "Paris"}, id="call_1")]),
    Message.observation('{"temperature": 21}', name="get_weather", tool_call_id="call_1"),
]


def spy_on(monkeypatch, engine) -> list[list[int]]:
    """Every prompt the engine is asked to continue, as it receives it."""
    received: list[list[int]] = []
    generate = engine.generate

    def recording(input_ids, *args, **kwargs):
        received.append(list(input_ids))
        return generate(input_ids, *args, **kwargs)

    monkeypatch.setattr(engine, "generate", recording)
    return received


def test_render_prompt_ids_are_what_the_embedded_engine_receives(embedded_client: LocalClient, monkeypatch):
    received = spy_on(monkeypatch, embedded_client.engine)
    params = {"max_new_tokens": 4, "temperature": 0.0}
    view = embedded_client.render_prompt(HISTORY, [WEATHER], **params)
    events = list(embedded_client.stream(HISTORY, [WEATHER], **params))

    assert received == [view.ids]
    assert view.token_count == len(view.ids) == events[-1].usage.prompt_tokens
    # Special tokens are spelled out, with the tool's schema where the template puts it.
    assert view.text.startswith("<|im_start|>system") and view.text.endswith("<|im_start|>assistant\n")
    assert '"get_weather"' in view.text and '{"temperature": 21}' in view.text


def test_a_prompt_trimmed_to_fit_is_inspected_as_trimmed(tmp_path, monkeypatch):
    """max_new_tokens decides the room left for the history, so the inspector renders with the round's params."""
    engine = RandomEngine(train_sentencepiece(tmp_path))
    engine.info = EngineInfo("tiny-chatglm3", "cpu", "float32", 400, "chatglm")
    client = LocalClient(engine, ChatGLM3Dialect.from_hf_tokenizer(engine.tokenizer))
    received = spy_on(monkeypatch, engine)
    history = [Message.system("Be brief.")]
    for turn in range(30):
        history += [Message.user(f"Question {turn}: hello world"), Message.assistant("Answer.")]
    history.append(Message.user("Last question?"))
    view = client.render_prompt(history, max_new_tokens=150)
    events = list(client.stream(history, max_new_tokens=150))

    assert received == [view.ids] and view.token_count <= 400 - 150
    assert "Question 0:" not in view.text and "Last question?" in view.text
    assert any("oldest message(s) were left out" in getattr(event, "message", "") for event in events)
    assert len(client.render_prompt(history, max_new_tokens=20).ids) > view.token_count  # less room, more kept


def test_render_prompt_ids_are_what_a_chatglm3_engine_receives(tmp_path, monkeypatch):
    engine = RandomEngine(train_sentencepiece(tmp_path))
    client = LocalClient(engine, ChatGLM3Dialect.from_hf_tokenizer(engine.tokenizer))
    received = spy_on(monkeypatch, engine)
    params = {"max_new_tokens": 300, "seed": 3, "force_tool": "set_thermostat"}
    view = client.render_prompt(HISTORY, SCHEMAS, **params)
    events = list(client.stream(HISTORY, SCHEMAS, **params))

    assert received == [view.ids]
    assert view.text.startswith("[gMASK]sop<|system|>") and view.text.endswith("<|assistant|>")
    assert view.text.count("<|assistant|>") == 2  # the call's turn, and the one the reply starts
    # The raw output is the call as the model wrote it; the parser made one call of it.
    done = events[-1]
    assert isinstance(done, Done) and done.finish_reason == "tool_calls"
    call = next(event for event in events if isinstance(event, ToolCall))
    # SentencePiece's dummy prefix gives the content part its leading space, as ChatGLM3 writes it.
    expected = f"set_thermostat\n ```python\ntool_call(mode={call.arguments['mode']!r}, celsius={call.arguments['celsius']})\n```"
    assert done.raw == expected.replace("'", '"')


def test_each_round_keeps_its_raw_output_params_and_offered_tools(embedded_client: LocalClient):
    conversation = [Message.system("Answer in one word."), Message.user("Say hello.")]
    deltas = []
    for event in run_turn(embedded_client, conversation, None, [WEATHER], temperature=0.0, max_new_tokens=6):
        if isinstance(event, TextDelta):
            deltas.append(event.text)
    reply = conversation[-1]
    assert reply.role == "assistant" and reply.meta["raw_output"].strip()
    assert reply.meta["raw_output"].strip() == "".join(deltas).strip() == reply.content.strip()
    assert reply.meta["params"] == {"temperature": 0.0, "max_new_tokens": 6}
    assert reply.meta["tools"] == ["get_weather"] and reply.meta["model"] == embedded_client.info.name
    # Re-rendered from what was kept, the prompt is the one that round was given.
    again = round_prompt(embedded_client, conversation, len(conversation) - 1, [WEATHER])
    assert again.ids == embedded_client.fit_context(conversation[:-1], [WEATHER], 6)[0]


def test_an_openai_backend_shows_the_request_without_its_key_and_keeps_the_streamed_chunks(server):
    scripted, root = server
    url = f"{root}/v1"
    scripted.queue("Hi there.")
    client = OpenAIClient(url, api_key="sk-very-secret", model="scripted")
    view = client.render_prompt(HISTORY, [WEATHER], temperature=0.5, max_new_tokens=9)
    request = json.loads(view.text)
    assert "sk-very-secret" not in view.text and request["headers"] == {"Authorization": "Bearer ***"}
    assert request["POST"] == f"{url}/chat/completions"
    assert request["body"] == client.request_body(HISTORY, [WEATHER], temperature=0.5, max_new_tokens=9)
    assert view.ids is None and view.token_count is None

    done = list(client.stream([Message.user("hi")]))[-1]
    chunks = done.raw.splitlines()
    assert chunks[-1] == "[DONE]"
    content = "".join(
        json.loads(chunk)["choices"][0]["delta"].get("content") or ""
        for chunk in chunks[:-1]
        if json.loads(chunk).get("choices")
    )
    assert content == "Hi there."


def test_the_tool_page_inspects_a_tool_round(page_model):
    raw_call = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "6*7"}}\n</tool_call>'
    page_model.queue(
        [ToolCall("calculator", {"expression": "6*7"}, id="c1"), Done("tool_calls", raw=raw_call)],
        "It is 42.",
    )
    at: AppTest = open_page("tool.py")
    at.chat_input[0].set_value("What is 6*7?").run()
    toggles = [toggle for toggle in at.toggle if toggle.label == "🔍 Inspect"]
    assert len(toggles) == 2  # the call's round and the answer's round
    toggles[0].set_value(True).run()
    blocks = [block.value for block in at.code]
    prompt = next(block for block in blocks if block.startswith("<|system|>"))
    assert "<|user|>\nWhat is 6*7?" in prompt and "calculator" in prompt.split("<|tools|>")[1]
    assert raw_call in blocks
    parsed = json.loads(blocks[blocks.index(raw_call) + 1])
    assert parsed == [{"tool_call": "calculator", "arguments": {"expression": "6*7"}}]
    # The second round's prompt holds the call's result; it is rendered only when asked for.
    assert not any("It is 42." in block for block in blocks)
    at.toggle(key=toggles[1].key).set_value(True).run()
    second = [block.value for block in at.code if block.value.startswith("<|system|>")]
    assert len(second) == 2 and "<|observation|>\n42" in second[1]
