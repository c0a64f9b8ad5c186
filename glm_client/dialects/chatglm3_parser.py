"""Reading what ChatGLM3 writes: reply segments, metadata lines and `tool_call(...)` blocks.

A reply is one or more segments separated by `<|assistant|>`; each segment is
`{metadata}\\n{content}`. Empty metadata is prose, `interpreter` is code to run,
any other metadata names a tool whose arguments are a fenced
`tool_call(name=value, ...)` block. The block is parsed with `ast`, never
evaluated, and only literal values are accepted.
"""

from __future__ import annotations

import ast
import json
import re
import unicodedata
from keyword import iskeyword
from typing import Any, Literal

from glm_client.dialects.base import ToolSchema, function_of
from glm_client.events import Event, TextDelta, ToolCallStart
from glm_client.messages import INTERPRETER, ToolCall

SEGMENT_SEPARATOR = "<|assistant|>"

# What a metadata line may hold: a tool name (at most 64 characters, like OpenAI's
# limit) or nothing. Every prefix of a match is a match, so a streamed line can be
# judged before its newline arrives, and prose is not held back for long.
_METADATA_LINE = re.compile(r"\s*[\w.-]{0,64}\s*")
# From the first fence to the last one, so code that itself prints ``` survives.
_FENCED_BLOCK = re.compile(r"```[^\n]*\n(.*)```", re.DOTALL)


class ChatGLM3Parser:
    """Incremental parser of one ChatGLM3 reply (see the module docstring).

    Prose streams as it arrives; only text that could be the start of
    `<|assistant|>` is held back. A call is announced with `ToolCallStart` as soon
    as its metadata line is complete and emitted as a `ToolCall` when its segment
    ends. A line that cannot be metadata makes the whole segment prose, so a reply
    that skips the metadata line is shown rather than lost.
    """

    ended = False  # a reply in this syntax ends with the model's stop token

    def __init__(self, tools: list[ToolSchema] | None = None) -> None:
        self._known_names = {function_of(tool).get("name") for tool in tools or []} | {INTERPRETER}
        self._pending = ""  # may be the beginning of a separator
        self._start_segment()

    def feed(self, text: str) -> list[Event]:
        self._pending += text
        events: list[Event] = []
        while (index := self._pending.find(SEGMENT_SEPARATOR)) != -1:
            events += self._segment_text(self._pending[:index])
            events += self._end_segment()
            self._pending = self._pending[index + len(SEGMENT_SEPARATOR) :]
        safe = len(self._pending) - _partial_separator_length(self._pending)
        events += self._segment_text(self._pending[:safe])
        self._pending = self._pending[safe:]
        return events

    def finish(self) -> list[Event]:
        events = self._segment_text(self._pending)
        self._pending = ""
        return events + self._end_segment()

    # --- one segment --------------------------------------------------------------
    def _start_segment(self) -> None:
        self._kind: Literal["head", "prose", "call"] = "head"
        self._head = ""  # the metadata line, until its newline arrives
        self._metadata = ""
        self._body = ""
        self._content_started = False

    def _segment_text(self, text: str) -> list[Event]:
        if self._kind == "head":
            return self._read_head(text)
        content = self._content(text)
        if self._kind == "call":
            self._body += content
            return []
        return [TextDelta(content)] if content else []

    def _read_head(self, text: str) -> list[Event]:
        self._head += text
        line, newline, rest = self._head.partition("\n")
        if not _METADATA_LINE.fullmatch(line):
            self._kind, self._content_started = "prose", True
            return [TextDelta(self._head)]
        if not newline:
            return []
        self._metadata = line
        if not line.strip():
            self._kind = "prose"
            return self._segment_text(rest)
        self._kind = "call"
        return [ToolCallStart(line.strip()), *self._segment_text(rest)]

    def _content(self, text: str) -> str:
        """Content text without the space SentencePiece decodes from the content's dummy prefix."""
        if self._content_started or not text:
            return text
        self._content_started = True
        return text.removeprefix(" ")

    def _end_segment(self) -> list[Event]:
        events: list[Event] = []
        if self._kind == "call":
            name = self._metadata.strip()
            events = [parse_call(name, self._body, raw=f"{self._metadata}\n{self._body}")]
        elif self._kind == "head" and self._head.strip():
            events = self._unterminated_head()
        self._start_segment()
        return events

    def _unterminated_head(self) -> list[Event]:
        """A segment that ended inside its first line: a bare tool name, or a short reply."""
        name = self._head.strip()
        if name not in self._known_names:
            return [TextDelta(self._head)]
        error = f"The call to {name} stopped after the tool name, before its ```python block."
        return [ToolCallStart(name), ToolCall(name, raw=f"{self._head}\n", parse_error=error)]


