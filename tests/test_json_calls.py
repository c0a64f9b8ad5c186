"""JsonCallParser and the prompt helpers for chat-template models (no model needed)."""

from __future__ import annotations

import itertools
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glm_client.dialects.base import INTERPRETER_TOOL
from glm_client.dialects.json_calls import (
    JsonCallParser,
    parse_bare_calls,
    parse_call_block,
    render_call_for_history,
    render_observation_for_history,
    template_supports_tools,
    tools_system_prompt,
)
from glm_client.events import Event, TextDelta, ToolCallStart
from glm_client.messages import INTERPRETER, Message, ToolCall

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TOOLS = [WEATHER]
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


# --- helpers ------------------------------------------------------------------------------
def run(text: str | list[str], tools: list | None = TOOLS, interpreter: bool = False) -> list[Event]:
    """All events of one reply, fed as one string or as the given chunks."""
    parser = JsonCallParser(tools, interpreter=interpreter)
    events: list[Event] = []
    for chunk in [text] if isinstance(text, str) else text:
        events += parser.feed(chunk)
    return events + parser.finish()


def normalized(events: list[Event]) -> list[tuple]:
    """Events comparable across chunkings: adjacent text merged, random call ids left out."""
    out: list[tuple] = []
    for event in events:
        if isinstance(event, TextDelta):
            if out and out[-1][0] == "text":
                out[-1] = ("text", out[-1][1] + event.text)
            else:
                out.append(("text", event.text))
        elif isinstance(event, ToolCall):
            out.append(("call", event.name, event.arguments, event.raw, event.parse_error))
        else:
            out.append((type(event).__name__, getattr(event, "name", None)))
    return out


def text_of(events: list[Event]) -> str:
    return "".join(event.text for event in events if isinstance(event, TextDelta))


def calls_of(events: list[Event]) -> list[ToolCall]:
    return [event for event in events if isinstance(event, ToolCall)]


def starts_of(events: list[Event]) -> list[str]:
    return [event.name for event in events if isinstance(event, ToolCallStart)]


# --- <tool_call> blocks -------------------------------------------------------------------
def test_single_tagged_call() -> None:
    events = run(CALL)
    assert normalized(events) == [
        ("ToolCallStart", "get_weather"),
        ("call", "get_weather", {"city": "Paris"}, CALL, None),
    ]


def test_prose_then_several_calls() -> None:
    second = '<tool_call>{"name": "get_time", "arguments": {"zone": "CET"}}</tool_call>'
    events = run(f"Let me check both.\n{CALL}\n{second}\n")
    assert text_of(events) == "Let me check both."
    assert [(call.name, call.arguments, call.raw) for call in calls_of(events)] == [
        ("get_weather", {"city": "Paris"}, CALL),
        ("get_time", {"zone": "CET"}, second),
    ]
    assert starts_of(events) == ["get_weather", "get_time"]


def test_prose_between_calls_keeps_its_order_and_spacing() -> None:
    events = run(f"First {CALL} then {CALL} done.")
    assert text_of(events) == "First then done."
    kinds = [type(event).__name__ for event in events if not isinstance(event, ToolCallStart)]
    assert kinds == ["TextDelta", "ToolCall", "TextDelta", "ToolCall", "TextDelta"]


def test_prose_streams_before_the_call_is_complete() -> None:
    parser = JsonCallParser(TOOLS)
    assert normalized(parser.feed("Let me look that up. <tool")) == [("text", "Let me look that up.")]
    assert parser.feed('_call>{"name": "get_wea') == []
    assert normalized(parser.feed('ther", "arguments": {')) == [("ToolCallStart", "get_weather")]
    assert parser.feed('"city": "Oslo"}}') == []
    events = parser.feed("</tool_call>") + parser.finish()
    assert [(call.name, call.arguments) for call in calls_of(events)] == [("get_weather", {"city": "Oslo"})]
    assert starts_of(events) == []  # announced once, earlier


