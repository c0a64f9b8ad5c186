"""Read the tool calls that chat-template models write as JSON in their streamed reply.

Recognised, in any chunking of the text:

- `<tool_call>{"name": "f", "arguments": {...}}</tool_call>` blocks (Qwen, Hermes), any
  number, with prose around them; a block may hold a JSON list of calls (SmolLM2);
- a bare call as the whole reply, `{"name": ..., "arguments"|"parameters": {...}}`, a
  list of them or several one per line, perhaps in a ```json fence (Llama 3) - only when
  tools were offered; a made-up result after the calls is dropped;
- inside any of these, JSON as small models write it (single quotes, trailing commas,
  comments, Python triple-quoted strings and literals: tolerant_json.py), never guessed;
- in interpreter mode, a ```python fence: its code becomes an INTERPRETER call and the
  reply ends there, since the model must wait for the result.

Prose streams as it arrives; only what may still become a call is held back.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from glm_client.dialects import tolerant_json
from glm_client.dialects.base import ToolSchema
from glm_client.dialects.tool_prompt import (
    CALL_FORMAT,
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    render_call_for_history,
    render_observation_for_history,
    template_supports_tools,
    tools_system_prompt,
)
from glm_client.events import Event, TextDelta, ToolCallStart
from glm_client.messages import INTERPRETER, ToolCall

__all__ = [
    "JsonCallParser",
    "parse_bare_calls",
    "parse_call_block",
    "render_call_for_history",
    "render_observation_for_history",
    "template_supports_tools",
    "tools_system_prompt",
]

# Names a model may give the code tool; in interpreter mode they all mean INTERPRETER.
INTERPRETER_ALIASES = frozenset({INTERPRETER, "python", "code_interpreter", "ipython"})
FORMAT_HINT = f"Write it as {CALL_FORMAT}."

_NAME = re.compile(r'"name"\s*:\s*"([^"]*)"')
_PYTHON_FENCE = re.compile(r"```(?:python3?|py)[ \t]*\r?\n")
# What the start of a python fence looks like before its newline has arrived.
_PYTHON_FENCE_PREFIX = re.compile(r"`{1,3}|```p(?:y(?:t(?:h(?:o(?:n3?)?)?)?)?)?[ \t]*\r?")
_FENCE_CLOSE = "```"
_JSON_FENCE = re.compile(r"```json[ \t]*\n?(.*?)(?:```)?", re.DOTALL)
_BARE_STARTS = ("{", "[", "```json")

Mode = Literal["start", "bare", "text", "call", "code", "done"]


class JsonCallParser:
    """OutputParser for JSON tool calls (see the module docstring).

    Every call block yields one ToolCallStart - as soon as its name is readable -
    then its ToolCall(s). A block holding a list gives one call per item; the first
    carries the block's `raw` text and the others `raw=""`, so replaying the raws
    reproduces the reply exactly once.
    """

    def __init__(self, tools: list[ToolSchema] | None = None, interpreter: bool = False) -> None:
        self._interpreter = interpreter
        self._bare_allowed = bool(tools)
        # Without tools or interpreter there is nothing to find: text passes through untouched.
        self._passthrough = not tools and not interpreter
        self._mode: Mode = "start" if self._bare_allowed else "text"
        self._pending = ""  # received text not yet turned into events
        self._held_space = ""  # trailing whitespace of the prose, dropped if the reply ends in a call
        self._after_block = False  # a call block just closed: drop the whitespace that follows
        self._announced = False  # ToolCallStart sent for the open block
        self._fence = ""  # the opening line of the open python fence

    # --- OutputParser ---------------------------------------------------------------
    @property
    def ended(self) -> bool:
        """After a python fence closes: the model must wait for its result."""
        return self._mode == "done"

    def feed(self, text: str) -> list[Event]:
        if self._passthrough:
            return [TextDelta(text)] if text else []
        self._pending += text
        return self._advance()

    def finish(self) -> list[Event]:
        if self._passthrough:
            return []
        events: list[Event] = []
        if self._mode == "start":  # only whitespace or the start of a fence came
            self._mode = "text"
        if self._mode == "bare":
            calls = parse_bare_calls(self._pending, self._interpreter)
            if calls:
                self._pending, self._mode = "", "done"
                return [ToolCallStart(calls[0].name), *calls]
            self._mode = "text"  # not a call after all: read it as prose (it may hold tags)
            events += self._advance()
        if self._mode == "text":
            events += self._prose(self._pending)
            if self._held_space and not self._after_block:
                events.append(TextDelta(self._held_space))
        elif self._mode == "call":
            events += self._close_block(self._pending, closed=False)
        elif self._mode == "code":
            events.append(self._code_call(self._pending, closed=False))
        self._pending, self._held_space, self._mode = "", "", "done"
        return events

    # --- the state machine ------------------------------------------------------------
    def _advance(self) -> list[Event]:
        """Turn as much pending text into events as can be decided now."""
        events: list[Event] = []
        steps = {
            "start": self._step_start,
            "bare": lambda _events: False,  # a bare call is judged whole, at finish
            "text": self._step_text,
            "call": self._step_call,
            "code": self._step_code,
            "done": self._step_done,
        }
        while steps[self._mode](events):
            pass
        return events

    def _step_start(self, events: list[Event]) -> bool:
        head = self._pending.lstrip()
        if head.startswith(_BARE_STARTS):
            self._mode = "bare"
        elif not head or "```json".startswith(head):
            return False  # too early to tell prose from a bare call
        else:
            self._mode = "text"
        return True

    def _step_text(self, events: list[Event]) -> bool:
        found = self._find_opening()
        if found is None:
            cut = self._hold_from()
            events += self._prose(self._pending[:cut])
            self._pending = self._pending[cut:]
            return False
        start, opening = found
        # Whitespace before the block stays held: it is kept only if prose follows the block.
        events += self._prose(self._pending[:start])
        self._pending = self._pending[start + len(opening) :]
        self._announced = False
        if opening == TOOL_CALL_OPEN:
            self._mode = "call"
        else:
            # The reply ends with the code, so the whitespace the model wrote before its fence
            # belongs to the call: the history then replays the reply as written, and the next
            # round's prompt matches the cached tokens up to the code's end.
            self._mode, self._fence = "code", self._held_space + opening
            self._held_space = ""
            events.append(ToolCallStart(INTERPRETER))
            self._announced = True
        return True

    def _step_call(self, events: list[Event]) -> bool:
        end = self._pending.find(TOOL_CALL_CLOSE)
        content = self._pending if end < 0 else self._pending[:end]
        if not self._announced and (match := _NAME.search(content)):
            events.append(ToolCallStart(_canonical_name(match.group(1).strip(), self._interpreter)))
            self._announced = True
        if end < 0:
            return False
        events += self._close_block(content, closed=True)
        self._pending = self._pending[end + len(TOOL_CALL_CLOSE) :]
        self._mode, self._after_block = "text", True
        return True

    def _step_code(self, events: list[Event]) -> bool:
        end = self._pending.find(_FENCE_CLOSE)
        if end < 0:
            return False
        events.append(self._code_call(self._pending[:end], closed=True))
        self._mode = "done"
        return True

    def _step_done(self, events: list[Event]) -> bool:
        self._pending = ""  # after the code block the model waits for its result (LocalClient stops it here)
        return False

    # --- helpers ----------------------------------------------------------------------
    def _find_opening(self) -> tuple[int, str] | None:
        """Where the first call block or python fence opens in the pending text, and its opening."""
        found: list[tuple[int, str]] = []
        if (tag := self._pending.find(TOOL_CALL_OPEN)) >= 0:
            found.append((tag, TOOL_CALL_OPEN))
        if self._interpreter and (fence := _PYTHON_FENCE.search(self._pending)):
            found.append((fence.start(), fence.group()))
        return min(found) if found else None

    def _hold_from(self) -> int:
        """Where the tail that may still grow into a `<tool_call>` or a python fence begins."""
        text = self._pending
        candidates = [text.rfind("<")]
        if self._interpreter and (tick := text.rfind("`")) >= 0:
            candidates += [tick - 2, tick - 1, tick]
        holdable = [i for i in candidates if i >= 0 and self._may_open(text[i:])]
        return min(holdable, default=len(text))

    def _may_open(self, tail: str) -> bool:
        if TOOL_CALL_OPEN.startswith(tail):
            return True
        return self._interpreter and _PYTHON_FENCE_PREFIX.fullmatch(tail) is not None

    def _prose(self, text: str) -> list[Event]:
        """Prose as a TextDelta; trailing whitespace waits for more prose, so a reply that ends in a call has none."""
        if self._after_block:
            text = text.lstrip()
            if not text:
                return []
            self._after_block = False
        text = self._held_space + text
        body = text.rstrip()
        self._held_space = text[len(body) :]
        return [TextDelta(body)] if body else []

    def _close_block(self, content: str, closed: bool) -> list[Event]:
        raw = TOOL_CALL_OPEN + content + (TOOL_CALL_CLOSE if closed else "")
        calls = parse_call_block(content, raw, closed=closed, interpreter=self._interpreter)
        start: list[Event] = [] if self._announced or not calls else [ToolCallStart(calls[0].name)]
        self._announced = True
        return [*start, *calls]

    def _code_call(self, code: str, closed: bool) -> ToolCall:
        # An unclosed fence is run as written: the reply ended, so the model wants the result.
        raw = self._fence + code + (_FENCE_CLOSE if closed else "")
        if not closed:
            code = code.rstrip().rstrip("`")  # the start of a closing fence is not code
        return ToolCall(INTERPRETER, {"code": code.rstrip()}, raw=raw)


# --- parsing whole blocks ---------------------------------------------------------------
def parse_call_block(content: str, raw: str, *, closed: bool = True, interpreter: bool = False) -> list[ToolCall]:
    """The calls in the text between `<tool_call>` and `</tool_call>` (a parse_error call if malformed).

    An empty list means "no call" (SmolLM2 is trained to write `<tool_call>[]</tool_call>`).
    """
    body = _unfence(content)
    if not body:
        return [_error_call("", raw, f"The tool call is empty. {FORMAT_HINT}")]
    values = tolerant_json.load_several(body)
    if values is None:
        problem = "is not valid JSON" if closed else "was cut off before </tool_call>"
        message = f"The tool call {problem}: {_json_problem(body)}. {FORMAT_HINT}"
        return [_error_call(_guess_name(content, interpreter), raw, message)]
    return _calls_from_items(_flatten(values), raw, interpreter)


def parse_bare_calls(text: str, interpreter: bool = False) -> list[ToolCall] | None:
    """The calls when the whole reply is a bare JSON call (or list of calls), else None.

    Only a JSON object with a string "name" and an "arguments" or "parameters" key
    counts, so a reply that merely answers in JSON stays prose.
    """
    raw = text.strip()
    values = tolerant_json.load_several(_unfence(raw))
    items = _flatten(values or [])
    # A call followed by a result the model made up ({"response": "42.0"}): the result is not shown.
    while len(items) > 1 and _looks_like_call(items[0]) and not _looks_like_call(items[-1]):
        items.pop()
    if not items or not all(_looks_like_call(item) for item in items):
        return None
    return _calls_from_items(items, raw, interpreter)


def _flatten(values: list[Any]) -> list[Any]:
    """Calls written one after another, each perhaps a list of calls, as one list."""
    return [item for value in values for item in (value if isinstance(value, list) else [value])]


def _json_problem(text: str) -> str:
    """What is wrong with `text` as JSON, in words."""
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        return _describe(error)
    return "it holds several values that are not all calls"


def _calls_from_items(items: list[Any], raw: str, interpreter: bool) -> list[ToolCall]:
    calls = [_call_from_item(item, interpreter) for item in items]
    for index, call in enumerate(calls):
        call.raw = raw if index == 0 else ""  # the block is replayed once, with the first call
    return calls


def _call_from_item(item: Any, interpreter: bool) -> ToolCall:
    if not isinstance(item, dict):
        return _error_call("", None, f"A tool call must be a JSON object, not {_json_kind(item)}. {FORMAT_HINT}")
    item = _unwrap(item)
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        return _error_call("", None, f'The tool call has no "name". {FORMAT_HINT}')
    name = _canonical_name(name.strip(), interpreter)
    arguments = item.get("arguments", item.get("parameters"))
    if isinstance(arguments, str):  # OpenAI style: the arguments object encoded as a string
        try:
            arguments = tolerant_json.load(arguments) if arguments.strip() else {}
        except ValueError:
            problem = _json_problem(arguments)
            message = f"The arguments of the call to {name!r} are not valid JSON: {problem}. {FORMAT_HINT}"
            return _error_call(name, None, message)
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        message = f"The arguments of the call to {name!r} must be a JSON object, not {_json_kind(arguments)}."
        return _error_call(name, None, f"{message} {FORMAT_HINT}")
    return ToolCall(name, arguments)


def _looks_like_call(item: Any) -> bool:
    if not isinstance(item, dict):
        return False
    item = _unwrap(item)
    return isinstance(item.get("name"), str) and ("arguments" in item or "parameters" in item)


def _unwrap(item: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's {"type": "function", "function": {...}} wrapper, taken off."""
    function = item.get("function")
    return function if isinstance(function, dict) and "name" in function else item


def _unfence(text: str) -> str:
    """The JSON inside a ```json fence, or the text itself."""
    text = text.strip()
    match = _JSON_FENCE.fullmatch(text)
    return match.group(1).strip() if match else text


def _canonical_name(name: str, interpreter: bool) -> str:
    return INTERPRETER if interpreter and name in INTERPRETER_ALIASES else name


def _guess_name(text: str, interpreter: bool) -> str:
    match = _NAME.search(text)
    return _canonical_name(match.group(1).strip(), interpreter) if match else ""


def _error_call(name: str, raw: str | None, message: str) -> ToolCall:
    return ToolCall(name, raw=raw, parse_error=message)


def _describe(error: json.JSONDecodeError) -> str:
    # Some messages end in " at" ("Unterminated string starting at").
    return f"{error.msg.removesuffix(' at')} at line {error.lineno} column {error.colno}"


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    kinds = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number"}
    return kinds.get(type(value), "null")
