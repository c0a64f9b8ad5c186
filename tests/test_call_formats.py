"""Call formats of chat-template models: hermes, GLM-4.5+ (<arg_key>/<arg_value>) and GLM-4 (NAME\\n{json}).

The templates here are written for these tests from the formats' public descriptions;
each renders tool calls itself, as the real ones do.
"""

from __future__ import annotations

import random
from typing import Any

import jsonschema
import pytest
import xgrammar as xgr
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from glm_client.config import ConfigError, Settings
from glm_client.constrained import call_grammar, tokenizer_info
from glm_client.dialects.call_formats import detect_call_format, render_call
from glm_client.dialects.chat_template import ChatTemplateDialect
from glm_client.dialects.glm4_calls import Glm4CallParser
from glm_client.dialects.glm45_calls import Glm45CallParser
from glm_client.events import Event, TextDelta, ToolCallStart
from glm_client.messages import Message, ToolCall

_HEAD = (
    "[gMASK]<sop>{% if tools %}<|system|>\n# Tools\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}{% endif %}"
    "{% for m in messages %}{% if m.role == 'user' %}<|user|>\n{{ m.content }}"
    "{% elif m.role == 'tool' %}<|observation|>\n{{ m.content }}"
    "{% elif m.role == 'assistant' %}<|assistant|>"
)
_TAIL = "{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
TEMPLATES = {
    "glm45": _HEAD + "\n{{ m.content }}{% for tc in m.tool_calls or [] %}<tool_call>{{ tc.function.name }}\n"
    "{% for k, v in tc.function.arguments.items() %}<arg_key>{{ k }}</arg_key>\n"
    "<arg_value>{{ v if v is string else v | tojson }}</arg_value>\n{% endfor %}</tool_call>{% endfor %}" + _TAIL,
    "glm4": _HEAD + "{% if m.tool_calls %}{% for tc in m.tool_calls %}{{ tc.function.name }}\n"
    "{{ tc.function.arguments | tojson }}{% endfor %}{% else %}\n{{ m.content }}{% endif %}" + _TAIL,
    "hermes": _HEAD + "\n{{ m.content }}{% for tc in m.tool_calls or [] %}<tool_call>\n"
    '{{ {"name": tc.function.name, "arguments": tc.function.arguments} | tojson }}\n</tool_call>{% endfor %}' + _TAIL,
}
GLM45_TAGS = ["<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>"]