def test_partial_tag_that_is_not_a_tag_is_released_as_text() -> None:
    parser = JsonCallParser(TOOLS)
    assert text_of(parser.feed("a <tool")) == "a"
    assert text_of(parser.feed("box> b")) == " <toolbox> b"


def test_list_of_calls_in_one_block() -> None:
    block = '<tool_call>[{"name": "get_weather", "arguments": {"city": "Rome"}}, {"name": "get_time", "arguments": {}}]</tool_call>'
    calls = calls_of(run(block))
    assert [(call.name, call.arguments) for call in calls] == [("get_weather", {"city": "Rome"}), ("get_time", {})]
    # The block is replayed once: with the first call.
    assert [call.raw for call in calls] == [block, ""]
    assert "".join(render_call_for_history(call) for call in calls) == block


def test_arguments_as_json_string_are_decoded() -> None:
    block = '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Lima\\"}"}</tool_call>'
    [call] = calls_of(run(block))
    assert (call.name, call.arguments, call.parse_error) == ("get_weather", {"city": "Lima"}, None)


def test_parameters_key_and_openai_function_wrapper() -> None:
    block = '<tool_call>{"type": "function", "function": {"name": "get_weather", "parameters": {"city": "Kyiv"}}}</tool_call>'
    [call] = calls_of(run(block))
    assert (call.name, call.arguments) == ("get_weather", {"city": "Kyiv"})


def test_call_without_arguments_gets_empty_arguments() -> None:
    [call] = calls_of(run('<tool_call>{"name": "get_time"}</tool_call>'))
    assert (call.name, call.arguments, call.parse_error) == ("get_time", {}, None)


def test_unknown_tool_is_still_a_call() -> None:
    [call] = calls_of(run('<tool_call>{"name": "launch_rocket", "arguments": {}}</tool_call>'))
    assert (call.name, call.parse_error) == ("launch_rocket", None)


# --- malformed calls ----------------------------------------------------------------------
def test_invalid_json_gives_a_parse_error_with_position_and_format() -> None:
    block = '<tool_call>{"name": "get_weather" "arguments": {}}</tool_call>'
    events = run(f"Checking. {block}")
    [call] = calls_of(events)
    assert call.name == "get_weather" and call.raw == block
    assert call.parse_error.startswith("The tool call is not valid JSON: Expecting ',' delimiter at line 1 column")
    assert call.parse_error.endswith('<tool_call>{"name": ..., "arguments": {...}}</tool_call>.')
    assert text_of(events) == "Checking."


def test_unclosed_tag_with_partial_json_is_a_parse_error() -> None:
    events = run('<tool_call>{"name": "get_weather", "arguments": {"ci')
    assert starts_of(events) == ["get_weather"]
    [call] = calls_of(events)
    assert call.name == "get_weather"
    assert call.parse_error.startswith(
        "The tool call was cut off before </tool_call>: Unterminated string starting at line"
    )
    assert call.raw == '<tool_call>{"name": "get_weather", "arguments": {"ci'


def test_unclosed_tag_around_complete_json_is_accepted() -> None:
    [call] = calls_of(run('<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'))
    assert (call.name, call.arguments, call.parse_error) == ("get_weather", {"city": "Oslo"}, None)


@pytest.mark.parametrize(
    ("block", "error_start", "name"),
    [
        ('{"arguments": {"city": "Oslo"}}', 'The tool call has no "name".', ""),
        ('{"name": "", "arguments": {}}', 'The tool call has no "name".', ""),
        (
            '{"name": "get_weather", "arguments": ["Oslo"]}',
            "The arguments of the call to 'get_weather' must be a JSON object, not a list.",
            "get_weather",
        ),
        (
            '{"name": "get_weather", "arguments": "{city: Oslo}"}',
            "The arguments of the call to 'get_weather' are not valid JSON:",
            "get_weather",
        ),
        ('"get_weather"', "A tool call must be a JSON object, not a string.", ""),
        ("  ", "The tool call is empty.", ""),
    ],
)
def test_malformed_calls_name_the_problem(block: str, error_start: str, name: str) -> None:
    events = run(f"<tool_call>{block}</tool_call>")
    [call] = calls_of(events)
    assert call.parse_error.startswith(error_start)
    assert call.name == name and call.raw == f"<tool_call>{block}</tool_call>"
    assert starts_of(events) == [name]


