"""What a dialect is: the prompt layout of one model family and the parser of its output.

A dialect turns a conversation into input ids and turns the model's streamed text
back into events (TextDelta, ToolCallStart, ToolCall). It owns no tokens of its
own beyond what the tokenizer defines, and knows nothing of devices or speed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from glm_client.events import Event
from glm_client.messages import Message

ToolSchema = dict[str, Any]  # OpenAI style: {"type": "function", "function": {name, description, parameters}}


class OutputParser(Protocol):
    """Incremental parser of one reply. `feed` gets decoded text as it arrives."""

    def feed(self, text: str) -> list[Event]: ...

    def finish(self) -> list[Event]:
        """Flush what is held back; turn any unfinished call into a parse error."""
        ...

    @property
    def ended(self) -> bool:
        """The reply is over: the parser drops whatever comes next, so generation can stop here."""
        ...


class Dialect(Protocol):
    name: str

    def encode(self, messages: list[Message], tools: list[ToolSchema] | None = None) -> list[int]:
        """Input ids for the conversation, ending where the assistant's reply begins."""
        ...

    def stop_token_ids(self) -> list[int]:
        """Ids that end generation (never part of the reply)."""
        ...

    def decode(self, ids: list[int]) -> str:
        """Text of reply ids, in the form the parser expects."""
        ...

    def prompt_text(self, ids: list[int]) -> str:
        """Prompt ids as text with every special token spelled out (the prompt inspector)."""
        ...

    def new_parser(self, tools: list[ToolSchema] | None = None) -> OutputParser: ...

    def call_syntax(self) -> CallSyntax | None:
        """How a forced tool call is written, or None when this dialect can't force one."""
        ...


@dataclass(frozen=True)
class CallSyntax:
    """The text of one tool call, for forcing it by constrained decoding.

    `style` "json": a JSON `{"name": ..., "arguments": {...}}` object between `open`
    and `close`. With `code_fence`, the interpreter is called by a ```python fence
    instead (the way templates without tool support call it), so the parser reads it
    back. Other styles are whole formats with grammars of their own: "chatglm3"
    (metadata line + `tool_call(...)`), "glm45" (`<arg_key>`/`<arg_value>` pairs) and
    "glm4" (the name on a line, then the JSON arguments).
    """

    open: str = "<tool_call>"
    close: str = "</tool_call>"
    code_fence: bool = False
    style: Literal["json", "chatglm3", "glm45", "glm4"] = "json"


def function_of(tool: ToolSchema) -> dict[str, Any]:
    """The {name, description, parameters} part of an OpenAI-style tool schema."""
    return tool.get("function", tool)


# Offered as a tool by the Code Interpreter page; each dialect presents it in its
# model's own way (ChatGLM3: the `interpreter` role metadata; templates without
# tool support: fenced python blocks).
INTERPRETER_TOOL: ToolSchema = {
    "type": "function",
    "function": {
        "name": "interpreter",
        "description": "Run Python code in a Jupyter kernel and return its outputs (text, tables, plots).",
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "The Python code to run."}},
            "required": ["code"],
        },
    },
}


def split_interpreter(tools: list[ToolSchema] | None) -> tuple[list[ToolSchema], bool]:
    """The ordinary tools, and whether the interpreter is offered among them."""
    ordinary = [tool for tool in tools or [] if function_of(tool).get("name") != "interpreter"]
    return ordinary, len(ordinary) != len(tools or [])