def _partial_separator_length(text: str) -> int:
    """Length of the longest end of `text` that is a proper beginning of the separator."""
    for size in range(min(len(text), len(SEGMENT_SEPARATOR) - 1), 0, -1):
        if SEGMENT_SEPARATOR.startswith(text[-size:]):
            return size
    return 0


# --- calls ---------------------------------------------------------------------------
def parse_call(name: str, content: str, raw: str) -> ToolCall:
    """The ToolCall of one segment; anything unreadable becomes a `parse_error`."""
    match = _FENCED_BLOCK.search(content)
    if match is None:
        wanted = "the code" if name == INTERPRETER else "tool_call(name=value, ...)"
        error = f"The call to {name} has no ```python block; put {wanted} inside one."
        return ToolCall(name, raw=raw, parse_error=error)
    block = match.group(1).removesuffix("\n")
    if name == INTERPRETER:
        return ToolCall(name, {"code": block}, raw=raw)
    try:
        return ToolCall(name, parse_tool_call(block), raw=raw)
    except ValueError as error:
        return ToolCall(name, raw=raw, parse_error=f"The call to {name} could not be read: {error}")


def parse_tool_call(source: str) -> dict[str, Any]:
    """Keyword arguments of `tool_call(name=literal, ...)`; ValueError with a sentence otherwise."""
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        detail = error.msg if isinstance(error, SyntaxError) else type(error).__name__
        raise ValueError(f"it is not valid Python ({detail}).") from None
    call = tree.body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise ValueError("write exactly one call, tool_call(name=value, ...).")
    if call.args:
        raise ValueError(
            "every argument needs a name, as in tool_call(city_name='Beijing'); positional arguments are not allowed."
        )
    arguments: dict[str, Any] = {}
    for argument in call.keywords:
        value = _literal_argument(argument, source)
        if argument.arg is not None:
            arguments[argument.arg] = value
        elif isinstance(value, dict):  # **{"from": ...}: names that are not identifiers
            arguments.update(value)
        else:
            raise ValueError("only a literal dict may follow **.")
    return arguments


def _literal_argument(argument: ast.keyword, source: str) -> Any:
    try:
        return _json_value(ast.literal_eval(argument.value))
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        written = (ast.get_source_segment(source.strip(), argument.value) or "")[:80]
        name = argument.arg or "**"
        raise ValueError(
            f"the value of {name} must be a literal (a string, number, True, False, None, list or dict), not {written}."
        ) from None


def _json_value(value: Any) -> Any:
    """The literal as JSON-compatible data (tuples become lists); ValueError for sets, bytes, complex."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: _json_value(item) for key, item in value.items()}
    raise ValueError(f"{type(value).__name__} is not a JSON value")


def render_tool_call(arguments: dict[str, Any]) -> str:
    """`tool_call(key=literal, ...)` as the model writes it (double-quoted strings); parse_tool_call reads it back."""
    named = [f"{key}={python_literal(value)}" for key, value in arguments.items() if is_keyword_name(key)]
    others = {key: value for key, value in arguments.items() if not is_keyword_name(key)}
    return "tool_call(" + ", ".join(named + ([f"**{python_literal(others)}"] if others else [])) + ")"


def is_keyword_name(key: str) -> bool:
    # Python NFKC-normalises identifiers ("ﬀ" reads back as "ff"), so those keys go through **{...}.
    return key.isidentifier() and not iskeyword(key) and unicodedata.normalize("NFKC", key) == key


def python_literal(value: Any) -> str:
    """A Python literal for JSON-like data: JSON syntax, except True/False/None."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(python_literal(item) for item in value) + "]"
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{python_literal(str(key))}: {python_literal(item)}" for key, item in value.items()) + "}"
        )
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is also a valid Python string literal
    return repr(value)
