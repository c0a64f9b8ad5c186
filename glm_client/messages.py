"""The one conversation data model shared by every dialect, backend, page and store.

A conversation is a list of `Message`. Roles follow ChatGLM3 (system, user,
assistant, observation); an assistant turn may carry `ToolCall`s and an
observation answers one call. Everything here is plain data: it serialises to
JSON (`to_dict`/`from_dict`) and to the OpenAI chat format (`to_openai`).
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "observation"]
ROLES: tuple[str, ...] = ("system", "user", "assistant", "observation")

# The canonical name of a code-interpreter call, whatever the model wrote
# (ChatGLM3 metadata `interpreter`, an OpenAI tool named `python`, a fenced block).
INTERPRETER = "interpreter"
IMAGE_PLACEHOLDER = "[Image]"


def _new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:16]


@dataclass
class ToolCall:
    """A request from the model to run a tool (or, with name INTERPRETER, code).

    `raw` keeps the exact text the model wrote for the call, so the dialect that
    produced it can replay history token for token. `parse_error` is set when the
    model tried to call but wrote something unparseable; the agent turns it into
    an observation the model can correct.
    """

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=_new_call_id)
    raw: str | None = None
    parse_error: str | None = None

    @property
    def is_interpreter(self) -> bool:
        return self.name == INTERPRETER

    @property
    def code(self) -> str:
        """The code of an interpreter call ('' for other tools)."""
        return str(self.arguments.get("code", "")) if self.is_interpreter else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "arguments": self.arguments,
            "raw": self.raw,
            "parse_error": self.parse_error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolCall:
        return cls(
            name=data["name"],
            arguments=dict(data.get("arguments") or {}),
            id=data.get("id") or _new_call_id(),
            raw=data.get("raw"),
            parse_error=data.get("parse_error"),
        )


@dataclass
class Message:
    """One turn of a conversation.

    - assistant: `content` is the prose, `tool_calls` the calls it made.
    - observation: `content` is the result text the model reads, `name` the tool
      it answers, `images` PNG bytes shown to the user (the model sees `[Image]`),
      `is_error` marks a failed call.
    - `reasoning` is what a thinking model thought before its reply (shown apart, replayed
      as `reasoning_content` for the template to keep or drop).
    - `meta` holds facts for the UI and the store (timings, `interrupted`, ...);
      dialects never read it.
    """

    role: Role
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    name: str | None = None
    tool_call_id: str | None = None
    images: list[bytes] = field(default_factory=list)
    is_error: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    reasoning: str = ""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"Unknown message role {self.role!r}; expected one of {', '.join(ROLES)}.")

    # --- constructors -------------------------------------------------------------
    @classmethod
    def system(cls, content: str) -> Message:
        return cls("system", content)

    @classmethod
    def user(cls, content: str) -> Message:
        return cls("user", content)

    @classmethod
    def assistant(cls, content: str = "", tool_calls: list[ToolCall] | None = None) -> Message:
        return cls("assistant", content, tool_calls=list(tool_calls or []))

    @classmethod
    def observation(
        cls,
        content: str,
        *,
        name: str | None = None,
        tool_call_id: str | None = None,
        images: list[bytes] | None = None,
        is_error: bool = False,
    ) -> Message:
        return cls(
            "observation",
            content,
            name=name,
            tool_call_id=tool_call_id,
            images=list(images or []),
            is_error=is_error,
        )

    # --- serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (images as base64) for the store and exports."""
        return {
            "role": self.role,
            "content": self.content,
            "tool_calls": [call.to_dict() for call in self.tool_calls],
            "name": self.name,
            "tool_call_id": self.tool_call_id,
            "images": [base64.b64encode(image).decode("ascii") for image in self.images],
            "is_error": self.is_error,
            "meta": self.meta,
            "reasoning": self.reasoning,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Message:
        return cls(
            role=data["role"],
            content=data.get("content") or "",
            tool_calls=[ToolCall.from_dict(call) for call in data.get("tool_calls") or []],
            name=data.get("name"),
            tool_call_id=data.get("tool_call_id"),
            images=[base64.b64decode(image) for image in data.get("images") or []],
            is_error=bool(data.get("is_error", False)),
            meta=dict(data.get("meta") or {}),
            reasoning=data.get("reasoning") or "",
        )

    def to_openai(self) -> dict[str, Any]:
        """This message in the OpenAI chat-completions format (observations become `tool`)."""
        if self.role == "observation":
            out: dict[str, Any] = {"role": "tool", "content": self.model_text()}
            if self.tool_call_id:
                out["tool_call_id"] = self.tool_call_id
            if self.name:
                out["name"] = self.name
            return out
        out = {"role": self.role, "content": self.content}
        if self.reasoning:  # the name vLLM, SGLang and chat templates read
            out["reasoning_content"] = self.reasoning
        if self.tool_calls:
            out["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
                }
                for call in self.tool_calls
            ]
        return out

    @classmethod
    def from_openai(cls, data: dict[str, Any]) -> Message:
        """Parse one OpenAI-format message; raises ValueError with a readable sentence."""
        role = data.get("role")
        if role == "tool" or role == "function":
            return cls.observation(
                _openai_text(data.get("content")), name=data.get("name"), tool_call_id=data.get("tool_call_id")
            )
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"Unknown message role {role!r}; expected system, user, assistant or tool.")
        calls = []
        for raw_call in data.get("tool_calls") or []:
            function = raw_call.get("function") or {}
            arguments = function.get("arguments") or "{}"
            try:
                parsed = json.loads(arguments) if isinstance(arguments, str) else dict(arguments)
            except json.JSONDecodeError as error:
                raise ValueError(f"Tool call arguments are not valid JSON: {error}") from None
            calls.append(
                ToolCall(name=function.get("name", ""), arguments=parsed, id=raw_call.get("id") or _new_call_id())
            )
        # Servers of either age name it differently (vLLM now `reasoning`, before `reasoning_content`).
        reasoning = data.get("reasoning_content") or data.get("reasoning") or ""
        if not isinstance(reasoning, str):
            raise ValueError("A message's reasoning_content must be a string.")
        return cls(role, _openai_text(data.get("content")), tool_calls=calls, reasoning=reasoning)

    # --- views ------------------------------------------------------------------------
    def model_text(self) -> str:
        """What the model reads for this message: images become the `[Image]` placeholder.

        Content that already places its placeholders (a cell's outputs in order) is kept as is.
        """
        missing = len(self.images) - self.content.count(IMAGE_PLACEHOLDER)
        if self.role == "observation" and missing > 0:
            placeholders = "\n".join(IMAGE_PLACEHOLDER for _ in range(missing))
            return f"{self.content}\n{placeholders}" if self.content else placeholders
        return self.content


def _openai_text(content: Any) -> str:
    """OpenAI content may be a string or a list of parts; keep the text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    raise ValueError("Message content must be a string or a list of content parts.")