def test_empty_list_block_means_no_call() -> None:
    assert normalized(run("Nothing to call. <tool_call>[]</tool_call>")) == [("text", "Nothing to call.")]


def test_one_bad_item_in_a_list_does_not_spoil_the_others() -> None:
    calls = calls_of(run('<tool_call>[{"name": "get_time", "arguments": {}}, {"arguments": {}}]</tool_call>'))
    assert [(call.name, call.parse_error is None) for call in calls] == [("get_time", True), ("", False)]


# --- bare JSON replies --------------------------------------------------------------------
@pytest.mark.parametrize(
    "reply",
    [
        '{"name": "get_weather", "arguments": {"city": "Oslo"}}',
        '  {"name": "get_weather", "parameters": {"city": "Oslo"}}\n',
        '```json\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n```',
        '[{"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}]',
    ],
)
def test_bare_call_is_recognised(reply: str) -> None:
    events = run(list(reply))
    assert normalized(events) == [
        ("ToolCallStart", "get_weather"),
        ("call", "get_weather", {"city": "Oslo"}, reply.strip(), None),
    ]


def test_bare_list_gives_one_call_per_item() -> None:
    reply = '[{"name": "get_weather", "arguments": {"city": "A"}}, {"name": "get_weather", "arguments": {"city": "B"}}]'
    assert [call.arguments["city"] for call in calls_of(run(reply))] == ["A", "B"]


def test_bare_call_is_held_until_finish() -> None:
    parser = JsonCallParser(TOOLS)
    assert parser.feed('{"name": "get_weather", ') == []
    assert parser.feed('"arguments": {}}') == []
    assert [call.name for call in calls_of(parser.finish())] == ["get_weather"]


@pytest.mark.parametrize(
    "reply",
    [
        '{"answer": 42}',
        '{"name": "Ada", "age": 36}',  # JSON that answers, not a call: no arguments key
        '{"name": "get_weather", "arguments": {}} and then some prose',
        "[1] Paris is the capital of France.",
        '{"name": "get_weather", "arguments": {',
        "```json\n[1, 2]\n```",
    ],
)
def test_json_that_is_not_a_call_is_text(reply: str) -> None:
    assert normalized(run(list(reply))) == [("text", reply)]


def test_bare_json_without_tools_is_plain_text() -> None:
    reply = '{"name": "get_weather", "arguments": {}}'
    assert normalized(run(reply, tools=None)) == [("text", reply)]


def test_text_that_starts_like_json_can_still_hold_a_tagged_call() -> None:
    events = run(f"[note] checking\n{CALL}")
    assert text_of(events) == "[note] checking"
    assert [call.name for call in calls_of(events)] == ["get_weather"]


# --- interpreter mode ---------------------------------------------------------------------
def test_python_fence_becomes_an_interpreter_call_and_ends_the_reply() -> None:
    reply = "Let me compute it.\n```python\nx = 6 * 7\nprint(x)\n```\nThe answer is 42."
    events = run(reply, tools=None, interpreter=True)
    assert normalized(events) == [
        ("text", "Let me compute it."),
        ("ToolCallStart", INTERPRETER),
        ("call", INTERPRETER, {"code": "x = 6 * 7\nprint(x)"}, "\n```python\nx = 6 * 7\nprint(x)\n```", None),
    ]
    assert calls_of(events)[0].code == "x = 6 * 7\nprint(x)"