def tokenizer_with(template: str, special_tags: bool = True) -> PreTrainedTokenizerFast:
    """Byte-level, one token per byte; GLM's role tokens and (as in GLM-4.5) the call tags as special tokens."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={char: index for index, char in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend)
    roles = ["<|user|>", "<|assistant|>", "<|observation|>", "<|system|>", "[gMASK]", "<sop>"]
    tokenizer.add_special_tokens(
        {"eos_token": "<|endoftext|>", "additional_special_tokens": roles + (GLM45_TAGS if special_tags else [])}
    )
    tokenizer.chat_template = template
    return tokenizer


def tool(name: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    parameters = {"type": "object", "properties": properties, "required": required}
    return {"type": "function", "function": {"name": name, "description": name, "parameters": parameters}}


BOOKING = tool(
    "book_room",
    {
        "room": {"type": "string"},  # "007" must stay a string
        "nights": {"type": "integer"},
        "guest": {"type": "object", "properties": {"name": {"type": "string"}, "vip": {"type": "boolean"}}},
        "extras": {"type": "array", "items": {"type": "string"}},
        "rate": {"type": "string", "enum": ["flex", "saver"]},
    },
    required=["room", "nights"],
)
WEATHER = tool("get_weather", {"city": {"type": "string"}}, required=["city"])
TOOLS = [BOOKING, WEATHER]
CALL_ARGUMENTS = {"room": "007", "nights": 3, "guest": {"name": "Zoë 张", "vip": True}, "extras": ["a b", "c"]}


@pytest.fixture(scope="module", params=list(TEMPLATES))
def fmt(request) -> str:
    return request.param


# --- choosing the format ----------------------------------------------------------------------
def test_the_format_is_read_off_the_template(fmt):
    assert detect_call_format(tokenizer_with(TEMPLATES[fmt])) == fmt
    assert ChatTemplateDialect(tokenizer_with(TEMPLATES[fmt])).call_format == fmt


def test_a_template_that_shows_no_calls_keeps_hermes_and_the_setting_overrides():
    silent = "{% for m in messages %}{{ m.content }}{% endfor %}{% if tools %}{{ tools | length }}{% endif %}"
    assert detect_call_format(tokenizer_with(silent)) == "hermes"
    assert ChatTemplateDialect(tokenizer_with(TEMPLATES["hermes"]), "glm4").call_format == "glm4"
    assert Settings.from_env({"TOOL_CALL_FORMAT": "GLM45"}).tool_call_format == "glm45"
    assert Settings.from_env({}).tool_call_format == "auto"
    with pytest.raises(ConfigError, match="TOOL_CALL_FORMAT"):
        Settings.from_env({"TOOL_CALL_FORMAT": "xml"})


# --- replay: build -> parse -> rebuild ----------------------------------------------------------
def test_build_parse_rebuild_gives_the_same_prompt(fmt):
    tokenizer = tokenizer_with(TEMPLATES[fmt])
    dialect = ChatTemplateDialect(tokenizer)
    call = ToolCall("book_room", dict(CALL_ARGUMENTS))

    def prompt(made: ToolCall) -> str:
        messages = [
            Message.user("Book 007"),
            Message.assistant("", tool_calls=[made]),
            Message.observation("booked", name="book_room", tool_call_id=made.id),
        ]
        return tokenizer.decode(dialect.encode(messages, TOOLS))

    built = prompt(call)
    reply = built.split("<|assistant|>")[1].split("<|observation|>")[0]  # what the model wrote for the call
    # the format's own spelling is the template's (hermes templates may add newlines inside the tags)
    assert render_call(dialect.call_format, call).replace("\n", "") in reply.replace("\n", "")
    reply_ids = tokenizer.encode(reply, add_special_tokens=False)
    parser = dialect.new_parser(TOOLS)
    events = parser.feed(dialect.decode(reply_ids)) + parser.finish()
    (parsed,) = [event for event in events if isinstance(event, ToolCall)]
    assert parsed.parse_error is None and parsed.arguments == CALL_ARGUMENTS
    assert prompt(parsed) == built


def test_special_tag_tokens_survive_decoding():
    tokenizer = tokenizer_with(TEMPLATES["glm45"])
    ids = tokenizer.encode("<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Oslo</arg_value>\n</tool_call>")
    assert "<arg_key>" not in tokenizer.decode(ids, skip_special_tokens=True)  # what a plain decode loses
    dialect = ChatTemplateDialect(tokenizer)
    assert dialect.decode(ids).startswith("<tool_call>get_weather\n<arg_key>city</arg_key>")
    assert dialect.decode([*ids, tokenizer.convert_tokens_to_ids("<|user|>")]).endswith("</tool_call>")
    assert tokenizer.convert_tokens_to_ids("<|observation|>") in dialect.stop_token_ids()


# --- parsers ------------------------------------------------------------------------------------
def run(parser, text: str, chunk: int | None = None) -> list[Event]:
    chunks = [text] if chunk is None else [text[i : i + chunk] for i in range(0, len(text), chunk)]
    return [event for piece in chunks for event in parser.feed(piece)] + parser.finish()


def normalized(events: list[Event]) -> list[Any]:
    out: list[Any] = []
    for event in events:
        if isinstance(event, TextDelta):
            if out and isinstance(out[-1], TextDelta):
                out[-1] = TextDelta(out[-1].text + event.text)
            elif event.text:
                out.append(event)
        elif isinstance(event, ToolCall):
            out.append(("call", event.name, event.arguments, event.raw, event.parse_error))
        else:
            out.append(event)
    return out


GLM45_CALL = (
    "<tool_call>book_room\n<arg_key>room</arg_key>\n<arg_value>007</arg_value>\n"
    '<arg_key>nights</arg_key>\n<arg_value>3</arg_value>\n<arg_key>guest</arg_key>\n<arg_value>{"vip": false}</arg_value>\n'
    "<arg_key>note</arg_key>\n<arg_value>line one\nline <two></arg_value>\n</tool_call>"
)


def test_glm45_values_are_typed_by_the_schema():
    events = run(Glm45CallParser(TOOLS), "Let me book.\n" + GLM45_CALL)
    assert events[0] == TextDelta("Let me book.") and events[1] == ToolCallStart("book_room")
    call = events[2]
    assert isinstance(call, ToolCall) and call.parse_error is None and call.raw == GLM45_CALL
    # string-typed stays a string, integer becomes 3, an unknown key keeps its raw text
    assert call.arguments == {"room": "007", "nights": 3, "guest": {"vip": False}, "note": "line one\nline <two>"}


def test_glm45_announces_the_call_as_soon_as_its_name_is_written():
    parser = Glm45CallParser(TOOLS)
    assert parser.feed("<tool_call>get_wea") == []
    assert parser.feed("ther\n<arg_") == [ToolCallStart("get_weather")]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Oslo", "cut off"),
        ("<tool_call>\n<arg_key>city</arg_key>\n<arg_value>Oslo</arg_value>\n</tool_call>", "no function name"),
        ("<tool_call>get_weather\n<arg_key>city</arg_key>\nOslo\n</tool_call>", "not all"),
    ],
)
def test_malformed_glm45_calls_become_parse_errors(text, problem):
    calls = [event for event in run(Glm45CallParser(TOOLS), text) if isinstance(event, ToolCall)]
    assert len(calls) == 1 and problem in (calls[0].parse_error or "")


def test_glm4_reads_the_name_line_and_the_json():
    events = run(Glm4CallParser(TOOLS), 'book_room\n{"room": "007", "nights": 2}')
    assert events[0] == ToolCallStart("book_room")
    assert isinstance(events[1], ToolCall) and events[1].arguments == {"room": "007", "nights": 2}
    assert run(Glm4CallParser(TOOLS), "book a room?\nSure.") == [TextDelta("book a room?\nSure.")]
    assert run(Glm4CallParser(TOOLS), "Hello") == [TextDelta("Hello")]
    (bad,) = [e for e in run(Glm4CallParser(TOOLS), "get_weather\n{city: ") if isinstance(e, ToolCall)]
    assert "not valid JSON" in (bad.parse_error or "")
    (bare,) = [e for e in run(Glm4CallParser(TOOLS), "get_weather") if isinstance(e, ToolCall)]
    assert "no arguments" in (bare.parse_error or "")


glm_alphabet = st.sampled_from(
    ["<tool_call>", "</tool_call>", "<tool_", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>", "\n", " ",
     "book_room", "get_weather", "room", "nights", "3", "007", '{"city": "x"}', "{", "<", "a", "北"]
)  # fmt: skip
glm_texts = st.lists(glm_alphabet, max_size=30).map("".join) | st.text(max_size=120)


@settings(max_examples=200, deadline=None)
@given(glm_texts, st.integers(min_value=1, max_value=5))
@example("book_room \n", 1)  # a name with a space after it was prose one character at a time
@example("<tool_call></tool_call>\n", 1)  # the newline after a call was prose when it came in a chunk of its own
def test_chunking_never_changes_what_the_parsers_read(text, chunk):
    for make in (Glm45CallParser, Glm4CallParser):
        whole = normalized(run(make(TOOLS), text))
        assert normalized(run(make(TOOLS), text, chunk=1)) == whole
        assert normalized(run(make(TOOLS), text, chunk=chunk)) == whole


# --- forced calls -------------------------------------------------------------------------------
def sample_call(tokenizer, dialect: ChatTemplateDialect, tools, rng: random.Random) -> list[Event]:
    """Random allowed tokens until the call's grammar ends, read back by the format's parser."""
    size = len(tokenizer)
    compiled = xgr.GrammarCompiler(tokenizer_info(tokenizer, size)).compile_grammar(
        call_grammar(tools, dialect.call_syntax())
    )
    matcher = xgr.GrammarMatcher(compiled, terminate_without_stop_token=True)
    bitmask = xgr.allocate_token_bitmask(1, size)
    ids: list[int] = []
    while not matcher.is_terminated():
        assert len(ids) < 4000
        matcher.fill_next_token_bitmask(bitmask)
        allowed = [i for i in range(size) if (int(bitmask[0, i // 32]) >> (i % 32)) & 1]
        ids.append(rng.choice(allowed))
        assert matcher.accept_token(ids[-1])
    parser = dialect.new_parser(tools)
    return parser.feed(dialect.decode(ids)) + parser.finish()


@pytest.mark.parametrize("forced", [[BOOKING], TOOLS], ids=["named", "any"])
def test_every_forced_call_parses_into_a_schema_valid_call(fmt, forced):
    tokenizer = tokenizer_with(TEMPLATES[fmt])
    dialect = ChatTemplateDialect(tokenizer)
    rng = random.Random(15)
    for _ in range(6):
        events = sample_call(tokenizer, dialect, forced, rng)
        calls = [event for event in events if isinstance(event, ToolCall)]
        assert len(calls) == 1 and calls[0].parse_error is None, events
        schema = next(t for t in forced if t["function"]["name"] == calls[0].name)
        jsonschema.validate(calls[0].arguments, schema["function"]["parameters"])


@pytest.mark.parametrize("chunk", [None, 1])
def test_in_the_code_interpreter_a_python_fence_runs_on_every_format(fmt, chunk):
    """Issue 14: models asked for code write a fence, whatever their native call syntax."""
    from glm_client.dialects.base import INTERPRETER_TOOL

    code = "print(sum(range(1, 101)))"
    reply = f"We add them up.\n\n```python\n{code}\n```"
    dialect = ChatTemplateDialect(tokenizer_with(TEMPLATES[fmt]))
    parser = dialect.new_parser([INTERPRETER_TOOL])
    parser.feed(reply + "\nIt prints 5050.")
    assert parser.ended  # the model must wait for the result: generation stops at the fence
    events = run(dialect.new_parser([INTERPRETER_TOOL]), reply, chunk)
    calls = [event for event in events if isinstance(event, ToolCall)]
    assert [(call.name, call.arguments, call.parse_error) for call in calls] == [("interpreter", {"code": code}, None)]
    assert "".join(event.text for event in events if isinstance(event, TextDelta)).strip() == "We add them up."
    # With ordinary tools only, the fence is prose.
    parser = dialect.new_parser(TOOLS)
    parser.feed(reply + "\nIt prints 5050.")
    assert not parser.ended
    events = run(dialect.new_parser(TOOLS), reply, chunk)
    assert not [event for event in events if isinstance(event, ToolCall)]
