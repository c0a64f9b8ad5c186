"""ChatGLM3 reply parsing: segments, tool calls, interpreter code, malformed calls, streaming."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glm_client.dialects.chatglm3_parser import ChatGLM3Parser, parse_tool_call, python_literal, render_tool_call
from glm_client.events import Event, TextDelta, ToolCallStart
from glm_client.messages import INTERPRETER, ToolCall

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather of a city",
        "parameters": {"type": "object", "properties": {"city_name": {"type": "string"}}},
    },
}
TOOLS = [WEATHER_TOOL]
FENCE = "```"


def call_reply(body: str, name: str = "get_weather") -> str:
    """A call segment as the dialect decodes it: the content keeps its dummy-prefix space."""
    return f"{name}\n {FENCE}python\n{body}\n{FENCE}"


def parse(text: str, chunk: int | None = None) -> list[Event]:
    parser = ChatGLM3Parser(TOOLS)
    chunks = [text] if chunk is None else [text[i : i + chunk] for i in range(0, len(text), chunk)]
    events = [event for piece in chunks for event in parser.feed(piece)]
    return events + parser.finish()


def normalized(events: list[Event]) -> list[Any]:
    """Events with adjacent text merged and call ids left out (they are random)."""
    out: list[Any] = []
    for event in events:
        if isinstance(event, TextDelta):
            if out and isinstance(out[-1], TextDelta):
                out[-1] = TextDelta(out[-1].text + event.text)
            elif event.text:
                out.append(TextDelta(event.text))
        elif isinstance(event, ToolCall):
            out.append(("call", event.name, event.arguments, event.raw, event.parse_error))
        else:
            out.append(event)
    return out


def only_call(events: list[Event]) -> ToolCall:
    calls = [event for event in events if isinstance(event, ToolCall)]
    assert len(calls) == 1, events
    return calls[0]


# --- plain text -------------------------------------------------------------------------
def test_plain_answer_is_text_without_the_metadata_line_and_dummy_space():
    assert normalized(parse("\n Hello, world.")) == [TextDelta("Hello, world.")]


def test_plain_text_streams_as_it_arrives():
    parser = ChatGLM3Parser(TOOLS)
    assert parser.feed("\n Hel") == [TextDelta("Hel")]
    assert parser.feed("lo") == [TextDelta("lo")]
    assert parser.finish() == []


def test_only_a_possible_separator_is_held_back():
    parser = ChatGLM3Parser(TOOLS)
    assert normalized(parser.feed("\n Hi <|assis")) == [TextDelta("Hi ")]
    assert normalized(parser.feed("tance")) == [TextDelta("<|assistance")]


def test_reply_without_a_metadata_line_is_still_text():
    assert normalized(parse("Sure, here it is.\nSecond line.")) == [TextDelta("Sure, here it is.\nSecond line.")]
    assert normalized(parse("Hello")) == [TextDelta("Hello")]


def test_text_keeps_inner_whitespace_exactly():
    assert normalized(parse("\n   indented\n\n  x  ")) == [TextDelta("  indented\n\n  x  ")]


# --- tool calls -------------------------------------------------------------------------
def test_single_tool_call():
    text = call_reply('tool_call(city_name="Beijing")')
    events = parse(text)
    assert events[0] == ToolCallStart("get_weather")
    call = only_call(events)
    assert (call.name, call.arguments, call.parse_error) == ("get_weather", {"city_name": "Beijing"}, None)
    assert call.raw == f'get_weather\n{FENCE}python\ntool_call(city_name="Beijing")\n{FENCE}'
    assert not [event for event in events if isinstance(event, TextDelta)]


def test_tool_call_start_comes_as_soon_as_the_metadata_line_is_complete():
    parser = ChatGLM3Parser(TOOLS)
    assert parser.feed("get_wea") == []
    assert parser.feed("ther\n ") == [ToolCallStart("get_weather")]
    assert parser.feed(f"{FENCE}python\ntool_call(city_name='x')\n{FENCE}") == []
    assert only_call(parser.finish()).arguments == {"city_name": "x"}


def test_prose_then_call_in_one_reply():
    text = "\n Let me check the weather.<|assistant|>" + call_reply('tool_call(city_name="Beijing")')
    events = parse(text)
    assert normalized(events) == [
        TextDelta("Let me check the weather."),
        ToolCallStart("get_weather"),
        (
            "call",
            "get_weather",
            {"city_name": "Beijing"},
            f'get_weather\n{FENCE}python\ntool_call(city_name="Beijing")\n{FENCE}',
            None,
        ),
    ]


def test_call_ends_at_the_next_segment():
    parser = ChatGLM3Parser(TOOLS)
    events = parser.feed(call_reply("tool_call(city_name='a')") + "<|assistant|>")
    assert only_call(events).arguments == {"city_name": "a"}


def test_unicode_and_nested_arguments():
    body = 'tool_call(city_name="北京", days=3, ratio=-0.5, ok=True, none=None, tags=["雨", "风"], where={"lat": 39.9, "deep": {"list": [1, [2, {"x": "y"}]]}})'
    call = only_call(parse(call_reply(body)))
    assert call.parse_error is None
    assert call.arguments == {
        "city_name": "北京",
        "days": 3,
        "ratio": -0.5,
        "ok": True,
        "none": None,
        "tags": ["雨", "风"],
        "where": {"lat": 39.9, "deep": {"list": [1, [2, {"x": "y"}]]}},
    }


def test_single_quotes_tuples_no_arguments_and_keyword_names():
    assert parse_tool_call("tool_call(a='x', b=(1, 2))") == {"a": "x", "b": [1, 2]}
    assert parse_tool_call("tool_call()") == {}
    assert parse_tool_call("tool_call(a=1, **{'from': 'x', 'my-key': 2})") == {"a": 1, "from": "x", "my-key": 2}


def test_tool_not_offered_is_still_a_call():
    call = only_call(parse(call_reply("tool_call(q=1)", name="search_web")))
    assert (call.name, call.arguments) == ("search_web", {"q": 1})


# --- interpreter --------------------------------------------------------------------------
def test_interpreter_call_carries_the_code():
    code = "import math\nprint(math.pi)\n\nprint('```')"
    events = parse(call_reply(code, name="interpreter"))
    assert events[0] == ToolCallStart(INTERPRETER)
    call = only_call(events)
    assert call.is_interpreter and call.parse_error is None
    assert call.code == code


def test_interpreter_after_prose():
    text = "\n 我们从加载文件开始：<|assistant|>interpreter\n ```python\nprint(1)\n```"
    assert normalized(parse(text))[0] == TextDelta("我们从加载文件开始：")
    assert only_call(parse(text)).arguments == {"code": "print(1)"}


# --- malformed calls ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "phrase"),
    [
        ('tool_call("Beijing")', "positional"),
        ("tool_call(city_name=get_city())", "must be a literal"),
        ("tool_call(city_name=city)", "must be a literal"),
        ("tool_call(city_name='Beijing'", "not valid Python"),
        ("tool_call(**options)", "must be a literal"),
        ("tool_call(**[1])", "only a literal dict"),
        ("import os", "not valid Python"),
        ("os.system('ls')", "exactly one call"),
        ("tool_call(tags={1, 2})", "must be a literal"),
    ],
)
def test_malformed_calls_become_parse_errors(body, phrase):
    call = only_call(parse(call_reply(body)))
    assert call.name == "get_weather"
    assert call.arguments == {}
    assert phrase in call.parse_error
    assert call.raw == f"get_weather\n{FENCE}python\n{body}\n{FENCE}"


def test_missing_block_is_a_parse_error():
    call = only_call(parse("get_weather\n tool_call(city_name='x')"))
    assert "no ```python block" in call.parse_error
    assert "the code" in only_call(parse("interpreter\n print(1)")).parse_error


def test_bare_tool_name_at_the_end_is_a_parse_error():
    events = parse("get_weather")
    assert events[0] == ToolCallStart("get_weather")
    assert "stopped after the tool name" in only_call(events).parse_error


def test_unfinished_call_at_finish_is_a_parse_error():
    call = only_call(parse("get_weather\n ```python\ntool_call(city_name="))
    assert call.parse_error is not None


def test_the_call_is_never_evaluated(tmp_path):
    marker = tmp_path / "ran"
    body = f"tool_call(x=open({str(marker)!r}, 'w').write('x'))"
    call = only_call(parse(call_reply(body)))
    assert call.parse_error is not None
    assert not marker.exists()


# --- rendering round trip ----------------------------------------------------------------------
def test_render_writes_calls_as_the_model_does():
    assert (
        render_tool_call({"city_name": "北京", "n": 2, "ok": False, "x": None})
        == 'tool_call(city_name="北京", n=2, ok=False, x=None)'
    )
    assert render_tool_call({"from": "a", "to": "b"}) == 'tool_call(to="b", **{"from": "a"})'


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=4))
def test_rendered_calls_parse_back(arguments):
    assert parse_tool_call(render_tool_call(arguments)) == arguments
    for value in arguments.values():
        assert isinstance(python_literal(value), str)


# --- streaming -------------------------------------------------------------------------------
STREAM_CASES = [
    "\n Hello, world.",
    "\n Let me check.<|assistant|>" + call_reply('tool_call(city_name="上海", opts={"a": [1, 2]})'),
    call_reply("import os\nprint(os.getcwd())", name="interpreter"),
    call_reply('tool_call("bad")'),
    "Sure thing\nno metadata here <|assist",
    "\n A<|assistant|>\n B<|assistant|>get_weather",
]


@pytest.mark.parametrize("text", STREAM_CASES)
def test_one_character_chunks_give_the_same_events(text):
    assert normalized(parse(text, chunk=1)) == normalized(parse(text))


reply_alphabet = st.sampled_from(
    [
        "<|assistant|>",
        "<|assis",
        "\n",
        " ",
        "```",
        "```python\n",
        "tool_call(",
        "city_name=",
        '"北京"',
        ")",
        "interpreter",
        "get_weather",
        "a",
        "(",
        "=",
        "[",
        "{",
        "'",
        "**",
    ]
)
reply_texts = st.lists(reply_alphabet, max_size=30).map("".join) | st.text(max_size=200)


@settings(max_examples=300, deadline=None)
@given(reply_texts, st.integers(min_value=1, max_value=7))
def test_parser_never_raises_and_chunking_does_not_matter(text, chunk):
    whole = parse(text)
    assert normalized(parse(text, chunk=chunk)) == normalized(whole)
    for event in whole:
        assert isinstance(event, TextDelta | ToolCallStart | ToolCall)