def test_the_reply_ends_when_its_python_fence_closes() -> None:
    parser = JsonCallParser(None, interpreter=True)
    ended = []
    for chunk in ["Let me compute it.\n```python\n", "print(6 * 7)\n", "``", "`", "\nThe output is 42."]:
        parser.feed(chunk)
        ended.append(parser.ended)
    assert ended == [False, False, False, True, True]


def test_a_tagged_call_does_not_end_the_reply() -> None:
    parser = JsonCallParser(TOOLS, interpreter=True)  # more calls, or words, may follow it
    parser.feed(f"{CALL}\n")
    assert not parser.ended


def test_generation_stops_where_the_python_fence_closes() -> None:
    """What a model writes after its code (often the output it imagines) was generated and then dropped:
    over two load runs (bench/bench_load.py) a third of the Code Interpreter's call tokens."""
    from tests.test_reasoning import PLAIN_TEMPLATE, local_client

    written = "Sure.\n```python\nprint(6 * 7)\n```"
    client, engine = local_client(PLAIN_TEMPLATE, written + "\nThe output is 42, as you can see above.")
    events = list(client.stream([Message.user("6 times 7?")], [INTERPRETER_TOOL], max_new_tokens=200))
    [call] = calls_of(events)
    done = events[-1]
    assert call.code == "print(6 * 7)" and done.finish_reason == "tool_calls"
    assert done.raw == written  # one token a byte: not one token more was asked of the engine
    assert done.usage.completion_tokens == len(engine.tokenizer.encode(written, add_special_tokens=False))


@pytest.mark.parametrize(
    "written",
    ["Sure.\n\n```python\nprint(6 * 7)\n```", "Sure.\n```python\nprint(6 * 7)\n```", "\n```python\nprint(6 * 7)\n```"],
    ids=["blank line", "newline", "no prose"],
)
def test_the_next_round_starts_with_the_reply_as_written(written) -> None:
    """So the prompt cache reuses the whole reply: when the whitespace before the fence was dropped, the
    next round prefilled the code again from there (about 140 tokens a Code Interpreter round)."""
    from glm_client.agent import run_turn
    from tests.test_reasoning import PLAIN_TEMPLATE, local_client

    client, engine = local_client(PLAIN_TEMPLATE, written)
    executor = lambda call: Message.observation("42", name=INTERPRETER, tool_call_id=call.id)  # noqa: E731
    list(run_turn(client, [Message.user("6 times 7?")], executor, [INTERPRETER_TOOL], max_rounds=1))
    first, second = engine.prompts[:2]
    reply = engine.tokenizer.encode(written, add_special_tokens=False)
    assert second[: len(first) + len(reply)] == first + reply


def test_interpreter_call_is_announced_when_the_fence_opens() -> None:
    parser = JsonCallParser(None, interpreter=True)
    assert text_of(parser.feed("Sure ``")) == "Sure"  # a possible fence is held back
    assert normalized(parser.feed("`py\nprint(")) == [("ToolCallStart", INTERPRETER)]
    assert parser.feed("1)\n") == []
    [call] = calls_of(parser.feed("```") + parser.finish())
    assert call.arguments == {"code": "print(1)"}


def test_unclosed_python_fence_is_run_as_written() -> None:
    [call] = calls_of(run("```python\nprint('hi')\n``", tools=None, interpreter=True))
    assert (call.code, call.parse_error) == ("print('hi')", None)


def test_other_fences_stay_text_in_interpreter_mode() -> None:
    reply = "Output:\n```text\n42\n```\nand `inline` code"
    assert normalized(run(list(reply), tools=None, interpreter=True)) == [("text", reply)]


def test_python_fence_is_text_outside_interpreter_mode() -> None:
    reply = "Example:\n```python\nprint(1)\n```"
    assert normalized(run(reply)) == [("text", reply)]


def test_tagged_call_to_python_means_the_interpreter_in_interpreter_mode() -> None:
    events = run(
        '<tool_call>{"name": "python", "arguments": {"code": "1+1"}}</tool_call>', tools=None, interpreter=True
    )
    assert starts_of(events) == [INTERPRETER]
    [call] = calls_of(events)
    assert (call.name, call.code) == (INTERPRETER, "1+1")


