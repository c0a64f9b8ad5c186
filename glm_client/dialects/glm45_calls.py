"""GLM-4.5+ tool calls: `<tool_call>NAME` then one `<arg_key>`/`<arg_value>` pair per argument.

    <tool_call>get_weather
    <arg_key>city</arg_key>
    <arg_value>Beijing</arg_value>
    <arg_key>days</arg_key>
    <arg_value>3</arg_value>
    </tool_call>

String values are written raw, others as JSON. So values are typed by the tool's
schema, as vLLM's GLM parser does: a string-typed parameter keeps "3" as the
string "3"; any other value is read as JSON (or a Python literal), and kept as the
written string when it is neither. Whitespace between the tags is not significant.
"""

from __future__ import annotations

import json
import re
from typing import Any

from glm_client.dialects import tolerant_json
from glm_client.dialects.base import ToolSchema, function_of
from glm_client.dialects.literal_grammar import LiteralGrammar, ebnf_literal, joined
from glm_client.events import Event, TextDelta, ToolCallStart
from glm_client.messages import INTERPRETER, ToolCall

OPEN, CLOSE = "<tool_call>", "</tool_call>"
KEY_OPEN, KEY_CLOSE, VALUE_OPEN, VALUE_CLOSE = "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>"
TAGS = (OPEN, CLOSE, KEY_OPEN, KEY_CLOSE, VALUE_OPEN, VALUE_CLOSE)
FORMAT_HINT = f"Write it as {OPEN}NAME\\n{KEY_OPEN}KEY{KEY_CLOSE}\\n{VALUE_OPEN}VALUE{VALUE_CLOSE}\\n{CLOSE}."
_PAIR = re.compile(
    re.escape(KEY_OPEN)
    + r"(.*?)"
    + re.escape(KEY_CLOSE)
    + r"\s*"
    + re.escape(VALUE_OPEN)
    + r"(.*?)"
    + re.escape(VALUE_CLOSE),
    re.DOTALL,
)
# Code may hold "<" but not "</": the start of </arg_value>.
_CODE = r'([^<] | "<" [^/])*'


class Glm45CallParser:
    """OutputParser for GLM-4.5+ calls; prose streams, only a possible `<tool_call>` start is held back."""

    ended = False  # a reply in this syntax ends with the model's stop token

    def __init__(self, tools: list[ToolSchema] | None = None) -> None:
        self._schemas = {str(function_of(t).get("name")): function_of(t).get("parameters") or {} for t in tools or []}
        self._pending = ""
        self._in_call = False
        self._announced = False
        self._held_space = ""  # prose whitespace before a call is dropped with it
        self._after_call = False  # and whitespace after one, however it is chunked

    def feed(self, text: str) -> list[Event]:
        self._pending += text
        events: list[Event] = []
        while True:
            if not self._in_call:
                start = self._pending.find(OPEN)
                if start < 0:
                    cut = len(self._pending) - _partial_tag_length(self._pending, OPEN)
                    events += self._prose(self._pending[:cut])
                    self._pending = self._pending[cut:]
                    return events
                events += self._prose(self._pending[:start])
                self._held_space, self._pending = "", self._pending[start + len(OPEN) :]
                self._in_call, self._announced = True, False
            end = self._pending.find(CLOSE)
            body = self._pending if end < 0 else self._pending[:end]
            if not self._announced and (name := _name_of(body, closed=end >= 0)) is not None:
                events.append(ToolCallStart(name))
                self._announced = True
            if end < 0:
                return events
            events += self._call(body, closed=True)
            self._pending = self._pending[end + len(CLOSE) :]
            self._in_call, self._after_call = False, True

    def finish(self) -> list[Event]:
        events = self._call(self._pending, closed=False) if self._in_call else self._prose(self._pending)
        if not self._in_call and self._held_space:
            events.append(TextDelta(self._held_space))
        self._pending, self._held_space, self._in_call, self._after_call = "", "", False, False
        return events

    def _prose(self, text: str) -> list[Event]:
        if self._after_call:
            text = text.lstrip()
            self._after_call = not text
        text = self._held_space + text
        body = text.rstrip()
        self._held_space = text[len(body) :]
        return [TextDelta(body)] if body else []

    def _call(self, body: str, closed: bool) -> list[Event]:
        call = parse_glm45_call(body, self._schemas, closed=closed)
        start: list[Event] = [] if self._announced or not call.name else [ToolCallStart(call.name)]
        self._announced = True
        return [*start, call]


