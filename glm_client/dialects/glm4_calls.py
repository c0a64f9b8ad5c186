"""GLM-4 (9B-Chat, 0414) tool calls: the function name on the reply's first line, then JSON arguments.

    get_weather
    {"city": "Beijing"}

A first line is a call only when it names an offered tool, so a reply that starts
with a word is held back only while it could still become such a name. A call is
the whole rest of the reply (the model stops after it), read at the end.
"""

from __future__ import annotations

import json
from typing import Literal

from glm_client.dialects import tolerant_json
from glm_client.dialects.base import ToolSchema, function_of
from glm_client.events import Event, TextDelta, ToolCallStart
from glm_client.messages import ToolCall

FORMAT_HINT = 'Write the function name on the first line, then its arguments as a JSON object: NAME\\n{"key": value}.'


class Glm4CallParser:
    """OutputParser for `NAME\\n{json}` replies (see the module docstring)."""

    ended = False  # a reply in this syntax ends with the model's stop token

    def __init__(self, tools: list[ToolSchema] | None = None) -> None:
        self._names = {str(function_of(tool).get("name")) for tool in tools or []}
        self._mode: Literal["head", "prose", "call"] = "head" if self._names else "prose"
        self._head = ""
        self._name = ""
        self._body = ""

    def feed(self, text: str) -> list[Event]:
        if self._mode == "prose":
            return [TextDelta(text)] if text else []
        if self._mode == "call":
            self._body += text
            return []
        self._head += text
        line, newline, rest = self._head.partition("\n")
        if newline and line.strip() in self._names:
            self._mode, self._name, self._body = "call", line.strip(), rest
            return [ToolCallStart(self._name)]
        start = self._head.lstrip()
        # Still possibly a name line: a prefix of a name, or a whole name with spaces after it.
        if newline or not (start.rstrip() in self._names or any(name.startswith(start) for name in self._names)):
            self._mode = "prose"
            return [TextDelta(self._head)]
        return []

    def finish(self) -> list[Event]:
        if self._mode == "head":
            self._mode = "prose"
            if self._head.strip() in self._names:  # the name and nothing else
                name = self._head.strip()
                error = f"The call to {name} has no arguments after its name. {FORMAT_HINT}"
                return [ToolCallStart(name), ToolCall(name, raw=self._head, parse_error=error)]
            return [TextDelta(self._head)] if self._head else []
        if self._mode == "call":
            self._mode = "prose"
            return [parse_glm4_call(self._name, self._body, raw=f"{self._head.partition(chr(10))[0]}\n{self._body}")]
        return []


def parse_glm4_call(name: str, body: str, raw: str) -> ToolCall:
    """The call whose JSON arguments are `body`; a parse_error call when they are not a JSON object."""
    if not body.strip():
        return ToolCall(name, raw=raw, parse_error=f"The call to {name} has no arguments after its name. {FORMAT_HINT}")
    try:
        arguments = tolerant_json.load(body.strip())
    except ValueError as error:
        return ToolCall(
            name, raw=raw, parse_error=f"The arguments of {name} are not valid JSON ({error}). {FORMAT_HINT}"
        )
    if not isinstance(arguments, dict):
        return ToolCall(name, raw=raw, parse_error=f"The arguments of {name} must be a JSON object. {FORMAT_HINT}")
    return ToolCall(name, arguments, raw=raw)


def render_glm4_call(call: ToolCall) -> str:
    """The call as GLM-4 writes it."""
    return f"{call.name}\n{json.dumps(call.arguments, ensure_ascii=False)}"
