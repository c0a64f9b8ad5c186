"""Which way a chat-template model writes tool calls, and the parser, grammar and replay of each way.

- hermes: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (Qwen, Hermes; json_calls.py)
- glm45:  `<tool_call>NAME\\n<arg_key>K</arg_key>\\n<arg_value>V</arg_value>\\n</tool_call>` (GLM-4.5+; glm45_calls.py)
- glm4:   `NAME\\n{json}` on the reply's first line (GLM-4-9B-Chat, GLM-4-0414; glm4_calls.py)

The format is read off the template itself: a tiny conversation with one call is
rendered and the text shows how the template writes calls. TOOL_CALL_FORMAT
overrides it.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from glm_client.dialects.base import CallSyntax, OutputParser, ToolSchema
from glm_client.dialects.code_fences import CodeFences
from glm_client.dialects.glm4_calls import Glm4CallParser, render_glm4_call
from glm_client.dialects.glm45_calls import TAGS as GLM45_TAGS
from glm_client.dialects.glm45_calls import Glm45CallParser, render_glm45_call
from glm_client.dialects.json_calls import JsonCallParser
from glm_client.dialects.tool_prompt import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, render_call_for_history
from glm_client.messages import ToolCall

CallFormat = Literal["hermes", "glm45", "glm4"]
CALL_FORMATS: tuple[str, ...] = get_args(CallFormat)

# One call that no template writes by accident: its name and key are looked for in the render.
_PROBE_NAME, _PROBE_KEY = "probe_tool_f15", "probe_key"
_PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": _PROBE_NAME,
        "description": "probe",
        "parameters": {"type": "object", "properties": {_PROBE_KEY: {"type": "string"}}},
    },
}
_PROBE_CONVERSATION = [
    {"role": "user", "content": "hi"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": _PROBE_NAME, "arguments": {_PROBE_KEY: "v"}}}
        ],
    },
    {"role": "tool", "content": "ok", "name": _PROBE_NAME, "tool_call_id": "call_0"},
]


def detect_call_format(tokenizer: Any) -> CallFormat:
    """The format the tokenizer's chat template writes a call in; hermes when it shows none."""
    try:
        text = tokenizer.apply_chat_template(_PROBE_CONVERSATION, tools=[_PROBE_TOOL], tokenize=False)
    except Exception:  # templates raise on what they don't support (e.g. a tool role): keep today's format
        return "hermes"
    if not isinstance(text, str):
        return "hermes"
    return format_of_rendered_call(text)


def format_of_rendered_call(text: str) -> CallFormat:
    """The format of the probe call in a rendered prompt (see detect_call_format)."""
    if f"<arg_key>{_PROBE_KEY}</arg_key>" in text:
        return "glm45"
    opening = text.find(TOOL_CALL_OPEN)
    while opening >= 0:
        if text[opening + len(TOOL_CALL_OPEN) :].lstrip().startswith("{"):
            return "hermes"
        opening = text.find(TOOL_CALL_OPEN, opening + 1)
    name_line = text.find(f"{_PROBE_NAME}\n")
    if name_line >= 0 and text[name_line + len(_PROBE_NAME) + 1 :].lstrip().startswith("{"):
        return "glm4"
    return "hermes"


def call_format_parser(call_format: CallFormat, tools: list[ToolSchema] | None, interpreter: bool) -> OutputParser:
    """The streaming parser of one reply in `call_format`; with the interpreter, python fences run too."""
    if call_format == "hermes":
        return JsonCallParser(tools, interpreter=interpreter)  # reads fences itself
    parser = Glm45CallParser(tools) if call_format == "glm45" else Glm4CallParser(tools)
    return CodeFences(parser) if interpreter else parser


def call_format_syntax(call_format: CallFormat) -> CallSyntax:
    """How a forced call is written in `call_format` (constrained.py builds its grammar)."""
    if call_format == "hermes":
        return CallSyntax(f"{TOOL_CALL_OPEN}\n", f"\n{TOOL_CALL_CLOSE}")
    return CallSyntax(style=call_format)


def render_call(call_format: CallFormat, call: ToolCall) -> str:
    """A call in `call_format`'s own spelling, for replay as text: the model's raw text when it has one."""
    if call.raw is not None or call_format == "hermes":
        return render_call_for_history(call)
    return render_glm45_call(call) if call_format == "glm45" else render_glm4_call(call)


def tag_tokens(call_format: CallFormat) -> tuple[str, ...]:
    """The tags a format's calls are written with (kept when decoding, even if they are special tokens)."""
    if call_format == "glm45":
        return GLM45_TAGS
    if call_format == "hermes":
        return (TOOL_CALL_OPEN, TOOL_CALL_CLOSE)
    return ()


def decode_keeping(tokenizer: Any, ids: list[int], kept: dict[int, str]) -> str:
    """`ids` as text without special tokens, except the `kept` ones (id -> text), which stay in place."""
    if not any(token_id in kept for token_id in ids):
        return str(tokenizer.decode(ids, skip_special_tokens=True))
    parts: list[str] = []
    run: list[int] = []
    for token_id in [*ids, None]:
        if token_id is None or token_id in kept:
            parts.append(tokenizer.decode(run, skip_special_tokens=True) if run else "")
            parts.append(kept[token_id] if token_id is not None else "")
            run = []
        else:
            run.append(token_id)
    return "".join(parts)


def special_tag_ids(tokenizer: Any, call_format: CallFormat) -> dict[int, str]:
    """The format's tags that this tokenizer has as special tokens (skip_special_tokens would drop them)."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    special |= {token_id for token_id, token in added.items() if getattr(token, "special", False)}
    lookup = getattr(tokenizer, "convert_tokens_to_ids", None)
    if not special or lookup is None:
        return {}
    kept = {}
    for tag in tag_tokens(call_format):
        token_id = lookup(tag)
        if isinstance(token_id, int) and token_id in special and token_id != tokenizer.unk_token_id:
            kept[token_id] = tag
    return kept