def parse_glm45_call(body: str, schemas: dict[str, Any], closed: bool = True) -> ToolCall:
    """The call written between `<tool_call>` and `</tool_call>`; a parse_error call when malformed."""
    raw = OPEN + body + (CLOSE if closed else "")
    name = (_name_of(body, closed=True) or "").strip()
    if not name:
        return ToolCall("", raw=raw, parse_error=f"The tool call has no function name. {FORMAT_HINT}")
    if not closed:
        return ToolCall(name, raw=raw, parse_error=f"The call to {name} was cut off before {CLOSE}. {FORMAT_HINT}")
    arguments_text = body[body.find(KEY_OPEN) :] if KEY_OPEN in body else ""
    pairs = _PAIR.findall(arguments_text)
    leftover = _PAIR.sub("", arguments_text).strip()
    if leftover:
        problem = f"The arguments of the call to {name} are not all {KEY_OPEN}/{VALUE_OPEN} pairs"
        return ToolCall(name, raw=raw, parse_error=f"{problem} (near {leftover[:40]!r}). {FORMAT_HINT}")
    properties = (schemas.get(name) or {}).get("properties") or {}
    arguments = {key.strip(): typed_value(value, properties.get(key.strip())) for key, value in pairs}
    return ToolCall(name, arguments, raw=raw)


def typed_value(text: str, schema: Any) -> Any:
    """A written value as the schema types it: raw for strings, else JSON (or a Python literal), else the text."""
    if _is_string_schema(schema):
        return text
    try:
        return tolerant_json.load(text.strip())
    except ValueError:
        return text


def render_glm45_call(call: ToolCall) -> str:
    """The call as GLM-4.5 writes it (strings raw, other values as JSON)."""
    pairs = "".join(
        f"{KEY_OPEN}{key}{KEY_CLOSE}\n{VALUE_OPEN}"
        f"{value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)}{VALUE_CLOSE}\n"
        for key, value in call.arguments.items()
    )
    return f"{OPEN}{call.name}\n{pairs}{CLOSE}"


def glm45_call_ebnf(tools: list[dict[str, Any]]) -> str:
    """EBNF of one call to any of `tools` ({name, parameters}); strings raw and bounded, others JSON."""
    grammar = LiteralGrammar("json")
    options = []
    for tool in tools:
        parameters = tool["parameters"]
        grammar.definitions = {**parameters.get("$defs", {}), **parameters.get("definitions", {})}
        required = set(parameters.get("required") or [])
        members = []
        for key, schema in (parameters.get("properties") or {}).items():
            if tool["name"] == INTERPRETER and key == "code":
                value = grammar.rule(_CODE)
            elif _is_string_schema(schema):
                value = _raw_string(grammar, schema, key in required)
            else:
                value = grammar.value(schema, key in required)
            tags = ebnf_literal(f"{KEY_OPEN}{key}{KEY_CLOSE}\n{VALUE_OPEN}")
            members.append((f"{tags} {value} {ebnf_literal(VALUE_CLOSE + chr(10))}", key in required))
        pairs = joined(members)
        options.append(f"{ebnf_literal(OPEN + tool['name'] + chr(10))} {pairs} {ebnf_literal(CLOSE)}")
    return grammar.text(" | ".join(f"({option})" for option in options))


def _raw_string(grammar: LiteralGrammar, schema: dict[str, Any], required: bool) -> str:
    if "enum" in schema or "const" in schema:
        values = schema["enum"] if "enum" in schema else [schema["const"]]
        return "(" + " | ".join(ebnf_literal(value) for value in values) + ")"
    return grammar.string(schema, required, raw=True)


def _is_string_schema(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    if schema.get("type") == "string":
        return True
    values: list[Any] = schema["enum"] if "enum" in schema else [schema["const"]] if "const" in schema else []
    return bool(values) and all(isinstance(value, str) for value in values)


def _name_of(body: str, closed: bool) -> str | None:
    """The function name once it is complete: the text before the first newline or tag."""
    body = body.lstrip()
    ends = [i for i in (body.find("\n"), body.find("<")) if i >= 0]
    if not ends:
        return body.strip() if closed and body.strip() else None
    name = body[: min(ends)].strip()
    return name or (None if not closed else "")


def _partial_tag_length(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper beginning of `tag`."""
    for size in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0