# --- plain text ---------------------------------------------------------------------------
def test_plain_text_without_tools_passes_through_exactly() -> None:
    parser = JsonCallParser(None)
    chunks = ["  Hello", " <tool_call>", '{"x": 1}', "</tool_call>", "\n```python\n", "  \n"]
    assert [event.text for chunk in chunks for event in parser.feed(chunk)] == chunks
    assert parser.finish() == []


def test_plain_text_with_tools_is_kept_exactly_including_whitespace() -> None:
    reply = "\n  The weather is fine <3 today. `<tool` is not a tag.  \n"
    assert text_of(run(list(reply))) == reply


def test_whitespace_around_a_final_call_is_dropped() -> None:
    events = run(f"Checking.  \n\n{CALL}\n\n")
    assert text_of(events) == "Checking."


# --- properties: any chunking, any text ---------------------------------------------------
FRAGMENTS = [
    "<tool_call>",
    "</tool_call>",
    "<tool",
    "_call>",
    '{"name": "get_weather", "arguments": {"city": "Oslo"}}',
    '{"name": "f"',
    '"arguments": "{\\"a\\": 1}"}',
    '"parameters": {}}',
    "[",
    "]",
    "{",
    "}",
    ", ",
    "```python\n",
    "```py",
    "```json\n",
    "```",
    "`",
    "<",
    " ",
    "\n",
    "hello",
    "print(1)",
]
replies = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=5), max_size=12).map("".join)
modes = st.sampled_from([(TOOLS, False), (None, True), (TOOLS, True), (None, False)])


@st.composite
def chunked(draw: st.DrawFn, texts: st.SearchStrategy[str]) -> tuple[str, list[str]]:
    text = draw(texts)
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=12)))
    bounds = [0, *cuts, len(text)]
    return text, [text[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=300, deadline=None)
@given(chunked(replies), modes)
def test_any_chunking_gives_the_same_events_as_one_feed(case: tuple[str, list[str]], mode: tuple) -> None:
    text, chunks = case
    tools, interpreter = mode
    whole = normalized(run(text, tools, interpreter))
    assert normalized(run(chunks, tools, interpreter)) == whole
    assert normalized(run(list(text), tools, interpreter)) == whole


@settings(max_examples=300, deadline=None)
@given(chunked(st.text(max_size=80) | replies), modes)
def test_parser_never_raises_and_events_are_well_formed(case: tuple[str, list[str]], mode: tuple) -> None:
    _, chunks = case
    events = run(chunks, *mode)
    assert all(isinstance(event, TextDelta | ToolCallStart | ToolCall) for event in events)
    assert all(event.text for event in events if isinstance(event, TextDelta))
    for call in calls_of(events):
        assert isinstance(call.arguments, dict) and (call.parse_error is None or call.parse_error.endswith("."))


prose = st.text(alphabet="ab .,!?\n\t", max_size=12)
valid_blocks = st.sampled_from(
    [
        CALL,
        '<tool_call>{"name": "f", "arguments": "{}"}</tool_call>',
        '<tool_call>[{"name": "g", "parameters": {}}]</tool_call>',
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_text_is_the_reply_without_its_call_blocks(data: st.DataObject) -> None:
    pieces = data.draw(st.lists(st.tuples(prose, valid_blocks), max_size=4))
    reply = "".join(text + block for text, block in pieces) + data.draw(prose)
    _, chunks = data.draw(chunked(st.just(reply)))
    events = run(chunks)
    expected = re.sub(r"<tool_call>.*?</tool_call>\s*", "", reply, flags=re.DOTALL)
    assert text_of(events).strip() == expected.strip()
    assert len(calls_of(events)) == len(pieces)
    assert all(call.parse_error is None for call in calls_of(events))


# --- prompt helpers -----------------------------------------------------------------------
def test_tools_system_prompt_describes_tools_and_format() -> None:
    prompt = tools_system_prompt(TOOLS, "You are terse.")
    assert prompt.startswith("You are terse.\n\n")
    assert json.dumps(WEATHER) in prompt
    assert '<tool_call>{"name": "<function name>", "arguments": {' in prompt
    assert "<tool_response>" in prompt
    assert not tools_system_prompt(TOOLS, None).startswith("\n")


def test_rendered_calls_parse_back_to_the_same_call() -> None:
    original = ToolCall("get_weather", {"city": "Zürich"})
    text = render_call_for_history(original)
    assert text == '<tool_call>{"name": "get_weather", "arguments": {"city": "Zürich"}}</tool_call>'
    [parsed] = calls_of(run(text))
    assert (parsed.name, parsed.arguments, parsed.raw) == (original.name, original.arguments, text)
    # A call the model wrote is replayed as written.
    assert render_call_for_history(parsed) == text
    assert render_call_for_history(ToolCall("f", {}, raw="<tool_call>\n{ odd spacing }\n</tool_call>")).startswith(
        "<tool_call>\n{ odd"
    )


def test_rendered_observation_names_the_tool_and_shows_images_as_placeholders() -> None:
    message = Message.observation("sunny, 21 C", name="get_weather", images=[b"png"])
    assert (
        render_observation_for_history(message)
        == '<tool_response name="get_weather">\nsunny, 21 C\n[Image]\n</tool_response>'
    )
    assert render_observation_for_history(Message.observation("ok")) == "<tool_response>\nok\n</tool_response>"


QWEN_LIKE = (
    "{%- if tools %}{{- '<|im_start|>system\\n# Tools' }}{%- for tool in tools %}{{ tool | tojson }}{%- endfor %}"
    "{%- endif %}{%- for message in messages %}{{ message.content }}{%- endfor %}"
)
SMOLLM2_LIKE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (QWEN_LIKE, True),
        ("{% set tools_prompt = 1 %}{{ messages }}{% if custom_tools is defined %}{% endif %}", False),
        ("{{ messages }}{%- if tools is not none %}x{% endif %}", True),
        (SMOLLM2_LIKE, False),
        ("You may use tools. {{ messages[0].content }}", False),  # prose, not a jinja variable
        ("", False),
        (None, False),
    ],
)
def test_template_supports_tools(template: str | None, expected: bool) -> None:
    assert template_supports_tools(template) is expected


class ToolTemplateTokenizer:
    """Just enough of a tokenizer whose chat template renders tools (Qwen2.5's layout)."""

    chat_template = "{% if tools %}{% for tool in tools %}{{ tool | tojson }}{% endfor %}{% endif %}"


def test_a_fenced_block_runs_as_code_on_a_template_with_tools() -> None:
    """Raw reply of a Qwen2.5-0.5B-Instruct GGUF in Code Interpreter mode (issue 14): prose and a
    correct fenced block, which never ran because fences counted only for templates without tools."""
    from glm_client.dialects.chat_template import ChatTemplateDialect

    dialect = ChatTemplateDialect(ToolTemplateTokenizer())
    assert dialect.native_tools
    code = (
        "def sieve_of_eratosthenes(limit):\n"
        "    is_prime = [True] * limit\n"
        "    is_prime[0] = is_prime[1] = False\n"
        "    for i in range(2, int(limit ** 0.5) + 1):\n"
        "        if is_prime[i]:\n"
        "            for j in range(i * i, limit, i):\n"
        "                is_prime[j] = False\n"
        "    return sum(is_prime)\n\n"
        "print(sieve_of_eratosthenes(1000))"
    )
    reply = (
        "To determine how many prime numbers are below 1000, we can use the Sieve of Eratosthenes algorithm.\n\n"
        f"```python\n{code}\n```"
    )
    parser = dialect.new_parser([INTERPRETER_TOOL])
    events = parser.feed(reply) + parser.finish()
    [call] = calls_of(events)
    assert call.is_interpreter and call.code == code and call.parse_error is None
    # Outside the Code Interpreter the same fence stays text.
    parser = dialect.new_parser(TOOLS)
    assert normalized(parser.feed(reply) + parser.finish()) == [("text", reply)]


# --- JSON as small models write it (issue 14's raw replies) -----------------------------------
NUMPY_CODE = "\nimport numpy as np\nprint(np.arange(1, 101).sum())\n"


def test_a_fenced_json_call_with_a_python_triple_quoted_string_runs():
    reply = f'```json\n{{"name": "interpreter", "arguments": {{"code": """{NUMPY_CODE}"""}}}}\n```'
    [call] = calls_of(run(reply, tools=[INTERPRETER_TOOL]))
    assert (call.name, call.arguments, call.parse_error) == (INTERPRETER, {"code": NUMPY_CODE}, None)


def test_several_bare_calls_one_per_line_are_all_parsed():
    reply = (
        '{"name": "sort_list", "arguments": {"code": "print(sorted([3, 1, 2]))"}}\n'
        '{"name": "interpreter", "arguments": {"code": "print(1 + 1)"}}'
    )
    calls = calls_of(run(reply, tools=[INTERPRETER_TOOL], interpreter=True))
    assert [(call.name, call.arguments["code"]) for call in calls] == [
        ("sort_list", "print(sorted([3, 1, 2]))"),
        (INTERPRETER, "print(1 + 1)"),
    ]
    assert not text_of(run(reply, tools=[INTERPRETER_TOOL], interpreter=True))


def test_a_made_up_result_after_an_echoed_call_is_not_shown_as_the_answer():
    reply = '{"name": "calculator", "arguments": {"expression": "6 * 7"}}\n{"response": "42.0"}'
    events = run(reply)
    assert [(call.name, call.arguments) for call in calls_of(events)] == [("calculator", {"expression": "6 * 7"})]
    assert text_of(events) == ""


@pytest.mark.parametrize(
    "block",
    [
        "{'name': 'get_weather', 'arguments': {'city': 'Paris'}}",  # single quotes
        '{"name": "get_weather", "arguments": {"city": "Paris",},}',  # trailing commas
        '{"name": "get_weather", // the tool\n "arguments": {"city": "Paris"}}',  # a comment
    ],
)
def test_tagged_calls_in_near_json_are_recovered(block):
    [call] = calls_of(run(f"<tool_call>{block}</tool_call>"))
    assert (call.name, call.arguments, call.parse_error) == ("get_weather", {"city": "Paris"}, None)


def test_python_and_json_literals_are_both_read():
    for literals in ('{"flag": True, "x": None}', '{"flag": true, "x": null}'):
        [call] = calls_of(run(f'<tool_call>{{"name": "get_weather", "arguments": {literals}}}</tool_call>'))
        assert call.arguments == {"flag": True, "x": None}


def test_what_cannot_be_recovered_stays_a_parse_error():
    [call] = calls_of(run('<tool_call>{"name": "get_weather", "arguments": {"city": Paris}}</tool_call>'))
    assert call.name == "get_weather" and call.parse_error.startswith("The tool call is not valid JSON: ")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_the_parser_never_raises_and_finds_no_call_without_a_name(text):
    events = run(text, tools=[WEATHER, INTERPRETER_TOOL])
    if "name" not in text and "\\u" not in text and "<tool_call>" not in text:  # no call shape
        assert calls_of(events) == [] and parse_bare_calls(text) is None
    parse_call_block(text, text)  # a malformed block is a parse-error call, never an exception


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda kids: st.lists(kids) | st.dictionaries(st.text(), kids),
    )
)
def test_json_values_that_are_not_calls_stay_text(value):
    text = json.dumps(value, ensure_ascii=False)
    if "name" not in text and "<tool_call>" not in text:  # a tag is a call's shape, even around nothing
        assert calls_of(run(text)) == [] and parse_bare_calls(text) is None
